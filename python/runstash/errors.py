"""The exception hierarchy of runstash.

Every error runstash raises on purpose is a :class:`RunstashError`. The subclasses also derive
from the matching built-in exception, so code written against plain files keeps working:
a missing blob or file is a :class:`NotFoundError`, which is also a ``FileNotFoundError``; bad
input is an :class:`InvalidArgumentError`, which is also a ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CorruptError",
    "IncompatibleStoreError",
    "InvalidArgumentError",
    "NotFoundError",
    "RunstashError",
    "StoreIOError",
]


class RunstashError(Exception):
    """Base class of every error runstash raises on purpose."""


class NotFoundError(RunstashError, FileNotFoundError):
    """A blob, file or record that was asked for does not exist."""


class AlreadyExistsError(RunstashError, FileExistsError):
    """Something that must be new already exists."""


class InvalidArgumentError(RunstashError, ValueError):
    """An argument is unusable: a bad path, name, option or value. Nothing was written."""


class CorruptError(RunstashError):
    """Stored bytes do not match their recorded hash, or a store file cannot be parsed."""


class IncompatibleStoreError(RunstashError):
    """The store was made by a newer runstash, or with another hash algorithm than asked for."""


class StoreIOError(RunstashError, OSError):
    """The operating system refused an operation (disk full, permission denied, ...).

    ``errno`` and ``filename`` carry the OS error and the path concerned.
    """
