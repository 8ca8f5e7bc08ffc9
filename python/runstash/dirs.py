"""Directory artifacts on the sync :class:`~runstash.Store`: a directory stored as one
artifact whose blob is a manifest of its files (the work is the core's, ``runstash_core::tree``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _core
from .args import BlobRef, Labels, Metrics, PathArg, _meta, _ref

if TYPE_CHECKING:
    from ._core import Artifact

__all__ = ["TREE_MIME", "DirectoryArtifacts"]

#: The mime type of a directory artifact's manifest (see :meth:`Store.ingest_dir`).
TREE_MIME: str = _core.TREE_MIME


class DirectoryArtifacts:
    """The directory-artifact methods of :class:`~runstash.Store` (a mixin over the store's
    engine handle ``_core``; local and S3 stores alike)."""

    _core: Any

    def stage_dir(self, suffix: str = "") -> str:
        """Create an empty directory in the store's staging area and return its path: fill
        it, then :meth:`ingest_dir` it.

        :param suffix: appended to the directory's name (a plain name, no ``/``)."""
        return self._core.stage_dir(suffix)

    def ingest_dir(
        self,
        path: PathArg,
        *,
        kind: str = "dir",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pin: bool = False,
        cleanup: bool = True,
    ) -> Artifact:
        """Store a directory as one artifact: each regular file becomes a blob, and the
        artifact's blob is a manifest (``runstash.tree/1`` JSON: relative paths, sizes,
        hashes; mime :data:`TREE_MIME`). Every entry is checked before a byte is stored: a
        symlink must stay inside the directory, FIFOs, sockets and devices are refused
        (:class:`~runstash.errors.InvalidArgumentError`). :meth:`dir_of` gives the files back.

        :param path: the directory (from :meth:`stage_dir`, or anywhere).
        :param kind: the artifact kind; ``labels``, ``metrics``, the scope ids and ``pin`` as
            for :meth:`put_bytes`.
        :param cleanup: remove the directory afterwards when it came from :meth:`stage_dir`
            (a directory elsewhere is never removed)."""
        meta = _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, TREE_MIME)
        return self._core.ingest_dir(path, meta, bool(cleanup))

    def dir_of(self, ref: BlobRef) -> str:
        """The read-only directory holding a directory artifact's files (hard links to their
        blobs, under ``<root>/trees/``; on an S3 store, under the cache's ``trees/``, the files
        fetched first), built on first request and rebuilt when a file's blob was replaced
        (after a quarantine).

        :param ref: the directory artifact, its hash or its URI.
        :raises NotFoundError: when a file of the directory is no longer stored."""
        return self._core.tree_dir(_ref(ref))
