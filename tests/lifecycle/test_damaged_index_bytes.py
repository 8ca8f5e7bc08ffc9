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
