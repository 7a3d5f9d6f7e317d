"""Errors the application reports to users as one clear line (no traceback)."""


class CysegError(Exception):
    """A problem with the user's input or environment, worded for the user."""
