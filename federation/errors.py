"""Errors every party shares.

A ``FieldError`` names the field at fault and says what was expected and what came; a
``ValidationError`` carries every field error found in one input, so a caller can report them
all at once (an HTTP problem document, an import rejects file, a command-line message).
"""

from __future__ import annotations

from collections.abc import Iterable


class SignpostError(Exception):
    """Base class for every error raised by Signpost's own code."""


class FieldError(SignpostError):
    """One field of an input is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ValidationError(SignpostError):
    """An input has one or more field errors."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        if not self.errors:
            raise ValueError("ValidationError needs at least one FieldError")
        super().__init__("; ".join(str(e) for e in self.errors))


class ConfigError(SignpostError):
    """A configuration file or option is missing or wrong."""
