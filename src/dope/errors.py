"""Errors meant for the person at the terminal: printed as one clear line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad file, bad config, unknown symbol); the message says what."""


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message names the file and the field."""
