"""The reports of :class:`~runstash.Store`'s maintenance calls: plain frozen dataclasses
(``to_dict()`` for JSON), built from what the engine returns.

``stats()`` gives :class:`StoreStats`, ``verify()`` :class:`VerifyReport`, ``verify_report()``
:class:`IntegrityReport` (with :class:`MissingBlob`, :class:`CorruptBlob`,
:class:`QuarantinedBlob`, :class:`OrphanedBlob`), ``gc()`` :class:`GcReport` and
``keep_best()`` :class:`RetentionReport`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CorruptBlob",
    "GcReport",
    "IntegrityReport",
    "MissingBlob",
    "OrphanedBlob",
    "QuarantinedBlob",
    "RetentionReport",
    "StoreStats",
    "VerifyReport",
]


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Store.verify` found when checking every blob."""

    checked: int
    #: Paths of damaged blobs (moved to ``quarantine/`` by the check).
    corrupt: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    #: Hashes of blobs that live records name whose bytes are nowhere (their log segment, or
    #: their file, is gone).
    missing: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every blob hashed to its name, none is missing and nothing stray was
        found."""
        return not self.corrupt and not self.stray and not self.missing


@dataclass(frozen=True)
class StoreStats:
    """Space accounting of a store, from :meth:`Store.stats`. Sizes are in bytes (file sizes,
    not disk blocks)."""

    #: Live artifact records.
    records: int
    #: Sum of the sizes of the live records: what the data would take without dedup.
    live_bytes: int
    #: Distinct blobs named by live records, and their bytes: the data after dedup.
    blob_count: int
    blob_bytes: int
    #: ``live_bytes / blob_bytes`` (1.0 for an empty store).
    dedup_ratio: float
    #: Blob files on disk, live or not, and their bytes.
    disk_blobs: int
    disk_bytes: int
    #: Blob files nothing live names: what :meth:`Store.gc` can reclaim.
    orphan_blobs: int
    orphan_bytes: int
    #: Blobs that live records name but the store lacks (see :meth:`Store.verify_report`).
    missing_blobs: int
    #: Files under ``blobs/`` that are not named like a blob.
    stray_files: int
    #: Entries left in ``staging/``: staged files never ingested, staged directories, and
    #: temp files of writers (running, or killed and not yet cleaned), with their bytes.
    staging_files: int
    staging_bytes: int
    #: The index on disk (log segments and snapshots).
    index_bytes: int
    #: Damaged blob files moved to ``quarantine/`` (never deleted by runstash), and their
    #: bytes.
    quarantined_files: int = 0
    quarantined_bytes: int = 0

    def to_dict(self) -> dict[str, int | float]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Store.gc` deleted or, in a dry run, would delete."""

    dry_run: bool
    #: Files under ``blobs/`` looked at.
    scanned: int
    #: Hashes of the blobs deleted (would be deleted), and their bytes.
    deleted: tuple[str, ...]
    deleted_bytes: int
    #: Unreferenced blobs kept because they got their name within the grace period.
    recent: int
    recent_bytes: int
    #: Candidates found live (or published again) when re-checked under the index lock.
    revived: int
    #: Whether the index was compacted first (only when something was deleted).
    compacted: bool
    #: Built trees (``<root>/trees/<hash>/``, see :meth:`Store.dir_of`) of directory
    #: artifacts no longer live, removed (would be): their links kept deleted bytes on disk.
    trees_removed: int = 0
    #: S3 stores: unreferenced blob objects marked for deletion (by this gc or an earlier
    #: one) that a later gc deletes once the store's safety interval (1.25 times its gc
    #: lease, see :class:`S3Options`) has passed, and their bytes. Always 0 on a local store.
    pending: int = 0
    pending_bytes: int = 0

    @property
    def deleted_count(self) -> int:
        """How many blobs were deleted (would be)."""
        return len(self.deleted)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        d = dataclasses.asdict(self)
        d["deleted"] = list(self.deleted)
        d["deleted_count"] = self.deleted_count
        return d


@dataclass(frozen=True)
class MissingBlob:
    """A blob that live records name but the store does not have."""

    hash: str
    #: Ids of the live records naming it (for a file of a directory artifact, the directory's).
    records: tuple[str, ...]


@dataclass(frozen=True)
class CorruptBlob:
    """A blob file whose bytes no longer hash to its name."""

    hash: str
    path: str


@dataclass(frozen=True)
class QuarantinedBlob:
    """A damaged blob file moved to ``<root>/quarantine/``: kept for inspection, never read
    or deleted by runstash. Writing the same bytes again stores a fresh copy."""

    #: The blob it was stored as (``None`` if the file's name no longer says).
    hash: str | None
    #: Where it is now.
    path: str
    size: int


@dataclass(frozen=True)
class OrphanedBlob:
    """A blob file that nothing live names (garbage for :meth:`Store.gc`, not damage)."""

    hash: str
    path: str
    size: int


@dataclass(frozen=True)
class IntegrityReport:
    """What :meth:`Store.verify_report` found: every blob re-hashed and compared with the
    index."""

    #: Blob files re-hashed, and their bytes.
    checked: int
    checked_bytes: int
    missing: tuple[MissingBlob, ...]
    corrupt: tuple[CorruptBlob, ...]
    orphaned: tuple[OrphanedBlob, ...]
    #: Files under ``blobs/`` that are not named like a blob.
    stray: tuple[str, ...]
    #: ``(path, reason)``: blob files that could not be read, live directory manifests that
    #: do not parse.
    unreadable: tuple[tuple[str, str], ...]
    #: Damaged blob files in ``quarantine/`` (found by this check or earlier ones). They do
    #: not make the store less intact once the bytes are stored again, but keep ``ok`` False
    #: until an operator removes them.
    quarantined: tuple[QuarantinedBlob, ...] = ()

    @property
    def intact(self) -> bool:
        """True when no live data is damaged: nothing missing, corrupt or unreadable."""
        return not (self.missing or self.corrupt or self.unreadable)

    @property
    def ok(self) -> bool:
        """True when nothing at all was found (orphans, stray and quarantined files
        included)."""
        return self.intact and not self.orphaned and not self.stray and not self.quarantined

    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists (JSON-ready)."""
        d = dataclasses.asdict(self)
        for k in ("stray", "unreadable"):
            d[k] = [list(x) if isinstance(x, tuple) else x for x in d[k]]
        d["intact"] = self.intact
        d["ok"] = self.ok
        return d


@dataclass(frozen=True)
class RetentionReport:
    """What :meth:`Store.keep_best` deleted or, in a dry run, would delete."""

    dry_run: bool
    #: Ids of the records deleted (would be).
    deleted: tuple[str, ...]
    #: Records kept for being in the top ``k`` of their group.
    kept: int
    #: Records beyond the top ``k`` kept because they are pinned.
    kept_pinned: int
    #: Matching records without the metric: they cannot be ranked and are kept.
    unranked: int
    #: Groups the matching records fell into.
    groups: int
    #: The garbage collection that followed (in a dry run: what it would reclaim once the
    #: records are gone).
    gc: GcReport

    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists (JSON-ready)."""
        d = dataclasses.asdict(self)
        d["deleted"] = list(self.deleted)
        d["gc"] = self.gc.to_dict()
        return d


def _gc_report(d: dict[str, Any]) -> GcReport:
    return GcReport(
        dry_run=d["dry_run"],
        scanned=d["scanned"],
        deleted=tuple(h for h, _ in d["deleted"]),
        deleted_bytes=d["deleted_bytes"],
        recent=d["recent"],
        recent_bytes=d["recent_bytes"],
        revived=d["revived"],
        compacted=d["compacted"],
        trees_removed=d.get("trees_removed", 0),
        pending=d.get("pending", 0),
        pending_bytes=d.get("pending_bytes", 0),
    )


def _integrity_report(d: dict[str, Any]) -> IntegrityReport:
    return IntegrityReport(
        checked=d["checked"],
        checked_bytes=d["checked_bytes"],
        missing=tuple(MissingBlob(h, tuple(ids)) for h, ids in d["missing"]),
        corrupt=tuple(CorruptBlob(h, p) for h, p in d["corrupt"]),
        orphaned=tuple(OrphanedBlob(h, p, n) for h, p, n in d["orphaned"]),
        stray=tuple(d["stray"]),
        unreadable=tuple((p, why) for p, why in d["unreadable"]),
        quarantined=tuple(QuarantinedBlob(h, p, n) for h, p, n in d.get("quarantined", ())),
    )
