"""User-facing error types.

Every error a user can cause (a bad file, a bad config, an incompatible bundle) is raised as one of
these, with a one-sentence message that names the file and the problem. The CLI and the API catch
:class:`TerrasegError` once, at their edge, and print the message (or answer 4xx) instead of a
traceback.
"""

from __future__ import annotations


class TerrasegError(Exception):
    """Base class of all errors caused by user input; its message is shown to the user as is."""


class InputFileError(TerrasegError):
    """A raster, vector, image or mask file is missing, unreadable, corrupt or inconsistent."""


class ConfigError(TerrasegError):
    """A configuration file or override is invalid (unknown field, wrong type, bad value)."""


class BundleError(TerrasegError):
    """A model bundle is missing, corrupt, or incompatible with the input it is given."""


class OutputError(TerrasegError):
    """An output cannot be written: the folder is not writable, a file is in the way, the disk is full."""
