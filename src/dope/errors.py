"""Errors meant for the person at the terminal: printed as one clear line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad file, bad config, unknown symbol); the message says what."""
