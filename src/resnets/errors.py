"""Errors that a user can act on: each message says what was wrong and what to do."""


class ResnetsError(Exception):
    """Base class; the command line prints these as `error: …` and exits with status 2."""


class DataError(ResnetsError, ValueError):
    """A dataset is missing, malformed or cannot be decoded."""


class ConfigError(ResnetsError, ValueError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(ResnetsError):
    """A weights or checkpoint file is missing, unsafe or broken."""
