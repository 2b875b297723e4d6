"""Errors that a user can act on: each message says what was wrong and what to do."""


class ResnetsError(Exception):
    """Base class; the command line prints these as `error: …` and exits with status 2."""


class UnknownModelError(ResnetsError, KeyError):
    """No model is registered under the name (the message lists the closest names)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DataError(ResnetsError, ValueError):
    """A dataset is missing, malformed or cannot be decoded."""


class ConfigError(ResnetsError, ValueError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(ResnetsError):
    """A weights or checkpoint file is missing, unsafe or broken."""


class TrainingDiverged(ResnetsError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(ResnetsError):
    """The run was stopped (Ctrl-C or a requested stop) after saving a checkpoint; the command line
    prints it as `interrupted: …` and exits with 130, as a shell does for SIGINT."""


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control and format characters (escape sequences that set
    the title or clear the screen, bidi overrides) shown as \\x1b-style escapes; newlines and tabs kept."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii") for c in text
    )
