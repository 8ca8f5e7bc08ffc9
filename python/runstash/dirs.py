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
        it, then :meth:`ingest_dir` it. On an S3 store the staging area is in the local cache.

        :param suffix: appended to the directory's name: ``""`` (the default) or a plain name
            (no ``/``, ``\\`` or NUL, not ``"."`` or ``".."``).
        :raises InvalidArgumentError: a bad ``suffix``.
        :raises CorruptError: the staging area is not a directory (a symlink or a file).
        :raises StoreIOError: the OS refused to create the directory.
        :returns: the path of the new, empty directory.
        """
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
        The call returns once the files, the manifest and the record are stored with the store's
        durability (see :meth:`put_bytes`).

        :param path: the directory (from :meth:`stage_dir`, or anywhere).
        :param kind: the artifact kind (default ``"dir"``): a non-empty str without ``/``, ``\\``
            or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values, as for :meth:`put_bytes`;
            ``None``: no labels.
        :param metrics: str names to finite numbers, as for :meth:`put_bytes`; ``None``: none.
        :param run_id: the run the artifact belongs to; ``None`` (the default): none.
        :param graph_id: the graph it belongs to; ``None``: none.
        :param node_id: the node it belongs to; ``None``: none.
        :param project_id: the project it belongs to; ``None``: none.
        :param pin: record it pinned (default ``False``): :meth:`keep_best` never deletes it.
        :param cleanup: remove the directory afterwards when it came from :meth:`stage_dir`
            (``True``, the default; a directory elsewhere is never removed).
        :raises InvalidArgumentError: ``path`` is not a directory (or does not exist, or contains a
            NUL); an entry is a symlink pointing out of it or to nothing, a FIFO, socket or
            device, or has a name that is not UTF-8; or bad metadata. Nothing is stored.
        :raises TypeError: ``kind`` is not a str.
        :raises StoreIOError: the OS (on S3: a request) refused to read a file or to store it.
        :returns: the new :class:`Artifact`.
        """
        meta = _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, TREE_MIME)
        return self._core.ingest_dir(path, meta, bool(cleanup))

    def dir_of(self, ref: BlobRef) -> str:
        """The read-only directory holding a directory artifact's files (hard links to their
        blobs, under ``<root>/trees/``; on an S3 store, under the cache's ``trees/``, the files
        fetched first), built on first request and rebuilt when a file's blob was replaced
        (after a quarantine).

        :param ref: the directory artifact, its hash or its URI.
        :raises NotFoundError: when the manifest, or a file of the directory, is no longer stored.
        :raises CorruptError: ``ref`` names bytes that are not a directory manifest, or a manifest
            that no longer matches its hash.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store.
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused to build the directory.
        :returns: the directory's path.
        """
        return self._core.tree_dir(_ref(ref))
