"""Space accounting, garbage collection, keep-best retention and the full verify report.

- stats: exact numbers on a store with duplicate payloads, a deleted record, an orphan, and
  staging leftovers (a staged file, a staged directory, an open writer's temp file).
- gc: a dry run deletes nothing; a real run deletes exactly the unreferenced blobs, never a
  live or pinned one, nor one shared with a live record, nor a file of a live directory
  artifact; the grace period keeps fresh orphans, counted from when the blob got its name.
- keep_best: the top k of each group plus every pinned record survive; unranked records
  survive; a dry run deletes nothing and previews what gc would reclaim.
- verify_report: a flipped byte, a missing blob, an orphan and a stray file are each found;
  progress is reported and an exception from the callback stops the check.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest

import runstash
from tests.conftest import blob_files


@pytest.fixture
def store(tmp_path: Path) -> runstash.Store:
    """These tests are about blob files: no payload is packed into the index log."""
    return runstash.Store(tmp_path / "store", durability="os", pack_max=0)


def blob_set(store: runstash.Store) -> set[str]:
    return {f"{store.hash_algo}:{p.parent.name}{p.name}" for p in blob_files(store.root)}


def flip_byte(path: str | Path, offset: int = 0) -> None:
    """Flip one byte of a read-only blob in place (chmod, flip, chmod back)."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.chmod(path, 0o444)


# -- stats -------------------------------------------------------------------------------


def test_stats_with_duplicates_deletes_and_staging_leftovers(store: runstash.Store) -> None:
    a = store.put_bytes(b"a" * 1000, kind="x")
    store.put_bytes(b"a" * 1000, kind="x")  # same bytes: a second record, one blob
    store.put_bytes(b"a" * 1000, kind="y", pin=True)
    store.put_bytes(b"b" * 300, kind="x")
    gone = store.put_bytes(b"c" * 50, kind="x")
    store.delete(gone)
    staged = store.stage(".csv")
    Path(staged).write_bytes(b"x" * 7)
    sdir = Path(store._core.stage_dir(".d"))
    (sdir / "f1").write_bytes(b"y" * 11)
    (sdir / "sub").mkdir()
    (sdir / "sub" / "f2").write_bytes(b"z" * 13)
    with store.writer(".bin") as w:
        w.write(b"q" * 5)
        w.flush()
        s = store.stats()  # the open writer's temp file is a staging entry too

    assert s.records == 4
    assert s.live_bytes == 3 * 1000 + 300
    assert (s.blob_count, s.blob_bytes) == (2, 1300)
    assert s.dedup_ratio == pytest.approx(3300 / 1300)
    assert (s.disk_blobs, s.disk_bytes) == (3, 1350)
    assert (s.orphan_blobs, s.orphan_bytes) == (1, 50)
    assert (s.missing_blobs, s.stray_files) == (0, 0)
    assert (s.staging_files, s.staging_bytes) == (3, 7 + 11 + 13 + 5)
    assert s.index_bytes > 0
    assert s.to_dict()["records"] == 4
    assert a.size == 1000

    after = store.stats()  # the writer committed: one more record and blob, one less temp
    assert (after.records, after.staging_files, after.disk_blobs) == (5, 2, 4)


def test_stats_of_an_empty_store(store: runstash.Store) -> None:
    s = store.stats()
    assert (s.records, s.live_bytes, s.blob_count, s.disk_blobs, s.staging_files) == (0,) * 5
    assert s.dedup_ratio == 1.0


# -- gc ----------------------------------------------------------------------------------


def make_garbage(store: runstash.Store) -> tuple[set[str], set[str]]:
    """A store with live, pinned, shared and orphaned blobs: (hashes that must stay, hashes
    that are garbage)."""
    live = store.put_bytes(b"live", kind="x")
    pinned = store.put_bytes(b"pinned", kind="x", pin=True)
    shared_dead = store.put_bytes(b"shared", kind="x")
    shared_live = store.put_bytes(b"shared", kind="y")
    dead1 = store.put_bytes(b"dead one", kind="x")
    dead2 = store.put_bytes(b"dead two", kind="x", pin=True)
    store.pin(dead2, False)
    for a in (shared_dead, dead1, dead2):
        store.delete(a)
    keep = {live.hash, pinned.hash, shared_live.hash}
    assert shared_dead.hash in keep
    return keep, {dead1.hash, dead2.hash}


def test_gc_dry_run_deletes_nothing(store: runstash.Store) -> None:
    keep, garbage = make_garbage(store)
    before = blob_set(store)
    report = store.gc(grace=0)  # dry run is the default
    assert report.dry_run
    assert set(report.deleted) == garbage
    assert report.deleted_bytes == 16
    assert blob_set(store) == before
    assert not report.compacted


def test_gc_deletes_exactly_the_orphans(store: runstash.Store) -> None:
    keep, garbage = make_garbage(store)
    report = store.gc(dry_run=False, grace=0)
    assert not report.dry_run
    assert set(report.deleted) == garbage
    assert (report.deleted_count, report.deleted_bytes) == (2, 16)
    assert report.compacted
    assert blob_set(store) == keep
    for a in store.list():
        assert store.read_bytes(a, verify=True)
    assert store.verify_report().ok
    assert store.gc(dry_run=False, grace=0).deleted == ()


def test_gc_grace_keeps_fresh_orphans(store: runstash.Store) -> None:
    _, garbage = make_garbage(store)
    report = store.gc(dry_run=False)  # default grace: 15 minutes
    assert report.deleted == ()
    assert (report.recent, report.recent_bytes) == (2, 16)
    assert blob_set(store) >= garbage
    assert store.gc(dry_run=False, grace=timedelta(hours=1)).deleted == ()
    assert runstash.DEFAULT_GC_GRACE == timedelta(minutes=15)


def test_gc_grace_counts_from_when_the_blob_got_its_name(store: runstash.Store) -> None:
    """A file written long ago in staging and ingested now is new to gc: the rename sets its
    ctime, even though its mtime is old."""
    path = store.stage(".bin")
    Path(path).write_bytes(b"old bytes, new blob")
    old = time.time() - 7200
    os.utime(path, (old, old))
    art = store.ingest(path, kind="x")
    assert os.stat(store.path_of(art)).st_mtime == pytest.approx(old)
    store.delete(art)
    report = store.gc(dry_run=False)
    assert report.deleted == () and report.recent == 1
    assert store.exists(art.hash)


def test_gc_keeps_the_files_of_live_directory_artifacts(tmp_path: Path) -> None:
    import asyncio

    store = runstash.Store(tmp_path / "store", durability="os", pack_max=0)
    facade = runstash.ArtifactFacade(store, run_id="r")
    src = tmp_path / "dir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"file a")
    (src / "sub" / "b.txt").write_bytes(b"file b")
    art = asyncio.run(facade.ingest_dir(str(src), kind="dir", cleanup=False))
    files = {runstash.hash_bytes(b"file a"), runstash.hash_bytes(b"file b")}
    assert store.gc(dry_run=False, grace=0).deleted == ()
    assert files <= blob_set(store)
    assert store.stats().orphan_blobs == 0
    store.delete(art.id)
    assert set(store.gc(dry_run=False, grace=0).deleted) == files | {art.hash}


def test_gc_rejects_a_bad_grace(store: runstash.Store) -> None:
    with pytest.raises(runstash.InvalidArgumentError):
        store.gc(grace=-1)
    with pytest.raises(runstash.InvalidArgumentError):
        store.gc(grace=float("nan"))
    with pytest.raises(TypeError):
        store.gc(grace="15m")  # type: ignore[arg-type]


# -- keep_best ---------------------------------------------------------------------------


def sweep(store: runstash.Store) -> dict[str, runstash.Artifact]:
    """Models in two runs, two graphs in r1, with one pinned loser and one unranked."""
    arts = {}
    for name, run, graph, node, acc, pin in [
        ("r1g1a", "r1", "g1", "n1", 0.9, False),
        ("r1g1b", "r1", "g1", "n2", 0.8, False),
        ("r1g1c", "r1", "g1", "n1", 0.7, False),
        ("r1g2a", "r1", "g2", "n1", 0.6, False),
        ("r1g2b", "r1", "g2", "n1", 0.1, True),
        ("r2a", "r2", None, None, 0.5, False),
        ("r2b", "r2", None, None, 0.4, False),
    ]:
        arts[name] = store.put_bytes(
            name.encode(),
            kind="model",
            metrics={"acc": acc},
            run_id=run,
            graph_id=graph,
            node_id=node,
            pin=pin,
        )
    arts["unranked"] = store.put_bytes(b"u", kind="model", run_id="r1")
    arts["other"] = store.put_bytes(b"o", kind="image", metrics={"acc": 0.0}, run_id="r1")
    return arts


def survivors(store: runstash.Store, arts: dict[str, runstash.Artifact]) -> set[str]:
    ids = {a.id for a in store.list()}
    return {name for name, a in arts.items() if a.id in ids}


@pytest.mark.parametrize(
    ("per", "k", "kept"),
    [
        (None, 1, {"r1g1a"}),
        (None, 3, {"r1g1a", "r1g1b", "r1g1c"}),
        ("run", 1, {"r1g1a", "r2a"}),
        ("graph", 1, {"r1g1a", "r1g2a", "r2a"}),
        ("node", 1, {"r1g1a", "r1g1b", "r1g2a", "r2a"}),
        ("run", 0, set()),
    ],
)
def test_keep_best_keeps_top_k_per_group_and_all_pinned(
    store: runstash.Store, per: str | None, k: int, kept: set[str]
) -> None:
    arts = sweep(store)
    always = {"r1g2b", "unranked", "other"}  # pinned, no metric, another kind
    before = blob_set(store)
    dry = store.keep_best(kind="model", metric="acc", mode="max", k=k, per=per, grace=0)  # type: ignore[arg-type]
    assert dry.dry_run
    assert survivors(store, arts) == set(arts), "a dry run deletes nothing"
    assert blob_set(store) == before
    doomed = set(arts) - kept - always
    assert {a.id for n, a in arts.items() if n in doomed} == set(dry.deleted)
    assert set(dry.gc.deleted) == {arts[n].hash for n in doomed}

    real = store.keep_best(
        kind="model",
        metric="acc",
        mode="max",
        k=k,
        per=per,  # type: ignore[arg-type]
        dry_run=False,
        grace=0,
    )
    assert set(real.deleted) == set(dry.deleted)
    assert survivors(store, arts) == kept | always
    assert real.kept_pinned == (1 if "r1g2b" not in kept else 0)
    assert real.unranked == 1
    assert set(real.gc.deleted) == {arts[n].hash for n in doomed}
    assert blob_set(store) == {a.hash for n, a in arts.items() if n in kept | always}


def test_keep_best_min_mode_and_labels(store: runstash.Store) -> None:
    for i in range(5):
        store.put_bytes(b"%d" % i, kind="ckpt", metrics={"loss": float(i)}, labels={"t": "a"})
    store.put_bytes(b"b", kind="ckpt", metrics={"loss": 9.0}, labels={"t": "b"})
    r = store.keep_best(
        kind="ckpt", metric="loss", mode="min", k=2, labels={"t": "a"}, dry_run=False, grace=0
    )
    assert len(r.deleted) == 3 and r.groups == 1
    assert sorted(a.metrics["loss"] for a in store.list()) == [0.0, 1.0, 9.0]
    assert r.gc.deleted_count == 3


def test_keep_best_rejects_bad_arguments(store: runstash.Store) -> None:
    with pytest.raises(runstash.InvalidArgumentError):
        store.keep_best(kind="m", metric="acc", mode="best", k=1)
    with pytest.raises(runstash.InvalidArgumentError):
        store.keep_best(kind="m", metric="acc", mode="max", k=-1)
    with pytest.raises(runstash.InvalidArgumentError):
        store.keep_best(kind="m", metric="acc", mode="max", k=1, per="project")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.keep_best(kind="m", metric="acc", k=1)  # type: ignore[call-arg]


# -- verify_report -----------------------------------------------------------------------


def test_verify_report_finds_flipped_missing_orphaned_and_stray(store: runstash.Store) -> None:
    good = store.put_bytes(b"good bytes", kind="x")
    flipped = store.put_bytes(b"flip me", kind="x", pin=True)
    lost = store.put_bytes(b"lost", kind="x")
    lost2 = store.put_bytes(b"lost", kind="y")
    orphan = store.put_bytes(b"orphan", kind="x")
    store.delete(orphan)
    assert store.verify_report().intact

    flipped_path = store.path_of(flipped)
    flip_byte(flipped_path, 3)
    assert not os.stat(store.path_of(flipped)).st_mode & stat.S_IWUSR
    os.unlink(store.path_of(lost))
    stray = Path(store.root, "blobs", "notes.txt")
    stray.write_text("?")

    calls: list[tuple[int, int, int, int]] = []
    r = store.verify_report(progress=lambda *a: calls.append(a))
    assert r.checked == 3
    assert [c.hash for c in r.corrupt] == [flipped.hash]
    assert r.corrupt[0].path == flipped_path
    # Found damage is moved aside, and reported there.
    assert [(q.hash, q.size) for q in r.quarantined] == [(flipped.hash, flipped.size)]
    assert len(r.missing) == 1 and r.missing[0].hash == lost.hash
    assert set(r.missing[0].records) == {lost.id, lost2.id}
    assert [(o.hash, o.size) for o in r.orphaned] == [(orphan.hash, 6)]
    assert r.stray == (str(stray),)
    assert not r.intact and not r.ok
    assert calls[-1] == (4, 4, calls[-1][3], calls[-1][3])
    d = r.to_dict()
    assert d["ok"] is False and d["missing"][0]["records"]
    assert good.hash not in {c.hash for c in r.corrupt}


def test_verify_report_orphans_alone_are_intact(store: runstash.Store) -> None:
    a = store.put_bytes(b"x", kind="x")
    store.delete(a)
    r = store.verify_report()
    assert r.intact and not r.ok and len(r.orphaned) == 1


def test_verify_report_progress_can_stop_it(store: runstash.Store) -> None:
    for i in range(3):
        store.put_bytes(b"%d" % i, kind="x")

    class Stop(Exception):
        pass

    def progress(done: int, total: int, nbytes: int, total_bytes: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        store.verify_report(progress=progress)


def test_packed_blobs_are_live_verified_and_never_gc_files(tmp_path: Path) -> None:
    """Packed payloads (bytes in the index log) count as present: stats and verify_report
    see them, verify_report re-hashes them, and gc has no file of theirs to delete."""
    s = runstash.Store(tmp_path / "packed", durability="os")
    keep = s.put_bytes(b"packed and live", kind="k")
    gone = s.put_bytes(b"packed then deleted", kind="k")
    s.delete(gone.id)
    assert s.stats().missing_blobs == 0
    report = s.verify_report()
    assert report.ok and report.checked == 1, report
    g = s.gc(dry_run=False, grace=0)
    assert g.scanned == 0 and g.deleted == ()
    assert g.compacted, "deleted packed bytes are reclaimed by compacting the log"
    assert s.read_bytes(keep, verify=True) == b"packed and live"
    assert not s.exists(gone.hash)
    s.delete(keep.id)
    s.gc(dry_run=False, grace=0)
    segments = sorted(Path(s.root, "index").glob("log-*"))
    assert len(segments) == 1 and b"packed and live" not in segments[0].read_bytes()


def test_gc_removes_the_built_trees_of_deleted_directory_artifacts(tmp_path: Path) -> None:
    # Before: trees/<hash>/ stayed forever, and its hard links kept every deleted file's
    # bytes on disk after gc had "deleted" them.
    store = runstash.Store(tmp_path / "s", durability="os", pack_max=0)
    trees = []
    for name in ("gone", "kept"):
        d = Path(store.stage_dir())
        (d / f"{name}.bin").write_bytes(name.encode() * 1000)
        art = store.ingest_dir(d, kind="dir")
        trees.append((art, Path(store.dir_of(art))))
    (gone, gone_tree), (kept, kept_tree) = trees
    store.delete(gone.id)
    preview = store.gc(dry_run=True, grace=0)
    assert preview.trees_removed == 1 and gone_tree.is_dir()
    report = store.gc(dry_run=False, grace=0)
    assert report.trees_removed == 1 and report.to_dict()["trees_removed"] == 1
    assert not gone_tree.exists()
    assert (kept_tree / "kept.bin").read_bytes() == b"kept" * 1000
    assert Path(store.dir_of(kept)) == kept_tree
    assert store.gc(dry_run=False, grace=0).trees_removed == 0
    # Nothing else under trees/ is touched.
    stray = Path(store.root, "trees", "not-a-tree")
    stray.mkdir()
    store.gc(dry_run=False, grace=0)
    assert stray.is_dir()
