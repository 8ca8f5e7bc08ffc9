"""The sync :class:`Store`: the fast path for hot loops, thin over the Rust engine.

Every method releases the GIL for its file work and hashing. Writes are atomic (bytes reach
their final name only when complete) and, with ``durability="fsync"`` (the default), survive a
power cut once the call returns.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from . import _core
from ._core import Blob

__all__ = ["Blob", "BlobWriter", "Store", "VerifyReport", "DEFAULT_ROOT"]

#: Where the embedded default store lives, relative to the working directory.
DEFAULT_ROOT = ".runstash"

PathArg = str | os.PathLike[str]
BlobRef = str | Blob

_WRITE_BUFFER = 256 * 1024


def _ref(r: BlobRef) -> str:
    if isinstance(r, Blob):
        return r.hash
    if isinstance(r, str):
        return r
    raise TypeError(f"expected a digest string, a blob URI or a Blob, not {type(r).__name__}")


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Store.verify` found when checking every blob."""

    checked: int
    corrupt: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every blob hashed to its name and nothing stray was found."""
        return not self.corrupt and not self.stray


class _RawBlobWriter(io.RawIOBase):
    """Adapts the engine's writer to Python's raw I/O protocol (no ``fileno``: bytes must pass
    through the hasher, so libraries that look for a descriptor fall back to ``write``)."""

    def __init__(self, core: _core.CoreWriter) -> None:
        super().__init__()
        self._core = core

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._core.write(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._core.seek(offset, whence)

    def tell(self) -> int:
        return self._core.tell()


class BlobWriter(io.BufferedWriter):
    """The binary file object that :meth:`Store.writer` yields.

    Write to it as to any file opened ``"wb"`` (PIL, numpy, polars and ``io.TextIOWrapper``
    accept it); seeking works. The blob is published when the ``with`` block ends normally,
    and is then available as :attr:`blob`. Closing it early (as a text wrapper does) only
    flushes; the ``with`` block still decides between commit and abort.
    """

    def __init__(self, core: _core.CoreWriter) -> None:
        super().__init__(_RawBlobWriter(core), buffer_size=_WRITE_BUFFER)
        self._core = core
        self._finished = False
        self.blob: Blob | None = None

    def close(self) -> None:
        if self._finished:
            super().close()
        elif not self.closed:
            self.flush()

    def _commit(self) -> Blob:
        self.flush()
        self.blob = self._core.commit()
        self._finished = True
        super().close()
        return self.blob

    def _abort(self) -> None:
        self._finished = True
        self._core.abort()
        try:
            super().close()
        except (OSError, ValueError):
            pass  # unflushed bytes of an aborted write have nowhere to go


class Store:
    """An artifact store rooted at a local directory.

    ``Store(root)`` creates the store when ``root`` does not exist or is empty, and otherwise
    opens it. ``hash`` picks the content hash of a new store (``"blake3"``, the default, or
    ``"sha256"``); for an existing store it must match or be ``None``. ``durability`` is
    ``"fsync"`` (an acknowledged write survives a power cut) or ``"os"`` (atomic and safe
    against process crashes, but not fsynced).
    """

    def __init__(
        self,
        root: PathArg = DEFAULT_ROOT,
        *,
        hash: str | None = None,
        durability: str = "fsync",
    ) -> None:
        self._core = _core.CoreStore(root, hash, durability)

    def __repr__(self) -> str:
        return f"Store({self.root!r}, hash={self.hash_algo!r}, durability={self.durability!r})"

    @property
    def root(self) -> str:
        """The absolute path of the store root."""
        return self._core.root

    @property
    def hash_algo(self) -> str:
        """The store's content hash: ``"blake3"`` or ``"sha256"``."""
        return self._core.hash_algo

    @property
    def durability(self) -> str:
        """``"fsync"`` or ``"os"``."""
        return self._core.durability

    # -- writes ---------------------------------------------------------------------------

    def put_bytes(self, data: bytes | bytearray | memoryview) -> Blob:
        """Store a buffer. Identical content is stored once."""
        return self._core.put_bytes(data)

    def save(self, path: PathArg) -> Blob:
        """Store a copy of the file at ``path``; the file itself is left untouched."""
        return self._core.save(path)

    @contextmanager
    def writer(self, ext: str = "") -> Iterator[BlobWriter]:
        """Stream bytes into a new blob::

            with store.writer(ext=".png") as w:
                img.save(w, format="PNG")
            w.blob  # the stored Blob

        On an exception inside the block nothing is stored and no file is left behind.
        """
        w = BlobWriter(self._core.writer(ext))
        try:
            yield w
        except BaseException:
            w._abort()
            raise
        else:
            try:
                w._commit()
            except BaseException:
                w._abort()
                raise

    def stage(self, ext: str = "") -> str:
        """Create an empty file in the store's staging area and return its path.

        Fill it, then :meth:`ingest` it: the file is renamed into the store, never copied.
        """
        return self._core.stage(ext)

    def ingest(self, staged_path: PathArg) -> Blob:
        """Move a file made by :meth:`stage` into the store (a rename, no copy)."""
        return self._core.ingest(staged_path)

    # -- reads ----------------------------------------------------------------------------

    def read_bytes(self, ref: BlobRef, *, verify: bool = False) -> bytes:
        """The bytes of a blob, by digest, URI or :class:`Blob`. With ``verify=True`` the
        bytes are re-hashed and a mismatch raises :class:`~runstash.errors.CorruptError`."""
        return self._core.read_bytes(_ref(ref), verify)

    def open(self, ref: BlobRef) -> BinaryIO:
        """Open a blob for reading (blobs are immutable; the file is read-only)."""
        path = self._core.path_of(_ref(ref))
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns the file object
        except FileNotFoundError:
            self._core.read_bytes(_ref(ref))  # raises the store's NotFoundError
            raise

    def path_of(self, ref: BlobRef) -> str:
        """The path a blob has (or would have) in the store."""
        return self._core.path_of(_ref(ref))

    def exists(self, ref: BlobRef) -> bool:
        """Whether the blob is stored."""
        return self._core.exists(_ref(ref))

    def verify(self, ref: BlobRef | None = None) -> bool | VerifyReport:
        """Re-hash one blob (returns whether it is intact) or, with no argument, every blob
        (returns a :class:`VerifyReport`)."""
        if ref is not None:
            return self._core.verify(_ref(ref))
        checked, corrupt, stray = self._core.verify_all()
        return VerifyReport(checked, corrupt, stray)


def hash_bytes(data: bytes | bytearray | memoryview, algo: str = "blake3") -> str:
    """The ``"<algo>:<hex>"`` digest of a buffer (GIL released; large inputs use all cores)."""
    return _core.hash_bytes(data, algo)


def hash_file(path: PathArg, algo: str = "blake3") -> str:
    """The ``"<algo>:<hex>"`` digest of a file (memory-mapped, all cores for large files)."""
    return _core.hash_file(path, algo)


def write_atomic(
    path: PathArg, data: bytes | bytearray | memoryview, durability: str = "fsync"
) -> None:
    """Replace the file at ``path`` atomically: readers see the old or the new bytes, never a
    mix. With ``durability="fsync"`` the file and its directory are fsynced."""
    _core.write_atomic(path, data, durability)
