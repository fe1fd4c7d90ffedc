"""The simulated environment: the tool pool and the four simulator roles (task generator,
user simulator, tool simulator, verifier), each a prompt + JSON schema + parser."""
