"""Damage inside what the index trusts is never served or trusted (issue 10, hostile pass).

- **Packed bytes** (small payloads live in a frame of the index log, under its CRC): bytes
  flipped in the log while a handle is open. Before the fix a plain read served the flipped
  bytes, and writing the same bytes again was acknowledged onto the damaged copy (the new
  record unreadable). Now the frame is checked on every read (``CorruptError``),
  ``verify``/``verify_report`` report it, and a new write of the same bytes stores a fresh
  copy that every record naming them then reads, also after compaction and reopening.
- **A directory manifest** (a blob file whose bytes list the tree's files) damaged so that it
  still parses but lists another file. Before the fix gc trusted it and deleted the real
  member; now a manifest that does not match its hash leaves its members unknown, so gc
  refuses (``CorruptError``) and deletes nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

import runstash
from runstash.errors import CorruptError
from tests.index_helpers import log_segments


def _flip_in_log(root: Path, data: bytes) -> None:
    for seg in log_segments(root):
        raw = seg.read_bytes()
        at = raw.find(data)
        if at >= 0:
            with open(seg, "r+b") as f:
                f.seek(at + len(data) // 2)
                f.write(bytes([raw[at + len(data) // 2] ^ 0x01]))
            return
    raise AssertionError("payload not found in any log segment")


def test_damaged_packed_bytes_are_refused_and_a_new_write_heals_them(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = runstash.Store(root, durability="os")
    payload = random.Random(1).randbytes(300)
    first = store.put_bytes(payload, kind="w")
    store.put_bytes(b"a later record", kind="w")  # the damaged frame is not the log's tail
    _flip_in_log(root, payload)

    with pytest.raises(CorruptError):
        store.read_bytes(first)
    with pytest.raises(CorruptError):
        store.path_of(first)  # no blob file is made from damaged bytes
    assert store.verify(first) is False
    assert not store.verify_report().intact

    again = store.put_bytes(payload, kind="w")
    assert store.read_bytes(again, verify=True) == payload
    assert store.read_bytes(first, verify=True) == payload
    assert store.verify_report().intact

    store.compact()
    fresh = runstash.Store(root, durability="os")
    for a in (first, again):
        assert fresh.read_bytes(a, verify=True) == payload


def _flip_hex(text: str, digest_hex: str) -> str:
    """The manifest text with one hex digit of ``digest_hex`` changed: it still parses."""
    at = text.index(digest_hex) + len(digest_hex) - 1
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :]


def test_gc_refuses_a_manifest_that_parses_but_does_not_match_its_hash(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = runstash.Store(root, durability="os", pack_max=0)
    src = tmp_path / "tree"
    src.mkdir()
    (src / "a.bin").write_bytes(b"member a " * 50)
    (src / "b.bin").write_bytes(b"member b " * 50)
    fac = runstash.ArtifactFacade(store, run_id="r")
    art = asyncio.run(fac.ingest_dir(str(src), kind="dir", cleanup=False))
    manifest = Path(store.path_of(art))
    text = manifest.read_text()
    member = store.put_bytes(b"member a " * 50, kind="probe")  # names member a's blob
    store.delete(member)
    a_hex = member.hash.split(":", 1)[1]
    os.chmod(manifest, 0o644)
    manifest.write_text(_flip_hex(text, a_hex))
    a_file = Path(store.path_of(member.hash))

    with pytest.raises(CorruptError, match="manifest"):
        store.gc(dry_run=False, grace=0)
    assert a_file.is_file()


def test_a_handle_whose_log_was_cut_under_it_refuses_to_write_on(tmp_path: Path) -> None:
    # A damaged length field looks like a torn tail to the next opener, which cuts the log
    # there. Before, the first handle kept appending past the new end of the file, where no
    # replay looks: every later acknowledged write was lost.
    from tests.index_helpers import last_log_segment, parse_frames

    root = tmp_path / "store"
    a = runstash.Store(root, durability="fsync")
    for i in range(10):
        a.put_bytes(b"payload %d " % i * 30, kind="w")
    seg = last_log_segment(root)
    frame = parse_frames(seg)[0][9]
    with open(seg, "r+b") as f:
        f.seek(frame.start)
        b = f.read(1)
        f.seek(frame.start)
        f.write(bytes([b[0] ^ 1]))
    runstash.Store(root, durability="os").close()  # the opener cuts the "torn tail"
    with pytest.raises(CorruptError, match="shrank"):
        a.put_bytes(b"after the cut", kind="after")
    assert runstash.Store(root, durability="os").count(kind="after") == 0


def test_a_truncated_segment_of_packed_bytes_is_damage_not_an_io_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    s = runstash.Store(root, durability="os")
    a = s.put_bytes(b"p" * 500, kind="w")
    s.compact()
    (seg,) = [p for p in log_segments(root) if b"p" * 500 in p.read_bytes()]
    os.truncate(seg, seg.read_bytes().find(b"p" * 500) + 10)
    s = runstash.Store(root, durability="os")
    with pytest.raises(CorruptError):
        s.read_bytes(a)
    assert s.verify(a) is False
    report = s.verify()
    assert not report.ok and len(report.corrupt) == 1


def test_record_many_is_never_acknowledged_onto_damaged_packed_bytes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    s = runstash.Store(root, durability="os")
    payload = random.Random(2).randbytes(300)
    a = s.put_bytes(payload, kind="w")
    s.put_bytes(b"a later record", kind="w")
    _flip_in_log(root, payload)
    with pytest.raises(CorruptError, match="damaged"):
        s.record_many(a.hash, [{"kind": "rm"}])
    assert s.count(kind="rm") == 0
    s.put_bytes(payload, kind="w")  # stored again: now it can be recorded
    (r,) = s.record_many(a.hash, [{"kind": "rm"}])
    assert s.read_bytes(r, verify=True) == payload


def test_keep_best_refuses_before_deleting_when_gc_could_not_run(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "store", durability="os", pack_max=0)
    d = Path(store.stage_dir())
    (d / "f.txt").write_bytes(b"member " * 20)
    tree = store.ingest_dir(d, kind="dir")
    for acc in (0.1, 0.5, 0.9):
        store.put_bytes(b"model %f" % acc, kind="model", metrics={"acc": acc})
    manifest = Path(store.path_of(tree))
    os.chmod(manifest, 0o644)
    os.truncate(manifest, 10)
    with pytest.raises(CorruptError, match="nothing deleted"):
        store.keep_best(kind="model", metric="acc", mode="max", k=1, dry_run=False)
    assert store.count(kind="model") == 3
