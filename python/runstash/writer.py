"""The file object of :meth:`~runstash.Store.writer`: a buffered binary writer over the
engine's streaming writer (which hashes as the bytes arrive), committed or aborted by the
``with`` block that yields it."""

from __future__ import annotations

import io
from collections.abc import Callable

from . import _core
from ._core import Artifact
from .args import Buffer, Labels, Metrics

__all__ = ["ArtifactWriter"]

#: Python-side buffer in front of the engine's writer: fewer, larger calls into Rust.
_WRITE_BUFFER = 256 * 1024


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

    def write(self, b: Buffer) -> int:  # type: ignore[override]
        return self._core.write(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._core.seek(offset, whence)

    def tell(self) -> int:
        return self._core.tell()


class ArtifactWriter(io.BufferedWriter):
    """The binary file object that :meth:`Store.writer` yields.

    Write to it as to any file opened ``"wb"`` (PIL, numpy, polars and ``io.TextIOWrapper``
    accept it); seeking works. The artifact is stored and indexed when the ``with`` block ends
    normally, and is then available as :attr:`artifact`. Closing it early (as a text wrapper
    does) only flushes; the ``with`` block still decides between commit and abort.
    """

    def __init__(self, core: _core.CoreWriter) -> None:
        super().__init__(_RawBlobWriter(core), buffer_size=_WRITE_BUFFER)
        self._core = core
        self._finished = False
        #: The stored :class:`Artifact`, once the ``with`` block has ended normally.
        self.artifact: Artifact | None = None
        #: Set by the facade: refuses labels that would move the artifact out of its scope.
        self._check_labels: Callable[[Labels], None] | None = None

    def add_labels(self, labels: Labels) -> None:
        """Add labels to the artifact this writer makes (AetherGraph's writer has this).

        :param labels: str keys to str / int / float / bool values; a key already given (to
            :meth:`Store.writer` or an earlier call) takes the new value.
        :raises InvalidArgumentError: a bad key or value (nothing is changed), or, on an
            :class:`ArtifactFacade` writer, a scope id other than the facade's.
        :raises ValueError: the write has already been committed or aborted.
        """
        if self._check_labels is not None:
            self._check_labels(labels)
        self._core.add_labels(labels)

    def add_metrics(self, metrics: Metrics) -> None:
        """Add metrics to the artifact this writer makes (AetherGraph's writer has this).

        :param metrics: str names to finite numbers; a name already given takes the new value.
        :raises InvalidArgumentError: a bad name or value (nothing is changed).
        :raises ValueError: the write has already been committed or aborted.
        """
        self._core.add_metrics(metrics)

    def close(self) -> None:
        if self._finished:
            super().close()
        elif not self.closed:
            self.flush()

    def _commit(self) -> Artifact:
        self.flush()
        self.artifact = self._core.commit()
        self._finished = True
        super().close()
        return self.artifact

    def _abort(self) -> None:
        self._finished = True
        self._core.abort()
        try:
            super().close()
        except (OSError, ValueError):
            pass  # unflushed bytes of an aborted write have nowhere to go
