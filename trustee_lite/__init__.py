"""trustee_lite: TRUSTEE (tool learning in environments fully simulated by one free language model)
as a small single-machine asyncio engine. Importing it loads no model and no GPU package."""

__version__ = "0.1.0"
