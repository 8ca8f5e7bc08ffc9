"""Crash safety of the index, with real processes, real signals and real files.

- A child writing artifacts in durability "fsync" is killed with SIGKILL at random moments, 50
  times on one store. After each kill the store reopens; every record's blob exists and hashes
  right, no id is duplicated, nothing from earlier rounds is lost, and the child's records are
  exactly what it acknowledged through its stdout pipe, in order, plus at most the one write
  that was in flight.
- The tail of the log is truncated at cut points inside the last frame, or has bytes flipped in
  it (or in the middle of the log): the store opens, keeps exactly the frames before the bad
  one, and new writes after the recovery survive another reopen (the bad tail was truncated,
  not left in place).
- A store or index file of a newer format version is refused with IncompatibleStoreError and
  is left untouched.
"""

from __future__ import annotations

import json
import random
import signal
import struct
import time
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python
from tests.index_helpers import (
    assert_segments_well_formed,
    crc32c,
    flip_byte,
    frame_payload,
    last_log_segment,
    log_segments,
    parse_frames,
    snapshots,
    truncate,
)

# -- (a) SIGKILL at random moments ----------------------------------------------------------

ACK_LOOP = r"""
import os, random, sys, runstash
root, rnd = sys.argv[1], int(sys.argv[2])
rng = random.Random(rnd)
s = runstash.Store(root, durability="fsync")
out = sys.stdout
i = 0
while True:
    data = b"%d:%d:" % (rnd, i) + os.urandom(rng.choice((0, 1, 100, 5000, 70000)))
    a = s.put_bytes(data, kind="crash", labels={"round": rnd, "i": i}, metrics={"i": float(i)})
    out.write(f"{a.id} {a.hash}\n")
    out.flush()
    i += 1
"""


def parse_acks(raw: bytes) -> list[tuple[str, str]]:
    """Complete ack lines only (a line is written with one write(2), after put returned)."""
    acks = []
    for line in raw.splitlines(keepends=True):
        if line.endswith(b"\n"):
            art_id, digest = line.decode().split()
            acks.append((art_id, digest))
    return acks


def check_all_blobs(store: runstash.Store, arts: list) -> None:
    for a in arts:
        path = Path(store.path_of(a.hash))
        assert path.is_file(), f"record {a.id} names a blob that is not on disk: {a.hash}"
        assert store.verify(a.hash) is True, f"blob of {a.id} does not hash right"
        assert runstash.hash_file(path) == a.hash
        assert a.size == path.stat().st_size


def test_sigkill_writer_at_random_moments_50_times(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="fsync").close()
    rng = random.Random(20261123)
    known: dict[str, str] = {}  # id -> hash of every record seen after earlier rounds
    total_extra = 0
    for rnd in range(50):
        child = spawn_python(ACK_LOOP, str(root), str(rnd))
        assert child.stdout is not None and child.stderr is not None
        acked: list[tuple[str, str]] = []
        want = rng.choice((0, 0, 1, 1, 2, 3, 5, 8, 13, 21, 34))
        while len(acked) < want:
            line = child.stdout.readline()
            if not line:
                child.wait()
                pytest.fail(f"round {rnd}: child died early: {child.stderr.read().decode()}")
            acked.extend(parse_acks(line))
        if rng.random() < 0.6:
            time.sleep(rng.uniform(0, 0.015))  # a random moment, not a wait for a state
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL, child.stderr.read().decode()
        acked.extend(parse_acks(child.stdout.read()))  # acks still in the pipe
        child.stdout.close()
        child.stderr.close()

        with runstash.Store(root, durability="fsync") as store:
            everything = store.list()
            all_ids = [a.id for a in everything]
            assert len(all_ids) == len(set(all_ids)), f"round {rnd}: duplicated ids"
            assert store.count() == len(everything)
            check_all_blobs(store, everything)
            by_id = {a.id: a for a in everything}
            for art_id, digest in known.items():
                assert art_id in by_id, f"round {rnd}: record {art_id} of an earlier round lost"
                assert by_id[art_id].hash == digest

            mine = store.list(labels={"round": rnd})
            mine_ids = [a.id for a in mine]
            acked_ids = [i for i, _ in acked]
            assert mine_ids[: len(acked)] == acked_ids, (
                f"round {rnd}: records {mine_ids} are not the acknowledged {acked_ids} "
                "in order (an acknowledged write was lost or reordered)"
            )
            extra = len(mine) - len(acked)
            assert extra in (0, 1), (
                f"round {rnd}: {extra} records beyond the {len(acked)} acknowledged; at most "
                "the one write in flight may be there"
            )
            total_extra += extra
            assert [a.hash for a in mine[: len(acked)]] == [h for _, h in acked]
            assert [a.labels["i"] for a in mine] == list(range(len(mine)))
            assert len(everything) == len(known) + len(mine), "records from nowhere"
            if mine:
                best = store.best(metric="i", labels={"round": rnd})
                assert best is not None and best.id == mine_ids[-1]
            known.update((a.id, a.hash) for a in everything)
            assert not store.verify().corrupt
    # The store took all of it and is still writable and readable.
    with runstash.Store(root, durability="fsync") as store:
        extra = store.put_bytes(b"after the storm", kind="crash")
        assert store.count() == len(known) + 1
    with runstash.Store(root, durability="os") as store:
        assert store.get(extra.id) == extra
        assert store.count(kind="crash") == len(known) + 1
    assert_segments_well_formed(root)


ACK_LOOP_COMPACTING = r"""
import os, random, sys, runstash
root, rnd = sys.argv[1], int(sys.argv[2])
rng = random.Random(rnd)
s = runstash.Store(root, durability=rng.choice(("fsync", "os")))
out = sys.stdout
i = 0
while True:
    a = s.put_bytes(b"c%d:%d:" % (rnd, i) + os.urandom(rng.choice((0, 50, 3000))),
                    kind="compacting", labels={"round": rnd, "i": i})
    if i % 7 == 3:
        s.pin(a.id)
    out.write(f"{a.id} {a.hash}\n")
    out.flush()
    if rng.random() < 0.3:
        s.compact()
    i += 1
"""


def test_sigkill_writer_that_compacts(tmp_path: Path) -> None:
    """Kills land during writes, pins and compactions (seal, new segment, snapshot, removal
    of old files): every reopen finds exactly the acknowledged prefix (plus at most the write
    in flight), pins included, nothing lost from earlier rounds."""
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    rng = random.Random(99)
    known: dict[str, bool] = {}  # id -> pinned
    for rnd in range(25):
        child = spawn_python(ACK_LOOP_COMPACTING, str(root), str(rnd))
        assert child.stdout is not None and child.stderr is not None
        acked: list[tuple[str, str]] = []
        want = rng.choice((1, 2, 4, 8, 16, 30))
        while len(acked) < want:
            line = child.stdout.readline()
            if not line:
                child.wait()
                pytest.fail(f"round {rnd}: child died early: {child.stderr.read().decode()}")
            acked.extend(parse_acks(line))
        time.sleep(rng.uniform(0, 0.01))  # a random moment, not a wait for a state
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL, child.stderr.read().decode()
        acked.extend(parse_acks(child.stdout.read()))
        child.stdout.close()
        child.stderr.close()
        with runstash.Store(root, durability="os") as store:
            everything = store.list()
            all_ids = [a.id for a in everything]
            assert len(all_ids) == len(set(all_ids)), f"round {rnd}: duplicated ids"
            check_all_blobs(store, everything)
            by_id = {a.id: a for a in everything}
            for art_id, pinned in known.items():
                assert art_id in by_id, f"round {rnd}: record {art_id} of an earlier round lost"
                assert by_id[art_id].pinned is pinned
            mine = store.list(labels={"round": rnd})
            assert [a.id for a in mine[: len(acked)]] == [i for i, _ in acked], f"round {rnd}"
            assert [a.hash for a in mine[: len(acked)]] == [h for _, h in acked]
            assert len(mine) - len(acked) in (0, 1), f"round {rnd}: records from nowhere"
            # an acknowledged write's pin (i % 7 == 3) was made before its ack
            for a in mine[: len(acked)]:
                if a.labels["i"] % 7 == 3:
                    assert a.pinned, f"round {rnd}: pin of acknowledged {a.id} lost"
            assert len(everything) == len(known) + len(mine)
            known.update((a.id, a.pinned) for a in everything)
    assert_segments_well_formed(root)


# -- (b) a torn or corrupt log tail ---------------------------------------------------------

WRITE_N = r"""
import os, sys, runstash
# pack_max=0: one log frame per put (blobs as files), so the tests can aim at frame bytes
s = runstash.Store(sys.argv[1], durability="os", pack_max=0)
start = int(sys.argv[3])
for i in range(start, start + int(sys.argv[2])):
    a = s.put_bytes(b"tail-%d" % i, kind="t", labels={"i": i}, metrics={"m": float(i)})
    print(a.id, flush=True)
os._exit(0)  # no close(): the log is left exactly as the writes made it
"""

N = 12


def make_store(root: Path, n: int = N, start: int = 0) -> list[str]:
    """Write n artifacts (labels {"i": i}, metrics {"m": i} for i from `start`) in a child
    that exits without closing the store; returns their ids."""
    child = spawn_python(WRITE_N, str(root), str(n), str(start))
    out, err = child.communicate()
    assert child.returncode == 0, err.decode()
    art_ids = out.decode().split()
    assert len(art_ids) == n
    return art_ids


def put_frames(root: Path, n: int = N) -> tuple[Path, list]:
    """The last log segment and its frames: a header frame, then one frame per put."""
    seg = last_log_segment(root)
    frames, good_end = parse_frames(seg)
    assert good_end == seg.stat().st_size, "a freshly written log is well formed"
    assert len(frames) == n + 1, (
        f"expected a header frame and {n} put frames in {seg.name}, found {len(frames)}"
    )
    return seg, frames


def check_recovered(root: Path, expect_ids: list[str]) -> None:
    """The store opens with exactly `expect_ids`, takes new writes, and those survive."""
    with runstash.Store(root, durability="os") as s:
        assert [a.id for a in s.list()] == expect_ids
        assert s.count() == len(expect_ids)
        for i, art_id in enumerate(expect_ids):
            a = s.get(art_id)
            assert a is not None and a.labels == {"i": i} and s.verify(a.hash)
        best = s.best(metric="m")
        assert (best.id if best else None) == (expect_ids[-1] if expect_ids else None)
        new1 = s.put_bytes(b"after recovery 1", kind="t", metrics={"m": -1.0})
        new2 = s.put_bytes(b"after recovery 2", kind="t", pin=True)
        assert [a.id for a in s.list()] == [*expect_ids, new1.id, new2.id]
    with runstash.Store(root, durability="os") as s:
        assert [a.id for a in s.list()] == [*expect_ids, new1.id, new2.id], (
            "writes made after recovery were lost: the bad tail was left in place"
        )
        assert s.get(new2.id) == new2 and s.get(new1.id) == new1
        assert s.best(metric="m", mode="min") == new1
    assert_segments_well_formed(root)


# Cut points inside the last frame, relative to (frame start, payload start, frame end).
CUTS = {
    "at-frame-start": lambda f: f.start,
    "1-byte-of-length": lambda f: f.start + 1,
    "whole-length": lambda f: f.start + 4,
    "half-crc": lambda f: f.start + 6,
    "header-only": lambda f: f.payload_start,
    "1-payload-byte": lambda f: f.payload_start + 1,
    "half-payload": lambda f: f.payload_start + f.length // 2,
    "all-but-1-byte": lambda f: f.end - 1,
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncated_last_frame(tmp_path: Path, cut: str) -> None:
    root = tmp_path / "store"
    art_ids = make_store(root)
    seg, frames = put_frames(root)
    truncate(seg, CUTS[cut](frames[-1]))
    check_recovered(root, art_ids[:-1])


def test_untouched_log_and_cut_at_the_end(tmp_path: Path) -> None:
    root = tmp_path / "store"
    art_ids = make_store(root)
    seg, frames = put_frames(root)
    truncate(seg, frames[-1].end)  # a cut exactly at the end: nothing lost
    check_recovered(root, art_ids)


@pytest.mark.parametrize(
    "garbage",
    [b"\x07", b"\x10\x00\x00", b"\x10\x00\x00\x00\xde\xad", bytes(range(1, 40))],
    ids=["1-byte", "3-bytes", "torn-header", "random-frame"],
)
def test_garbage_after_the_last_frame(tmp_path: Path, garbage: bytes) -> None:
    root = tmp_path / "store"
    art_ids = make_store(root)
    seg, _ = put_frames(root)
    with open(seg, "ab") as f:
        f.write(garbage)
    check_recovered(root, art_ids)


FLIPS = {
    "length-low-byte": lambda f: f.start,
    "length-high-byte": lambda f: f.start + 3,
    "crc": lambda f: f.start + 5,
    "first-payload-byte": lambda f: f.payload_start,
    "middle-payload-byte": lambda f: f.payload_start + f.length // 2,
    "last-payload-byte": lambda f: f.end - 1,
}


@pytest.mark.parametrize("where", sorted(FLIPS))
def test_flipped_byte_in_last_frame(tmp_path: Path, where: str) -> None:
    root = tmp_path / "store"
    art_ids = make_store(root)
    seg, frames = put_frames(root)
    flip_byte(seg, FLIPS[where](frames[-1]))
    check_recovered(root, art_ids[:-1])


@pytest.mark.parametrize("bad", [1, N // 2, N - 1])
def test_flipped_byte_in_the_middle_of_the_log(tmp_path: Path, bad: int) -> None:
    """Frame `bad` (1 = the first put) is corrupt and valid frames follow it: that is damage,
    not a torn tail, so opening refuses with CorruptError naming the segment and offset, and
    the log is left as it is (cutting it there would drop the good records after it)."""
    root = tmp_path / "store"
    make_store(root)
    seg, frames = put_frames(root)
    f = frames[bad]
    flip_byte(seg, f.payload_start + f.length // 2)
    damaged = seg.read_bytes()
    with pytest.raises(runstash.CorruptError, match=f"{seg.name}.*damaged at byte {f.start}"):
        runstash.Store(root, durability="os")
    assert seg.read_bytes() == damaged, "a damaged log must not be truncated"


def test_torn_tail_after_compaction(tmp_path: Path) -> None:
    """Snapshot + a torn tail in the segment after it: the snapshot's records and the good
    frames after it are kept."""
    root = tmp_path / "store"
    art_ids = make_store(root, 5)
    with runstash.Store(root, durability="os") as s:
        s.compact()
        s.pin(art_ids[0])
    assert snapshots(root), "compact() writes a snapshot"
    more = make_store(root, 4, start=5)
    seg = last_log_segment(root)
    frames, _ = parse_frames(seg)
    assert len(frames) >= 3, "the segment after the snapshot holds the later frames"
    truncate(seg, frames[-1].end - 2)
    check_recovered(root, art_ids + more[:-1])
    with runstash.Store(root, durability="os") as s:
        assert s.get(art_ids[0]).pinned is True


# -- (c) a newer format is refused ----------------------------------------------------------


def index_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(root, "index").iterdir()) if p.is_file()}


def test_newer_store_json_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    art_ids = make_store(root, 3)
    meta_path = root / "STORE.json"
    meta = json.loads(meta_path.read_text())
    original = meta_path.read_text()
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    before = index_bytes(root)
    with pytest.raises(runstash.IncompatibleStoreError):
        runstash.Store(root, durability="os")
    assert index_bytes(root) == before, "a refused open must not touch the index"
    meta_path.write_text(original)
    with runstash.Store(root, durability="os") as s:
        assert [a.id for a in s.list()] == art_ids


def _bump_version(payload: bytes) -> bytes | None:
    """The header payload with its format version raised, if the layout is recognised: a JSON
    object with a "*version*" key, or a magic name (b"runstash-log", b"runstash-snapshot")
    followed by a u32 LE version."""
    if payload[:1] == b"{":
        obj = json.loads(payload)
        keys = [k for k, v in obj.items() if "version" in k and type(v) is int]
        if not keys:
            return None
        for k in keys:
            obj[k] = obj[k] + 1000
        return json.dumps(obj).encode()
    for magic in (b"runstash-snapshot", b"runstash-log"):
        at = payload.find(magic)
        if at >= 0 and len(payload) >= at + len(magic) + 4:
            v = at + len(magic)
            (version,) = struct.unpack_from("<I", payload, v)
            if not 1 <= version <= 10:
                return None
            return payload[:v] + struct.pack("<I", version + 1000) + payload[v + 4 :]
    return None


def _rewrite_first_frame(path: Path) -> bool:
    frames, _ = parse_frames(path)
    if not frames:
        return False
    data = path.read_bytes()
    first = frames[0]
    new = _bump_version(data[first.payload_start : first.end])
    if new is None:
        return False
    head = struct.pack("<II", len(new), crc32c(new))
    path.write_bytes(head + new + data[first.end :])
    return True


def test_newer_log_segment_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_store(root, 3)
    seg = last_log_segment(root)
    header = frame_payload(seg, parse_frames(seg)[0][0])
    if not _rewrite_first_frame(seg):
        pytest.skip(f"log header layout not recognised: {header[:64]!r}")
    before = index_bytes(root)
    with pytest.raises(runstash.IncompatibleStoreError):
        runstash.Store(root, durability="os")
    assert index_bytes(root) == before, "a log of a newer version must not be truncated"
    assert len(log_segments(root)) >= 1


def test_newer_snapshot_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_store(root, 3)
    with runstash.Store(root, durability="os") as s:
        s.compact()
    snaps = snapshots(root)
    assert snaps, "compact() writes a snapshot"
    frames, end = parse_frames(snaps[-1])
    if not frames or not _rewrite_first_frame(snaps[-1]):
        pytest.skip("snapshot header layout not recognised")
    before = index_bytes(root)
    with pytest.raises(runstash.IncompatibleStoreError):
        runstash.Store(root, durability="os")
    assert index_bytes(root) == before
