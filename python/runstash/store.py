"""The sync :class:`Store`: the fast path for hot loops, thin over the Rust engine.

Every method releases the GIL for its file work and hashing. Writes are atomic (bytes reach
their final name only when complete) and, with ``durability="fsync"`` (the default), survive a
power cut once the call returns.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from . import _core
from ._core import Artifact
from .args import (
    BlobRef,
    Buffer,
    Grace,
    Labels,
    Metrics,
    PathArg,
    Per,
    VerifyProgress,
    _filter,
    _grace_seconds,
    _id,
    _meta,
    _ref,
    check_limit,
)
from .dirs import TREE_MIME, DirectoryArtifacts
from .errors import InvalidArgumentError, RunstashError
from .mime import guess as guess_mime
from .optional import require
from .reports import (
    GcReport,
    IntegrityReport,
    RetentionReport,
    StoreStats,
    VerifyReport,
    _gc_report,
    _integrity_report,
)
from .s3 import S3Options, _open_remote
from .writer import ArtifactWriter

if TYPE_CHECKING:
    import polars
    import pyarrow

__all__ = ["DEFAULT_GC_GRACE", "DEFAULT_ROOT", "TREE_MIME", "Store"]


#: Where the embedded default store lives, relative to the working directory.
DEFAULT_ROOT = ".runstash"

#: How long an unreferenced blob is left alone by :meth:`Store.gc`, counted from when it got
#: its name. A writer stores its blob first and appends its record after, so a fresh blob
#: without a record is most likely a write in progress, not garbage.
DEFAULT_GC_GRACE = timedelta(minutes=15)


class _ClosedCore:
    """Stands in for the engine after :meth:`Store.close`: every use is a clear error."""

    def __init__(self, root: str) -> None:
        self._root = root

    def __getattr__(self, name: str) -> Any:
        raise RunstashError(f"the store at {self._root} is closed")


class Store(DirectoryArtifacts):
    """An artifact store rooted at a local directory, or in an S3 bucket.

    ``Store(root)`` creates the store when ``root`` does not exist or is empty, and otherwise
    opens it. ``hash`` picks the content hash of a new store (``"blake3"``, the default, or
    ``"sha256"``); for an existing store it must match or be ``None``. ``durability`` is
    ``"fsync"`` (an acknowledged write survives a power cut) or ``"os"`` (atomic and safe
    against process crashes, but not fsynced; on an S3 store: buffered, see below).

    ``pack_max`` (bytes, default 64 KiB; 0 turns packing off): payloads up to this size are
    packed into the index log instead of getting a blob file each. The bytes and their record
    reach disk in one append (one shared ``fdatasync`` in ``"fsync"`` mode), which is what
    makes small writes cheap. Reads, ``verify`` and queries do not care how a blob is kept;
    :meth:`path_of` and :meth:`open` give a packed blob its file under ``blobs/`` on first
    use. ``ingest`` (a rename) and the files of a directory artifact never pack.

    ``root`` may also be ``"s3://bucket/prefix"``: blobs and the index live in the bucket,
    shared by writers on many machines (``s3`` says how to reach it, see :class:`S3Options`).
    The write and query methods work the same; in ``"fsync"`` durability a write returns
    once it is stored in the bucket, in ``"os"`` durability writes are buffered until
    :meth:`flush` or :meth:`close`. Other writers' artifacts appear after :meth:`refresh`
    (queries refresh by themselves when their view is older than ``max_staleness``).
    Every method works on both; on S3, ``gc`` works in two phases (see :meth:`gc`), staged
    files and directories live in the local cache until ingested (uploaded), and
    :meth:`dir_of` builds its directory in the cache.

    ``create=False`` opens an existing store only: a root (or S3 prefix) without one is a
    :class:`~runstash.errors.NotFoundError`, and nothing is written.

    :param root: the store's directory (created, with its parents, when missing), or an
        ``"s3://bucket/prefix"`` URL; default :data:`DEFAULT_ROOT`.
    :param hash: ``"blake3"`` or ``"sha256"``: the hash of a new store, and what an existing one
        must use; ``None`` (the default): the existing store's, BLAKE3 for a new one.
    :param durability: ``"fsync"`` (the default) or ``"os"``, for this handle's writes.
    :param pack_max: the largest payload packed into the index log, in bytes (at most 16 MiB;
        0: never pack).
    :param s3: how to reach the bucket of an ``s3://`` root; ``None``: the ``AWS_*`` environment
        variables.
    :param create: ``True`` (the default): create a missing store; ``False``: open one only.
    :raises InvalidArgumentError: an unknown ``hash`` or ``durability``, ``pack_max`` above
        16 MiB, ``s3=`` with a local root, or a root that is a file, or a non-empty directory
        that is not a store (nothing is written into it).
    :raises NotFoundError: ``create=False`` and there is no store at ``root``.
    :raises IncompatibleStoreError: the store hashes with another algorithm than ``hash``, or was
        made by a newer runstash.
    :raises CorruptError: the store's ``STORE.json`` or index cannot be read as one, or the
        directory holds a store that lost its ``STORE.json``.
    :raises StoreIOError: the OS refused to create or read the store (on S3: a request failed).
    """

    def __init__(
        self,
        root: PathArg = DEFAULT_ROOT,
        *,
        hash: str | None = None,
        durability: str = "fsync",
        pack_max: int = 64 * 1024,
        s3: S3Options | None = None,
        create: bool = True,
    ) -> None:
        url = os.fspath(root)
        self._remote = isinstance(url, str) and url.startswith("s3://")
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if self._remote:
            self._core = _open_remote(url, s3, hash, durability, pack_max, bool(create))
            # Buffered ("os") writes go up when the store is closed, collected, or at the
            # latest when the interpreter exits normally.
            self._finalizer = weakref.finalize(self, self._core.flush)
        elif s3 is not None:
            raise InvalidArgumentError(f"s3= is for s3:// stores, not {url!r}")
        else:
            self._core = _core.CoreStore(root, hash, durability, pack_max, bool(create))
        self._root = self._core.root
        self._hash_algo = self._core.hash_algo
        self._durability = self._core.durability
        self._pack_max = self._core.pack_max

    def __repr__(self) -> str:
        return f"Store({self.root!r}, hash={self.hash_algo!r}, durability={self.durability!r})"

    @property
    def root(self) -> str:
        """The absolute path of the store root (for an S3 store, its ``s3://`` URL)."""
        return self._root

    @property
    def is_remote(self) -> bool:
        """Whether the store lives in an S3 bucket."""
        return self._remote

    @property
    def staging_dir(self) -> str:
        """Where :meth:`stage` and :meth:`stage_dir` make their files: ``<root>/staging``, or,
        for an S3 store, ``staging/`` in its local cache."""
        return self._core.staging_dir

    @property
    def hash_algo(self) -> str:
        """The store's content hash: ``"blake3"`` or ``"sha256"``."""
        return self._hash_algo

    @property
    def durability(self) -> str:
        """``"fsync"`` or ``"os"``."""
        return self._durability

    @property
    def pack_max(self) -> int:
        """Payloads up to this many bytes are packed into the index log (0: never)."""
        return self._pack_max

    # -- writes ---------------------------------------------------------------------------
    #
    # Every write stores the bytes (once per distinct content) and appends a new record to the
    # index: two writes of the same bytes are two artifacts sharing one blob. The keyword
    # arguments are the same for all of them:
    #
    #   kind     what the artifact is ("blob", "model", "image", ...): no "/", "\\" or NUL
    #   labels   str keys -> str | int | float | bool values, matched exactly by queries
    #   metrics  str keys -> finite numbers, used by best / top_k / search(metric=...)
    #   run_id, graph_id, node_id, project_id   scope ids
    #   pin      pinned artifacts are kept by retention
    #   mime     an optional media type
    #
    # Bad metadata raises InvalidArgumentError before any byte is written.

    def put_bytes(
        self,
        data: Buffer,
        *,
        kind: str = "blob",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pin: bool = False,
        mime: str | None = None,
    ) -> Artifact:
        """Store a buffer's bytes and record them as an artifact.

        ``data`` is any C-contiguous object with the buffer protocol: ``bytes``,
        ``bytearray``, a ``memoryview`` of any format, a numpy array of any dtype (its raw
        bytes in C order, without a copy; dtype and shape are not kept, so write ``np.save``
        output through :meth:`writer` with ``".npy"`` when they must come back), a pyarrow
        buffer. A strided or Fortran-order view raises ``ValueError`` naming
        ``numpy.ascontiguousarray``; an object without the buffer protocol raises
        ``TypeError``.

        ``kind``, ``labels``, ``metrics``, the scope ids (``run_id``, ``graph_id``,
        ``node_id``, ``project_id``), ``pin`` and ``mime`` make the record (see
        :meth:`search` for how they are queried). Two writes of the same bytes are two
        artifacts sharing one blob.
        In ``"fsync"`` durability the call returns once the bytes and the record are on disk
        (on S3: in the bucket); in ``"os"`` it is atomic but not fsynced (on S3: buffered until
        :meth:`flush` or :meth:`close`).

        :param data: the bytes, as any C-contiguous object with the buffer protocol (above).
        :param kind: what the artifact is (default ``"blob"``): a non-empty str without ``/``,
            ``\\`` or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values (ints within 64 bits, floats
            finite), matched exactly and by type by queries; ``None``: no labels.
        :param metrics: str names to finite numbers (numpy scalars too), what :meth:`best`,
            :meth:`top_k`, :meth:`search` and :meth:`keep_best` rank by; ``None``: none.
        :param run_id: the run the artifact belongs to; ``None`` (the default): none. No NUL.
        :param graph_id: the graph it belongs to; ``None``: none. No NUL.
        :param node_id: the node it belongs to; ``None``: none. No NUL.
        :param project_id: the project it belongs to; ``None``: none. No NUL.
        :param pin: record it pinned (default ``False``): :meth:`keep_best` never deletes it.
        :param mime: the media type, recorded as given; ``None`` (the default): none.
        :raises InvalidArgumentError: bad metadata (a bad ``kind``, label or metric, a NUL in a
            scope id), before any byte is written.
        :raises TypeError: ``data`` does not have the buffer protocol, or ``kind`` is not a str.
        :raises ValueError: ``data`` is not C-contiguous.
        :raises StoreIOError: the OS refused the write (disk full, permission denied, ...).
        :returns: the new :class:`Artifact`.
        """
        return self._core.put_bytes(
            data, _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime)
        )

    def save(
        self,
        path: PathArg,
        *,
        kind: str = "blob",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pin: bool = False,
        mime: str | None = None,
    ) -> Artifact:
        """Store a copy of the file at ``path`` (left untouched) and record it; ``mime``
        defaults to the one guessed from the file's name (:func:`runstash.mime.guess`).
        In ``"fsync"`` durability the call returns once the bytes and the record are on disk
        (on S3: in the bucket); in ``"os"`` it is atomic but not fsynced (on S3: buffered until
        :meth:`flush` or :meth:`close`).

        :param path: a regular file (a symlink to one is followed).
        :param kind: what the artifact is (default ``"blob"``): a non-empty str without ``/``,
            ``\\`` or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values (ints within 64 bits, floats
            finite), matched exactly and by type by queries; ``None``: no labels.
        :param metrics: str names to finite numbers (numpy scalars too), what :meth:`best`,
            :meth:`top_k`, :meth:`search` and :meth:`keep_best` rank by; ``None``: none.
        :param run_id: the run the artifact belongs to; ``None`` (the default): none. No NUL.
        :param graph_id: the graph it belongs to; ``None``: none. No NUL.
        :param node_id: the node it belongs to; ``None``: none. No NUL.
        :param project_id: the project it belongs to; ``None``: none. No NUL.
        :param pin: record it pinned (default ``False``): :meth:`keep_best` never deletes it.
        :param mime: the media type; ``None`` (the default): guessed from ``path``'s extension.
        :raises NotFoundError: there is no file at ``path``.
        :raises InvalidArgumentError: ``path`` is a directory, FIFO, socket or device, or contains a
            NUL; or bad metadata. Nothing is written.
        :raises TypeError: ``kind`` is not a str.
        :raises StoreIOError: the OS refused to read the file or to store it, or the file changed
            size while it was being copied.
        :returns: the new :class:`Artifact`.
        """
        mime = mime if mime is not None else guess_mime(path)
        return self._core.save(
            path, _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime)
        )

    @contextmanager
    def writer(
        self,
        ext: str = "",
        *,
        kind: str = "blob",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pin: bool = False,
        mime: str | None = None,
    ) -> Iterator[ArtifactWriter]:
        """Stream bytes into a new artifact::

            with store.writer(".png", kind="image") as w:
                img.save(w, format="PNG")
            w.artifact  # the stored Artifact

        On an exception inside the block nothing is stored and no file is left behind.
        ``mime`` defaults to the one guessed from ``ext`` (``".npy"`` -> ``application/x-npy``),
        as on every write of a file name, so that loaders know how to decode it. The artifact is
        stored when the block ends, with the store's durability (see :meth:`put_bytes`).

        :param ext: the extension of the bytes, e.g. ``".png"``: up to 32 ASCII letters, digits,
            ``.``, ``_`` or ``-``; ``""`` (the default): none. ``"png"`` is accepted too, but only
            the dotted form guesses a ``mime``.
        :param kind: what the artifact is (default ``"blob"``): a non-empty str without ``/``,
            ``\\`` or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values (ints within 64 bits, floats
            finite), matched exactly and by type by queries; ``None``: no labels.
        :param metrics: str names to finite numbers (numpy scalars too), what :meth:`best`,
            :meth:`top_k`, :meth:`search` and :meth:`keep_best` rank by; ``None``: none.
        :param run_id: the run the artifact belongs to; ``None`` (the default): none. No NUL.
        :param graph_id: the graph it belongs to; ``None``: none. No NUL.
        :param node_id: the node it belongs to; ``None``: none. No NUL.
        :param project_id: the project it belongs to; ``None``: none. No NUL.
        :param pin: record it pinned (default ``False``): :meth:`keep_best` never deletes it.
        :param mime: the media type; ``None`` (the default): guessed from ``ext``.
        :raises InvalidArgumentError: a bad ``ext`` or bad metadata, on entering the block (before
            its body runs).
        :raises TypeError: ``kind`` is not a str.
        :raises StoreIOError: the OS refused a write, or the commit at the end of the block.
        :returns: a context manager yielding an :class:`~runstash.writer.ArtifactWriter`.
        """
        # "png" and ".png" name the same extension (the engine adds the dot).
        mime = mime if mime is not None else guess_mime("." + ext.lstrip(".") if ext else None)
        meta = _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime)
        w = ArtifactWriter(self._core.writer(ext, meta))
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

        Fill it, then :meth:`ingest` it: the file is renamed into the store, never copied. On
        an S3 store the staging area is in the local cache, and :meth:`ingest` uploads the
        file, then removes it.

        :param ext: the file's extension, ``".npy"`` or ``"npy"`` (up to 32 ASCII letters, digits,
            ``.``, ``_`` or ``-``); ``""`` (the default): none. :meth:`ingest` guesses the ``mime``
            from it.
        :raises InvalidArgumentError: a bad ``ext``.
        :raises CorruptError: the staging area is not a directory (a symlink or a file).
        :raises StoreIOError: the OS refused to create the file.
        :returns: the path of the new, empty file.
        """
        return self._core.stage(ext)

    def ingest(
        self,
        staged_path: PathArg,
        *,
        kind: str = "blob",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pin: bool = False,
        mime: str | None = None,
    ) -> Artifact:
        """Move a file made by :meth:`stage` into the store (a rename, no copy; on an S3 store:
        an upload, then the staged file is removed) and record it; ``mime`` defaults to the one
        guessed from the file's name (its extension, given to :meth:`stage`). If recording fails
        the staged file stays, read-only, with its bytes.
        In ``"fsync"`` durability the call returns once the bytes and the record are on disk
        (on S3: in the bucket); in ``"os"`` it is atomic but not fsynced (on S3: buffered until
        :meth:`flush` or :meth:`close`).

        :param staged_path: a file from :meth:`stage`: a regular file directly in the staging area,
            not a symlink, with no other hard link.
        :param kind: what the artifact is (default ``"blob"``): a non-empty str without ``/``,
            ``\\`` or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values (ints within 64 bits, floats
            finite), matched exactly and by type by queries; ``None``: no labels.
        :param metrics: str names to finite numbers (numpy scalars too), what :meth:`best`,
            :meth:`top_k`, :meth:`search` and :meth:`keep_best` rank by; ``None``: none.
        :param run_id: the run the artifact belongs to; ``None`` (the default): none. No NUL.
        :param graph_id: the graph it belongs to; ``None``: none. No NUL.
        :param node_id: the node it belongs to; ``None``: none. No NUL.
        :param project_id: the project it belongs to; ``None``: none. No NUL.
        :param pin: record it pinned (default ``False``): :meth:`keep_best` never deletes it.
        :param mime: the media type; ``None`` (the default): guessed from ``staged_path``.
        :raises NotFoundError: there is no file at ``staged_path``.
        :raises InvalidArgumentError: ``staged_path`` is outside the staging area (or below it), a
            symlink, not a regular file, or has several hard links; or bad metadata. Nothing is
            stored.
        :raises TypeError: ``kind`` is not a str.
        :raises StoreIOError: the OS refused the move or the record's write.
        :returns: the new :class:`Artifact`.
        """
        mime = mime if mime is not None else guess_mime(staged_path)
        return self._core.ingest(
            staged_path,
            _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime),
        )

    def record_many(self, blob: BlobRef, items: Iterable[dict[str, Any]]) -> list[Artifact]:
        """Record many artifacts for one stored blob in a single index append (one lock, one
        fsync): the bulk path for imports and benchmarks. Each item is a dict of the write
        keywords (``kind``, ``labels``, ``metrics``, scope ids, ``pin``, ``mime``).

        :param blob: the stored blob: a digest (``"blake3:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :param items: one dict per record, with any of the keys ``kind`` (default ``"blob"``),
            ``labels``, ``metrics``, ``run_id``, ``graph_id``, ``node_id``, ``project_id``, ``pin``
            (default ``False``) and ``mime`` (default ``None``, not guessed), meaning what they mean
            for :meth:`put_bytes`.
        :raises TypeError: an item has another key, or a ``kind`` that is not a str; ``blob`` is
            neither a str nor an :class:`Artifact`. Nothing is recorded.
        :raises InvalidArgumentError: ``blob`` is not a digest or blob URI of this store, or an item
            has bad metadata. Nothing is recorded.
        :raises NotFoundError: the blob is not stored.
        :raises StoreIOError: the OS refused the index write.
        :returns: the new artifacts, in the order of ``items``.
        """
        allowed = {"kind", "labels", "metrics", "run_id", "graph_id", "node_id", "project_id"}
        allowed |= {"pin", "mime"}
        metas = []
        for item in items:
            extra = set(item) - allowed
            if extra:
                raise TypeError(f"unexpected record fields: {sorted(extra)}")
            metas.append(
                _meta(
                    item.get("kind", "blob"),
                    item.get("labels"),
                    item.get("metrics"),
                    item.get("run_id"),
                    item.get("graph_id"),
                    item.get("node_id"),
                    item.get("project_id"),
                    item.get("pin", False),
                    item.get("mime"),
                )
            )
        return self._core.record_many(_ref(blob), metas)

    # -- index ----------------------------------------------------------------------------
    #
    # Queries are answered from memory (GIL released), after applying what other processes
    # appended to the log. Filters: ``None`` means "any"; ``labels`` must match exactly and by
    # type on every given key (1, 1.0, True and "1" are four different values); scope ids
    # match exactly. Rankings leave out artifacts without the metric and break ties by the
    # older artifact (smaller id) first.

    def get(self, id: str) -> Artifact | None:
        """The artifact with this id, or None (also for a deleted one).

        :param id: an artifact id (26 base32 characters); a malformed one gives None.
        :raises TypeError: ``id`` is not a str.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        return self._core.get(id)

    def list(
        self,
        *,
        kind: str | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pinned: bool | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Matching artifacts, oldest first (at most ``limit``: the oldest ones).

        :param kind: only artifacts of this kind (exact); ``None``: any.
        :param labels: only artifacts that have every one of these labels with an equal value of the
            same type (the int ``3`` does not match the string ``"3"``); ``None``: any.
        :param run_id: only this run's artifacts (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param pinned: ``True``: only pinned artifacts, ``False``: only unpinned ones, ``None`` (the
            default): either.
        :param limit: at most this many artifacts, a non-negative int; ``None`` (the default): all.
        :raises InvalidArgumentError: a bad ``limit``, or a label key or value of the wrong type.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        return self._core.list(f, check_limit(limit))

    def count(
        self,
        *,
        kind: str | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pinned: bool | None = None,
    ) -> int:
        """How many artifacts match.

        :param kind: only artifacts of this kind (exact); ``None``: any.
        :param labels: only artifacts that have every one of these labels with an equal value of the
            same type (the int ``3`` does not match the string ``"3"``); ``None``: any.
        :param run_id: only this run's artifacts (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param pinned: ``True``: only pinned artifacts, ``False``: only unpinned ones, ``None`` (the
            default): either.
        :raises InvalidArgumentError: a label key or value of the wrong type.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        return self._core.count(
            _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        )

    def search(
        self,
        *,
        kind: str | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pinned: bool | None = None,
        metric: str | None = None,
        mode: str = "max",
        limit: int | None = None,
    ) -> list[Artifact]:
        """Matching artifacts: ranked best first by ``metric`` when one is given (``mode``
        ``"max"`` or ``"min"``), otherwise oldest first.

        :param kind: only artifacts of this kind (exact); ``None``: any.
        :param labels: only artifacts that have every one of these labels with an equal value of the
            same type (the int ``3`` does not match the string ``"3"``); ``None``: any.
        :param run_id: only this run's artifacts (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param pinned: ``True``: only pinned artifacts, ``False``: only unpinned ones, ``None`` (the
            default): either.
        :param metric: rank by this metric, best first; artifacts without it are left out and ties
            go to the older artifact. ``None`` (the default): no ranking, oldest first.
        :param mode: ``"max"`` (the default: highest first) or ``"min"``; checked even without
            ``metric``.
        :param limit: at most this many artifacts (the best, or the oldest), a non-negative int;
            ``None`` (the default): all.
        :raises InvalidArgumentError: ``mode`` is not ``"max"`` or ``"min"``, a bad ``limit``, or a
            label key or value of the wrong type.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        if metric is None:
            if mode not in ("max", "min"):
                raise InvalidArgumentError(f'mode must be "max" or "min", got {mode!r}')
            return self._core.list(f, check_limit(limit))
        n = check_limit(limit)
        return self._core.top_k(f, metric, mode, n if n is not None else 2**62)

    def best(
        self,
        *,
        metric: str,
        mode: str = "max",
        kind: str | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pinned: bool | None = None,
    ) -> Artifact | None:
        """The best matching artifact by ``metric``, or None when none has it.

        :param metric: the metric to rank by; artifacts without it are left out (an unknown metric
            matches nothing). Ties go to the older artifact.
        :param mode: ``"max"`` (the default: highest is best) or ``"min"`` (lowest is best).
        :param kind: only artifacts of this kind (exact); ``None``: any.
        :param labels: only artifacts that have every one of these labels with an equal value of the
            same type (the int ``3`` does not match the string ``"3"``); ``None``: any.
        :param run_id: only this run's artifacts (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param pinned: ``True``: only pinned artifacts, ``False``: only unpinned ones, ``None`` (the
            default): either.
        :raises InvalidArgumentError: ``mode`` is not ``"max"`` or ``"min"``, or a label key or
            value of the wrong type.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        return self._core.best(f, metric, mode)

    def top_k(
        self,
        k: int,
        *,
        metric: str,
        mode: str = "max",
        kind: str | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        pinned: bool | None = None,
    ) -> list[Artifact]:
        """The ``k`` best matching artifacts by ``metric``, best first (fewer when fewer match and
        have the metric).

        :param k: how many, a non-negative int (0 gives ``[]``).
        :param metric: the metric to rank by; artifacts without it are left out (an unknown metric
            matches nothing). Ties go to the older artifact.
        :param mode: ``"max"`` (the default: highest is best) or ``"min"`` (lowest is best).
        :param kind: only artifacts of this kind (exact); ``None``: any.
        :param labels: only artifacts that have every one of these labels with an equal value of the
            same type (the int ``3`` does not match the string ``"3"``); ``None``: any.
        :param run_id: only this run's artifacts (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param pinned: ``True``: only pinned artifacts, ``False``: only unpinned ones, ``None`` (the
            default): either.
        :raises InvalidArgumentError: ``k`` is negative or not an int, ``mode`` is not ``"max"`` or
            ``"min"``, or a label key or value of the wrong type.
        :raises StoreIOError: the index could not be brought up to date with other writers' appends
            (an OS error; on S3, a failed request).
        """
        if not isinstance(k, int) or k < 0:
            raise InvalidArgumentError(f"k must be a non-negative int, got {k!r}")
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        return self._core.top_k(f, metric, mode, k)

    def pin(self, id: str | Artifact, pinned: bool = True) -> Artifact:
        """Pin (or with ``pinned=False`` unpin) an artifact; returns the updated record. A pinned
        artifact is never deleted by :meth:`keep_best`.

        :param id: the :class:`Artifact`, or its id.
        :param pinned: ``True`` (the default) pins, ``False`` unpins.
        :raises NotFoundError: no live artifact has this id (a deleted one included).
        :raises InvalidArgumentError: ``id`` is not an artifact id (26 base32 characters).
        :raises TypeError: ``id`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused the index write.
        :returns: the updated :class:`Artifact`.
        """
        return self._core.pin(_id(id), pinned)

    def delete(self, id: str | Artifact) -> None:
        """Remove an artifact's record (a pinned one too). Its bytes stay until garbage collection
        (other records may share them).

        :param id: the :class:`Artifact`, or its id.
        :raises NotFoundError: no live artifact has this id (a deleted one included).
        :raises InvalidArgumentError: ``id`` is not an artifact id (26 base32 characters).
        :raises TypeError: ``id`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused the index write.
        """
        self._core.delete(_id(id))

    def compact(self) -> None:
        """Write a snapshot of the index and start a new log segment, so reopening is fast.
        Runs by itself when a log segment passes 64 MiB. On an S3 store: one snapshot object
        takes the place of every index segment seen (readers then fetch one object instead of
        many).

        :raises StoreIOError: the OS (on S3: a request) refused to write the snapshot.
        """
        self._core.compact()

    def refresh(self) -> None:
        """Apply what other writers added to the index now (an S3 store; a local store is
        always current, and this does nothing).

        :raises StoreIOError: on S3, listing or fetching the index failed.
        """
        self._core.refresh()

    def flush(self) -> None:
        """Upload writes still buffered (an S3 store in ``"os"`` durability); returns when
        they are in the bucket. Does nothing otherwise.

        :raises StoreIOError: an upload failed (the writes stay buffered for a later flush).
        """
        self._core.flush()

    def close(self) -> None:
        """Release the store's open files (an S3 store uploads buffered writes first, and
        raises if they cannot be stored; the store is closed all the same). Reads and writes
        afterwards raise :class:`~runstash.errors.RunstashError`; ``root`` and the settings
        stay readable. Closing twice is harmless.

        :raises StoreIOError: on S3, uploading the buffered writes failed.
        """
        try:
            if not isinstance(self._core, _ClosedCore):
                self._core.flush()  # its error, if any, is this call's (and only this one's)
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            self._core = _ClosedCore(self._root)  # type: ignore[assignment]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- export ---------------------------------------------------------------------------

    def to_arrow(self) -> pyarrow.Table:
        """Every live artifact as a pyarrow Table, oldest first: one column per record field,
        ``labels`` as a struct column with one field per label key (typed by its values; a key
        whose values mix types becomes a string field), and one Float64 column per metric
        name, ``metrics.<name>``, null where absent.

        :raises ModuleNotFoundError: pyarrow is not installed (``runstash[arrow]``).
        """
        from .export import arrow_table

        return arrow_table(self._core.columns())

    def to_polars(self) -> polars.DataFrame:
        """:meth:`to_arrow` as a polars DataFrame (labels become a list of key/value structs).

        :raises ModuleNotFoundError: polars or pyarrow is not installed (``runstash[polars]``).
        """
        pl = require("polars", "to_polars()")
        require("pyarrow", "to_polars()")

        return pl.from_arrow(self.to_arrow())  # type: ignore[return-value]

    # -- reads ----------------------------------------------------------------------------

    def read_bytes(self, ref: BlobRef, *, verify: bool = False) -> bytes:
        """The bytes of a blob, by digest, URI or :class:`Artifact`. With ``verify=True`` the
        bytes are re-hashed and a mismatch raises :class:`~runstash.errors.CorruptError`.

        :param ref: a digest (``"blake3:<hex>"``, ``"sha256:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :param verify: re-hash the bytes before returning them (default ``False``); on a local
            store a damaged blob file is moved to ``quarantine/``.
        :raises NotFoundError: the blob is not stored.
        :raises CorruptError: with ``verify=True``, the bytes do not match their hash.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store (malformed,
            another store's URI, or a digest of another hash).
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused the read.
        """
        return self._core.read_bytes(_ref(ref), verify)

    def open(self, ref: BlobRef) -> BinaryIO:
        """Open a blob for reading (blobs are immutable; the file is read-only). A packed
        blob gets its file first (see :meth:`path_of`); on S3 the blob is fetched into the
        cache first.

        :param ref: a digest (``"blake3:<hex>"``, ``"sha256:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :raises NotFoundError: the blob is not stored.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store (malformed,
            another store's URI, or a digest of another hash).
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused to make or open the file.
        :returns: a binary file object opened ``"rb"``; the caller closes it.
        """
        path = self._core.path_of(_ref(ref))
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns the file object
        except FileNotFoundError:
            self._core.read_bytes(_ref(ref))  # raises the store's NotFoundError
            raise

    def path_of(self, ref: BlobRef) -> str:
        """The path of a stored blob's file. A blob packed into the index log (see ``pack_max``)
        is written to its file under ``blobs/`` on first request, atomically and with the
        store's durability; later calls return the same path. On S3 the file is in the local
        cache, fetched first if needed. Do not write to it.

        :param ref: a digest (``"blake3:<hex>"``, ``"sha256:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :raises NotFoundError: the blob is not stored.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store (malformed,
            another store's URI, or a digest of another hash).
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused to make the file.
        """
        return self._core.path_of(_ref(ref))

    def existing_path(self, ref: BlobRef) -> str | None:
        """The path of a file that already holds the blob, or ``None`` when there is none (a
        blob packed into the index before :meth:`path_of` asked for its file; on S3, a blob
        not in the local cache). Unlike :meth:`path_of` it never writes, unpacks or
        downloads anything: what read-only tools use.

        :param ref: a digest (``"blake3:<hex>"``, ``"sha256:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store (malformed,
            another store's URI, or a digest of another hash).
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        """
        return self._core.existing_file(_ref(ref))

    def exists(self, ref: BlobRef) -> bool:
        """Whether the blob is stored (packed or as a file; on S3, in the bucket).

        :param ref: a digest (``"blake3:<hex>"``, ``"sha256:<hex>"``, or bare hex in the store's
            hash), a blob URI of this store, or an :class:`Artifact`.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store (malformed,
            another store's URI, or a digest of another hash).
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused the check.
        """
        return self._core.exists(_ref(ref))

    def verify(self, ref: BlobRef | None = None) -> bool | VerifyReport:
        """Re-hash one blob (returns whether it is intact) or, with no argument, every blob
        (returns a :class:`VerifyReport`). On a local store a damaged blob file is moved to
        ``quarantine/``.

        :param ref: the blob to check, as for :meth:`read_bytes` (a digest, a blob URI of this
            store, or an :class:`Artifact`); ``None`` (the default): every blob.
        :raises NotFoundError: the blob ``ref`` names is not stored.
        :raises InvalidArgumentError: ``ref`` is not a digest or blob URI of this store.
        :raises TypeError: ``ref`` is neither a str nor an :class:`Artifact`.
        :raises StoreIOError: the OS (on S3: a request) refused a read.
        """
        if ref is not None:
            return self._core.verify(_ref(ref))
        checked, corrupt, stray, missing = self._core.verify_all()
        return VerifyReport(checked, corrupt, stray, tuple(missing))

    # -- operations -----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Space accounting: records and their bytes, blobs after dedup, orphans, staging
        leftovers (see :class:`StoreStats`). Reads the index and one ``stat`` per blob file;
        hashes nothing.

        :raises StoreIOError: the OS (on S3: a request) refused to list or stat the blobs.
        """
        return StoreStats(**self._core.stats())

    def verify_report(self, progress: VerifyProgress | None = None) -> IntegrityReport:
        """Re-hash every blob and compare the store with its index: blobs that live records
        name but the store lacks (missing), blobs whose bytes do not match their hash
        (corrupt), blobs nothing live names (orphaned: reclaimable, not damage), stray files.

        ``progress(done, total, bytes_done, total_bytes)`` is called at most every 0.1 s and
        after the last blob (the GIL is released in between); an exception it raises stops
        the check and propagates.

        :param progress: ``None`` (the default), or a callable taking the blobs done, the blobs in
            all, the bytes done and the bytes in all (see above).
        :raises Exception: whatever ``progress`` raises, unchanged.
        :raises StoreIOError: the OS (on S3: a request) refused to list the blobs.
        :returns: an :class:`IntegrityReport`.
        """
        return _integrity_report(self._core.verify_report(progress))

    def gc(self, *, dry_run: bool = True, grace: Grace = DEFAULT_GC_GRACE) -> GcReport:
        """Delete blob files that no live record names (garbage collection).

        Safe defaults: ``dry_run=True`` only reports what would be deleted; pass
        ``dry_run=False`` to delete. Blobs that got their name less than ``grace`` ago (a
        :class:`~datetime.timedelta` or seconds; default :data:`DEFAULT_GC_GRACE`, 15 minutes)
        are kept even when unreferenced: they may belong to a write whose record is not
        appended yet. Pinned and live records' blobs, and the files of live directory
        artifacts, are never deleted. Other processes may keep writing meanwhile: each
        deletion is re-checked under the index lock. The index is compacted first when
        something is deleted.

        On an S3 store (writers on other machines share no lock) gc works in two phases: it
        marks the unreferenced blob objects older than ``grace`` (:attr:`GcReport.pending`),
        and a gc run at least 1.25 times the store's gc lease later (see
        :class:`~runstash.S3Options`, default 10 minutes; marks are kept in the bucket, so
        any process may run it) deletes those still unreferenced (:attr:`GcReport.deleted`).
        Writers never rely on a marked object, so nothing a concurrent write records is
        deleted.

        :param dry_run: ``True`` (the default): only report; ``False``: delete.
        :param grace: how old an unreferenced blob must be to go: a :class:`~datetime.timedelta` or
            a non-negative number of seconds; default :data:`DEFAULT_GC_GRACE`.
        :raises InvalidArgumentError: ``grace`` is negative or not finite.
        :raises TypeError: ``grace`` is neither a number nor a timedelta (a bool included).
        :raises StoreIOError: the OS (on S3: a request) refused a listing or a deletion.
        :returns: a :class:`GcReport`.
        """
        return _gc_report(self._core.gc(bool(dry_run), _grace_seconds(grace)))

    def keep_best(
        self,
        *,
        kind: str,
        metric: str,
        mode: str,
        k: int,
        per: Per | None = None,
        labels: Labels | None = None,
        run_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
        dry_run: bool = True,
        grace: Grace = DEFAULT_GC_GRACE,
    ) -> RetentionReport:
        """Retention: keep the ``k`` best records of ``kind`` by ``metric`` (``mode`` ``"max"``
        or ``"min"``) in each group, delete the rest, never a pinned one; then :meth:`gc`.

        Groups (``per``): ``None``, all matching records together; ``"run"``, by run id;
        ``"graph"``, by (run id, graph id); ``"node"``, by (run id, graph id, node id).
        Pinned records count towards the top ``k``, and pinned records beyond it are kept
        too. Records without the metric cannot be ranked and are kept. ``dry_run=True`` (the
        default) deletes nothing and reports what would go, including what gc would then
        reclaim. Blobs of records written less than ``grace`` ago stay until a later gc.

        :param kind: the kind of the records that compete (exact); other kinds are untouched.
        :param metric: the metric they are ranked by.
        :param mode: ``"max"`` (highest is best) or ``"min"`` (lowest is best); required.
        :param k: how many to keep in each group, a non-negative int (0: every ranked unpinned
            record goes).
        :param per: how records are grouped: ``None`` (the default), ``"run"``, ``"graph"`` or
            ``"node"`` (see above).
        :param labels: only records that have every one of these labels, equal in value and type,
            compete; ``None``: any.
        :param run_id: only this run's records compete (exact); ``None``: any.
        :param graph_id: only this graph's (exact); ``None``: any.
        :param node_id: only this node's (exact); ``None``: any.
        :param project_id: only this project's (exact); ``None``: any.
        :param dry_run: ``True`` (the default): delete nothing, report; ``False``: delete, then gc.
        :param grace: as for :meth:`gc`, for the gc that follows; default
            :data:`DEFAULT_GC_GRACE`.
        :raises InvalidArgumentError: ``k`` is negative or not an int (a bool included), ``per`` or
            ``mode`` is unknown, ``grace`` is negative or not finite, or a label key or value is of
            the wrong type. Nothing is deleted.
        :raises TypeError: ``grace`` is neither a number nor a timedelta.
        :raises StoreIOError: the OS (on S3: a request) refused an index write or a deletion.
        :returns: a :class:`RetentionReport`.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidArgumentError(f"k must be a non-negative int, got {k!r}")
        if per not in (None, "run", "graph", "node"):
            raise InvalidArgumentError(f'per must be None, "run", "graph" or "node", got {per!r}')
        secs = _grace_seconds(grace)
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, None)
        plan = self._core.keep_best(f, metric, mode, k, per or "all", bool(dry_run))
        if dry_run:
            gc = self._core.gc(True, secs, plan["delete"])
        else:
            gc = self._core.gc(False, secs)
        return RetentionReport(
            dry_run=bool(dry_run),
            deleted=tuple(plan["delete"]),
            kept=plan["kept"],
            kept_pinned=plan["kept_pinned"],
            unranked=plan["unranked"],
            groups=plan["groups"],
            gc=_gc_report(gc),
        )
