"""Corruption of stored bytes: it is found, or refused, and never served as good data.

- Blobs: a flipped bit (first, middle, last byte), a truncation, an appended byte, or other
  bytes of the same size, in blob files of several sizes (20 KB, 17 KB, 70 KB, over 1 MiB:
  the memory-mapped hashing path), each stored through a different write path. Each
  is caught by ``Store.verify()`` (exactly that path reported corrupt, the others checked and
  clean), by ``Store.verify(ref)``, and by ``read_bytes(..., verify=True)`` (CorruptError);
  restoring the byte makes all three clean again. A stray file under ``blobs/`` is reported.
- Log: every byte of a small log segment (a header frame and put, pin, unpin and delete
  frames), in turn, is XORed with a random non-zero byte (an error burst of at most 8 bits,
  which CRC-32C always detects). A damaged header refuses the open with CorruptError and
  leaves the file as it was; a damaged operation frame opens to exactly the operations before
  it (a prefix, with pins and deletes applied) and cuts the bad frame and all after it. The
  older tests in tests/test_index_crash.py hit chosen offsets of put frames; this sweeps all.
- Snapshot: every byte flipped, and every truncation, of a snapshot that holds records,
  labels, metrics, pins and a deletion: the open is refused with CorruptError and the index
  directory is left byte-for-byte as it was; the store never opens with other records. A
  snapshot that is missing (deleted, or left out of a restored backup) is refused too,
  rather than reopening with only the records written after it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import runstash
from tests.faults.helpers import tree, tree_diff
from tests.index_helpers import (
    assert_segments_well_formed,
    last_log_segment,
    parse_frames,
    snapshots,
)

# -- blobs ---------------------------------------------------------------------------------


def _flip(path: Path, offset: int, mask: int = 0x01) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


DAMAGE = {
    "flip-first": lambda p, n: _flip(p, 0),
    "flip-middle": lambda p, n: _flip(p, n // 2, 0x80),
    "flip-last": lambda p, n: _flip(p, n - 1, 0x10),
    "truncated": lambda p, n: (os.chmod(p, 0o644), os.truncate(p, n - 1)),
    "appended": lambda p, n: (os.chmod(p, 0o644), open(p, "ab").write(b"\0")),
    "same-size-other-bytes": lambda p, n: (os.chmod(p, 0o644), p.write_bytes(b"\xaa" * n)),
}


def _fill(store: runstash.Store, tmp_path: Path) -> dict[str, runstash.Artifact]:
    """One blob file per write path and size class (the store has pack_max=0: packed payloads
    live in the index log, where the log-damage tests cover them)."""
    rng = random.Random(5)
    arts = {"20k-put": store.put_bytes(rng.randbytes(20_000), kind="c")}
    with store.writer(".bin", kind="c") as w:
        w.write(rng.randbytes(70_000))
    assert w.artifact is not None
    arts["70k-writer"] = w.artifact
    big = tmp_path / "big.bin"
    big.write_bytes(rng.randbytes((1 << 20) * 2 + 3))
    arts["2m-save"] = store.save(big, kind="c")
    staged = store.stage(".dat")
    Path(staged).write_bytes(rng.randbytes(17_000))
    arts["17k-ingest"] = store.ingest(staged, kind="c")
    return arts


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_damaged_blob_is_caught_by_verify_and_checked_reads(
    tmp_path: Path, durability: str, damage: str
) -> None:
    store = runstash.Store(tmp_path / "store", durability=durability, pack_max=0)
    arts = _fill(store, tmp_path)
    assert store.verify().ok
    for name, art in arts.items():
        path = Path(store.path_of(art))
        good = path.read_bytes()
        DAMAGE[damage](path, art.size)
        assert path.read_bytes() != good

        report = store.verify()
        assert report.corrupt == [str(path)], f"{name}: {report}"
        assert report.checked == len({a.hash for a in arts.values()})
        assert not report.ok and report.stray == []
        # Found damage is moved aside: the record's bytes are missing, never served wrong.
        assert not path.exists()
        moved = sorted(Path(store.root, "quarantine").iterdir())
        assert moved and all(p.read_bytes() != good for p in moved)
        with pytest.raises(runstash.NotFoundError) as info:
            store.read_bytes(art, verify=True)
        assert art.hash in str(info.value)
        for other_name, other in arts.items():
            if other.hash != art.hash:
                assert store.verify(other) is True, f"{other_name} reported damaged too"
                assert store.read_bytes(other, verify=True) is not None
        # A second process sees the blob missing.
        with runstash.Store(store.root, durability=durability) as again:
            seen = again.verify()
            assert seen.corrupt == [] and seen.missing == (art.hash,), seen
            assert not seen.ok

        # Writing the same bytes again heals every record naming them.
        store.put_bytes(good, kind="c")
        assert store.verify(art) is True
        assert store.read_bytes(art, verify=True) == good
        assert store.verify().ok
    assert len(list(Path(store.root, "quarantine").iterdir())) == len(arts)


def test_stray_file_under_blobs_is_reported(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "store", durability="os", pack_max=0)
    art = store.put_bytes(b"real blob")
    real = Path(store.path_of(art))
    stray = real.parent / "not-a-blob-name"
    stray.write_bytes(b"?")
    partial = real.parent / (real.name[:-1])  # a blob name cut short
    partial.write_bytes(b"??")
    report = store.verify()
    assert sorted(report.stray) == sorted([str(stray), str(partial)])
    assert report.corrupt == [] and report.checked == 1 and not report.ok


# -- the log -------------------------------------------------------------------------------


def _write_ops(root: Path) -> list[tuple[str, ...]]:
    """put a, put b, pin a, put c, delete b, unpin a, put d: one frame each (pack_max=0, so no
    packed-blob frames). Returns the ops as (op, id) tuples, in order."""
    ops: list[tuple[str, ...]] = []
    with runstash.Store(root, durability="os", pack_max=0) as s:
        a = s.put_bytes(b"a", kind="k", labels={"n": "a"}, metrics={"m": 1.0})
        ops.append(("put", a.id))
        b = s.put_bytes(b"b", kind="k", labels={"n": "b"}, metrics={"m": 2.0})
        ops.append(("put", b.id))
        s.pin(a.id)
        ops.append(("pin", a.id))
        c = s.put_bytes(b"c", kind="other", run_id="r", metrics={"m": 3.0})
        ops.append(("put", c.id))
        s.delete(b.id)
        ops.append(("delete", b.id))
        s.pin(a.id, pinned=False)
        ops.append(("unpin", a.id))
        d = s.put_bytes(b"d" * 300, kind="k", labels={"n": "d", "x": 1.5}, pin=True)
        ops.append(("put", d.id))
    return ops


def _model(ops: list[tuple[str, ...]]) -> dict[str, bool]:
    """id -> pinned after applying `ops` (puts here are unpinned, except the last one)."""
    state: dict[str, bool] = {}
    for i, (op, art_id) in enumerate(ops):
        if op == "put":
            state[art_id] = i == 6  # the last put was made with pin=True
        elif op == "pin":
            state[art_id] = True
        elif op == "unpin":
            state[art_id] = False
        else:
            del state[art_id]
    return state


def test_every_flipped_byte_of_a_log_segment(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ops = _write_ops(root)
    seg = last_log_segment(root)
    frames, end = parse_frames(seg)
    original = seg.read_bytes()
    assert end == len(original) and len(frames) == 1 + len(ops), "header + one frame per op"
    rng = random.Random(11)
    for offset in range(len(original)):
        k = next(i for i, f in enumerate(frames) if f.start <= offset < f.end)
        damaged = bytearray(original)
        damaged[offset] ^= rng.randrange(1, 256)
        seg.write_bytes(damaged)
        if k == 0:
            with pytest.raises(runstash.CorruptError):
                runstash.Store(root, durability="os")
            assert seg.read_bytes() == damaged, "a refused open must not cut the log"
            continue
        # Damage with valid frames after it is refused and left in place (cutting there would
        # drop good records); a bad last frame (or one whose length field was hit, so that
        # nothing valid is found where the next frame should start) is a torn tail and cut.
        # Either way, never wrong data.
        in_payload = offset >= frames[k].start + 8
        try:
            s = runstash.Store(root, durability="os")
        except runstash.CorruptError as e:
            assert k < len(frames) - 1, f"byte {offset}: a bad last frame is a torn tail"
            assert "damaged" in str(e)
            assert seg.read_bytes() == damaged, "a refused open must not cut the log"
            continue
        assert not (in_payload and k < len(frames) - 1), (
            f"byte {offset}: damage in frame {k} with valid frames after it was cut"
        )
        with s:
            got = {a.id: a.pinned for a in s.list()}
            want = _model(ops[: k - 1])
            assert got == want, f"byte {offset} (frame {k}): {got} != prefix {want}"
            assert [a.id for a in s.list()] == sorted(want), "oldest first"
        assert seg.read_bytes() == original[: frames[k].start], f"byte {offset}: not cut"
        assert_segments_well_formed(root)
    # After a cut the store takes writes again, and they survive a reopen.
    huge_length = b"\xff\xff\xff\x7f"  # beyond any frame: nothing valid follows, a torn tail
    at = frames[3].start
    seg.write_bytes(original[:at] + huge_length + original[at + 4 :])
    with runstash.Store(root, durability="fsync") as s:
        new = s.put_bytes(b"after the cut", kind="k")
    with runstash.Store(root, durability="os") as s:
        assert {a.id: a.pinned for a in s.list()} == {**_model(ops[:2]), new.id: False}


# -- snapshots -----------------------------------------------------------------------------


def _compacted(root: Path) -> tuple[Path, dict[str, bool]]:
    ops = _write_ops(root)
    with runstash.Store(root, durability="os", pack_max=0) as s:
        s.compact()
        want = {a.id: a.pinned for a in s.list()}
    assert want == _model(ops)
    snaps = snapshots(root)
    assert len(snaps) == 1
    return snaps[0], want


def _index_dir(root: Path) -> Path:
    return root / "index"


def test_every_flipped_byte_of_a_snapshot_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    snap, want = _compacted(root)
    original = snap.read_bytes()
    rng = random.Random(12)
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= rng.randrange(1, 256)
        snap.write_bytes(damaged)
        before = tree(_index_dir(root))
        with pytest.raises(runstash.CorruptError):
            runstash.Store(root, durability="os")
        assert tree_diff(before, tree(_index_dir(root))) == [], f"byte {offset}"
    snap.write_bytes(original)
    with runstash.Store(root, durability="os") as s:
        assert {a.id: a.pinned for a in s.list()} == want


def test_every_truncation_of_a_snapshot_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    snap, want = _compacted(root)
    original = snap.read_bytes()
    for size in range(len(original)):
        snap.write_bytes(original[:size])
        before = tree(_index_dir(root))
        with pytest.raises(runstash.CorruptError):
            runstash.Store(root, durability="fsync")
        assert tree_diff(before, tree(_index_dir(root))) == [], f"cut at {size}"
    snap.write_bytes(original)
    with runstash.Store(root, durability="os") as s:
        assert {a.id: a.pinned for a in s.list()} == want


def test_missing_snapshot_is_refused(tmp_path: Path) -> None:
    """The segments before a snapshot are deleted once it is written, so without it the
    store would reopen holding only what was written after the compaction."""
    root = tmp_path / "store"
    snap, want = _compacted(root)
    with runstash.Store(root, durability="os") as s:
        later = s.put_bytes(b"after the compaction", kind="k")
    saved = snap.read_bytes()
    snap.unlink()
    before = tree(_index_dir(root))
    with pytest.raises(runstash.CorruptError, match="snap"):
        runstash.Store(root, durability="os")
    assert tree_diff(before, tree(_index_dir(root))) == []
    snap.write_bytes(saved)
    with runstash.Store(root, durability="os") as s:
        assert {a.id: a.pinned for a in s.list()} == {**want, later.id: False}
