"""Exceptions for mistakes a user can fix: the CLI prints their message on one line and exits with 2."""


class UserInputError(ValueError):
    """A bad value, file or shape given by the user. Its message is one line: line breaks that come with a value
    (a file name, a config string) are shown as \\n and \\r."""

    def __str__(self) -> str:
        return super().__str__().replace("\n", "\\n").replace("\r", "\\r")


class ConfigError(UserInputError):
    """A configuration value that is out of range, of the wrong type or unknown."""


class CheckpointError(UserInputError):
    """A checkpoint that is missing, corrupt, foreign or does not match the configuration."""


class DataError(UserInputError):
    """A dataset that is missing, empty or unreadable."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): for one-line errors about
    files that a library (PIL, numpy, torch) failed to read."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
