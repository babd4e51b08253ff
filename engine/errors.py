"""The one error type users see: a message, a hint and where it happened (file, key or image).

Every failure that is the user's to fix (a bad config value, a missing model, an unreadable image) is
raised as `LoratuiError`, so that the CLI, the engine's `run_finished` event and the TUI can all show
the same three parts instead of a traceback.
"""

from __future__ import annotations


class LoratuiError(Exception):
    """An error with a message, a hint on how to fix it, and where it happened."""

    def __init__(self, message: str, hint: str = "", where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def to_dict(self) -> dict[str, str]:
        return {"message": self.message, "hint": self.hint, "where": self.where}

    def render(self) -> str:
        """Human text for a terminal: the message, then where and hint on their own lines."""
        lines = [f"error: {self.message}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()
