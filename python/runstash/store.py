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
        data: bytes | bytearray | memoryview,
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
        """Store a buffer and record it as an artifact."""
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
        """Store a copy of the file at ``path`` (left untouched) and record it."""
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
        """
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
        an upload, then the staged file is removed) and record it."""
        return self._core.ingest(
            staged_path,
            _meta(kind, labels, metrics, run_id, graph_id, node_id, project_id, pin, mime),
        )

    def record_many(self, blob: BlobRef, items: Iterable[dict[str, Any]]) -> list[Artifact]:
        """Record many artifacts for one stored blob in a single index append (one lock, one
        fsync): the bulk path for imports and benchmarks. Each item is a dict of the write
        keywords (``kind``, ``labels``, ``metrics``, scope ids, ``pin``, ``mime``)."""
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
        """The artifact with this id, or None (also for a deleted one)."""
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
        """Matching artifacts, oldest first (at most ``limit``: the oldest ones)."""
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
        """How many artifacts match."""
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
        ``"max"`` or ``"min"``), otherwise oldest first."""
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
        """The best matching artifact by ``metric``, or None when none has it."""
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
        """The ``k`` best matching artifacts by ``metric``, best first."""
        if not isinstance(k, int) or k < 0:
            raise InvalidArgumentError(f"k must be a non-negative int, got {k!r}")
        f = _filter(kind, labels, run_id, graph_id, node_id, project_id, pinned)
        return self._core.top_k(f, metric, mode, k)

    def pin(self, id: str | Artifact, pinned: bool = True) -> Artifact:
        """Pin (or with ``pinned=False`` unpin) an artifact; returns the updated record.
        Raises NotFoundError for an unknown id."""
        return self._core.pin(_id(id), pinned)

    def delete(self, id: str | Artifact) -> None:
        """Remove an artifact's record. Its bytes stay until garbage collection (other records
        may share them). Raises NotFoundError for an unknown id."""
        self._core.delete(_id(id))

    def compact(self) -> None:
        """Write a snapshot of the index and start a new log segment, so reopening is fast.
        Runs by itself when a log segment passes 64 MiB. On an S3 store: one snapshot object
        takes the place of every index segment seen (readers then fetch one object instead of
        many)."""
        self._core.compact()

    def refresh(self) -> None:
        """Apply what other writers added to the index now (an S3 store; a local store is
        always current, and this does nothing)."""
        self._core.refresh()

    def flush(self) -> None:
        """Upload writes still buffered (an S3 store in ``"os"`` durability); returns when
        they are in the bucket. Does nothing otherwise."""
        self._core.flush()

    def close(self) -> None:
        """Release the store's open files (an S3 store uploads buffered writes first, and
        raises if they cannot be stored; the store is closed all the same). Reads and writes
        afterwards raise :class:`~runstash.errors.RunstashError`; ``root`` and the settings
        stay readable."""
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
        name, ``metrics.<name>``, null where absent."""
        from .export import arrow_table

        return arrow_table(self._core.columns())

    def to_polars(self) -> polars.DataFrame:
        """:meth:`to_arrow` as a polars DataFrame (labels become a list of key/value structs)."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())  # type: ignore[return-value]

    # -- reads ----------------------------------------------------------------------------

    def read_bytes(self, ref: BlobRef, *, verify: bool = False) -> bytes:
        """The bytes of a blob, by digest, URI or :class:`Artifact`. With ``verify=True`` the
        bytes are re-hashed and a mismatch raises :class:`~runstash.errors.CorruptError`."""
        return self._core.read_bytes(_ref(ref), verify)

    def open(self, ref: BlobRef) -> BinaryIO:
        """Open a blob for reading (blobs are immutable; the file is read-only). A packed
        blob gets its file first (see :meth:`path_of`)."""
        path = self._core.path_of(_ref(ref))
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns the file object
        except FileNotFoundError:
            self._core.read_bytes(_ref(ref))  # raises the store's NotFoundError
            raise

    def path_of(self, ref: BlobRef) -> str:
        """The path of a stored blob's file. A blob packed into the index log (see ``pack_max``)
        is written to its file under ``blobs/`` on first request, atomically and with the
        store's durability; later calls return the same path. Raises
        :class:`~runstash.errors.NotFoundError` when the blob is not stored."""
        return self._core.path_of(_ref(ref))

    def exists(self, ref: BlobRef) -> bool:
        """Whether the blob is stored."""
        return self._core.exists(_ref(ref))

    def verify(self, ref: BlobRef | None = None) -> bool | VerifyReport:
        """Re-hash one blob (returns whether it is intact) or, with no argument, every blob
        (returns a :class:`VerifyReport`)."""
        if ref is not None:
            return self._core.verify(_ref(ref))
        checked, corrupt, stray, missing = self._core.verify_all()
        return VerifyReport(checked, corrupt, stray, tuple(missing))

    # -- operations -----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Space accounting: records and their bytes, blobs after dedup, orphans, staging
        leftovers (see :class:`StoreStats`). Reads the index and one ``stat`` per blob file;
        hashes nothing."""
        return StoreStats(**self._core.stats())

    def verify_report(self, progress: VerifyProgress | None = None) -> IntegrityReport:
        """Re-hash every blob and compare the store with its index: blobs that live records
        name but the store lacks (missing), blobs whose bytes do not match their hash
        (corrupt), blobs nothing live names (orphaned: reclaimable, not damage), stray files.

        ``progress(done, total, bytes_done, total_bytes)`` is called at most every 0.1 s and
        after the last blob (the GIL is released in between); an exception it raises stops
        the check and propagates."""
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
        deleted."""
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
        reclaim. Blobs of records written less than ``grace`` ago stay until a later gc."""
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
