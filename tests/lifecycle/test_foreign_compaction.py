"""Compaction by another handle (issue 10, item 1).

Two ``runstash.Store`` handles on one root behave as two processes: each keeps its own index
state. Handle B stores a small payload P (packed into the log), deletes the record, and
handle A compacts, which drops the log segment that held P. B must not go on believing that P
is packed in the removed segment:

- stage + ingest of a file holding P stores a record that reads back (verified) on B, and on a
  fresh handle after B compacts;
- ``record_many`` of P's hash raises NotFoundError and appends nothing;
- live packed records stay readable on B across several rounds of A's compactions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import runstash
from tests.index_helpers import log_segments

P = b"small payload P, packed into the index log " * 4


def _two_handles(tmp_path: Path) -> tuple[Path, runstash.Store, runstash.Store]:
    root = tmp_path / "store"
    a = runstash.Store(root, durability="os")
    b = runstash.Store(root, durability="os")
    return root, a, b


def _orphan_p_and_compact_elsewhere(
    root: Path, a: runstash.Store, b: runstash.Store
) -> runstash.Artifact:
    """B writes P (packed), deletes it; A compacts away the segment that held it."""
    first = log_segments(root)
    art = b.put_bytes(P, kind="p")
    b.delete(art)
    a.compact()
    # The precondition of the bug: the segment that held P's packed bytes is gone.
    assert not set(first) & set(log_segments(root)), "compaction kept the old segment"
    return art


def test_ingest_of_bytes_compacted_away_by_another_handle(tmp_path: Path) -> None:
    root, a, b = _two_handles(tmp_path)
    _orphan_p_and_compact_elsewhere(root, a, b)

    staged = b.stage(".bin")
    Path(staged).write_bytes(P)
    art = b.ingest(staged, kind="again")
    assert b.read_bytes(art, verify=True) == P
    assert b.verify(art) is True

    b.compact()
    with runstash.Store(root, durability="os") as fresh:
        assert fresh.read_bytes(art, verify=True) == P
        assert fresh.verify(art) is True
        report = fresh.verify_report()
        assert report.intact, report
    # B itself, after its own compaction, and A, which never saw P again.
    assert b.read_bytes(art, verify=True) == P
    assert a.read_bytes(art, verify=True) == P


def test_record_many_of_bytes_compacted_away_is_refused(tmp_path: Path) -> None:
    root, a, b = _two_handles(tmp_path)
    b.put_bytes(b"a live record in a blob file " * 4000, kind="keep")  # over pack_max
    art = _orphan_p_and_compact_elsewhere(root, a, b)
    before = b.count()
    assert before == 1

    with pytest.raises(runstash.NotFoundError):
        b.record_many(art.hash, [{"kind": "x"}])
    assert b.count() == before
    assert b.count(kind="x") == 0
    with runstash.Store(root, durability="os") as fresh:
        assert fresh.count() == before
        assert fresh.count(kind="x") == 0
        assert fresh.verify_report().intact


def test_live_packed_records_survive_rounds_of_foreign_compaction(tmp_path: Path) -> None:
    # A guard: this already held on the old code (0b72818); it pins down that the fix for the
    # stale location of deleted bytes does not lose live packed records.
    root, a, b = _two_handles(tmp_path)
    live: dict[str, tuple[runstash.Artifact, bytes]] = {}
    for r in range(6):
        for i in range(5):
            data = f"round {r} item {i} ".encode() * 3
            art = b.put_bytes(data, kind="k")
            live[art.id] = (art, data)
        for art_id in list(live)[::3]:
            b.delete(art_id)
            del live[art_id]
        a.compact()
        for art, data in live.values():
            assert b.read_bytes(art) == data, f"round {r}"
            assert b.read_bytes(art, verify=True) == data, f"round {r}"
        assert b.count() == len(live)
    with runstash.Store(root, durability="os") as fresh:
        for art, data in live.values():
            assert fresh.read_bytes(art, verify=True) == data
        assert fresh.verify_report().intact
