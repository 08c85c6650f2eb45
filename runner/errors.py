"""Errors a person can act on: printed as one line, never as a traceback."""


class ConfigError(Exception):
    """A configuration mistake (missing variable, unreachable database, missing token)."""
