"""User-facing errors.

Every problem a user can cause (bad config, unknown model, torn artifact, ...)
is raised as :class:`SaematchError`.  The CLI turns it into one readable line
and a non-zero exit code; it never shows a traceback for these.
"""


class SaematchError(Exception):
    """A problem with the user's input or artifacts, with a readable message."""


class ConfigError(SaematchError):
    """A config key is unknown, missing, or has a value of the wrong type."""


class ArtifactError(SaematchError):
    """An artifact on disk is missing, torn, or was written by another config."""
