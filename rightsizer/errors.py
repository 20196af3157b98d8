"""Error types shared by every part of the library.

Two families: ``ConfigError`` (the user's input is wrong: fix it) and ``NoFeasibleOption``
(an *expected* outcome: nothing meets the constraints; the message says what would).
Bugs are neither and propagate as they are.
"""

from __future__ import annotations


class RightsizerError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(RightsizerError, ValueError):
    """Bad user input. Carries every problem found, so that one run reports them all."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class NoFeasibleOption(RightsizerError):
    """Expected outcome: no option meets the constraints. The message says what would."""


class InsufficientMemory(NoFeasibleOption):
    """Expected outcome: the model does not fit on any allowed device configuration."""
