"""The exception type for user errors: a line naming the place (one line per problem when
several are found at once), exit status 2 at the CLI."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (recipe, tool file, server address, ...).

    ``str(err)`` is the whole message: one line that starts with the place
    (``recipe.yaml: simulator.max_new_tokens: must be > 0, got -5``).
    """

    def __init__(self, place: str, message: str):
        self.place = one_line(place)
        self.message = one_line(message)
        super().__init__(f"{self.place}: {self.message}")


class UserErrors(UserError):
    """Several problems found at once (a recipe with several mistakes): one line each."""

    def __init__(self, lines: list[str]):
        self.lines = [one_line(line) for line in lines]
        self.place, _, self.message = self.lines[0].partition(": ")
        Exception.__init__(self, "\n".join(self.lines))


def one_line(text: str) -> str:
    """What the user wrote may hold line breaks (a key, a value quoted back): shown escaped, so
    that a problem stays one line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")
