"""A zero-filled tail of the current log segment is a torn tail (issue 10, item 9).

Some filesystems leave zero bytes at the end of a file that was being appended to when the
machine stopped. Before the fix 16 B or 4 KiB of zeros after the last frame made the store
refuse to open ("a frame fails its checksum but valid frames after": zeros parsed as valid
empty frames). Now the store opens with every record, new writes work, and it reopens again
with all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import runstash
from tests.index_helpers import last_log_segment


def _write(s: runstash.Store, tag: str, n: int) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = f"{tag} {i} ".encode() * (1 + i)
        out[s.put_bytes(data, kind="k", labels={"tag": tag}).id] = data
    big = f"{tag} big ".encode() * 10_000  # over pack_max: a blob file
    out[s.put_bytes(big, kind="k").id] = big
    return out


def _check(s: runstash.Store, expected: dict[str, bytes]) -> None:
    assert s.count() == len(expected)
    assert {a.id for a in s.list()} == set(expected)
    for art_id, data in expected.items():
        art = s.get(art_id)
        assert art is not None
        assert s.read_bytes(art, verify=True) == data


@pytest.mark.parametrize("compact", [False, True], ids=["no-snapshot", "with-snapshot"])
@pytest.mark.parametrize("zeros", [16, 4096])
@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_zero_filled_tail_opens_with_every_record(
    tmp_path: Path, zeros: int, compact: bool, durability: str
) -> None:
    root = tmp_path / "store"
    with runstash.Store(root, durability=durability) as s:
        expected = _write(s, "before", 5)
        if compact:
            s.compact()
            expected |= _write(s, "after-compact", 3)
        deleted = s.put_bytes(b"deleted again", kind="k")
        s.delete(deleted)
    seg = last_log_segment(root)
    with open(seg, "ab") as f:
        f.write(b"\0" * zeros)

    with runstash.Store(root, durability=durability) as s:
        _check(s, expected)
        assert s.get(deleted.id) is None
        expected |= _write(s, "new", 4)
        _check(s, expected)
    with runstash.Store(root, durability=durability) as s:
        _check(s, expected)
        assert s.verify_report().intact
