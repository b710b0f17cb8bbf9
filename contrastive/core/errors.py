"""Exceptions for bad user input.

Everything a user can get wrong (a config value, a dataset path, a checkpoint) is
reported with a subclass of :class:`ContrastiveError`. The command-line entry
points print these as one ``error: ...`` line, without a traceback, before any
training starts.
"""


class ContrastiveError(ValueError):
    """Base class for errors caused by user input."""


class ConfigError(ContrastiveError):
    """An invalid, unknown or inconsistent configuration value."""


class DatasetError(ContrastiveError):
    """A dataset that is missing, empty or holds unreadable files."""


class CheckpointError(ContrastiveError):
    """A checkpoint that is missing, corrupt or does not fit the requested run."""
