"""``store.verify()`` reports packed bytes whose segment is gone; it does not raise (issue 10,
item 10).

An open handle whose old log segment (kept after a compaction because it holds packed bytes
of live records) is deleted after the handle opened, before it read those bytes: before the
fix ``verify()`` raised NotFoundError instead of returning its report. Now it returns the
VerifyReport with those hashes in the new ``.missing`` tuple, and the rest checked as usual.
"""

from __future__ import annotations

from pathlib import Path

import runstash
from tests.index_helpers import log_segments


def test_verify_reports_bytes_of_a_deleted_segment_as_missing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with runstash.Store(root, durability="os") as w:
        lost = [w.put_bytes(f"packed in segment 1, #{i}".encode(), kind="k") for i in range(4)]
        gone = w.put_bytes(b"deleted, so not live", kind="k")
        w.delete(gone)
        w.compact()
        kept = [w.put_bytes(f"packed in segment 2, #{i}".encode(), kind="k") for i in range(3)]
        big = w.put_bytes(b"a blob file " * 10_000, kind="k")  # over pack_max
    segments = log_segments(root)
    assert len(segments) == 2, "the compaction should keep segment 1 (live packed bytes)"

    store = runstash.Store(root, durability="os")
    segments[0].unlink()
    report = store.verify()
    assert isinstance(report, runstash.VerifyReport)
    assert sorted(report.missing) == sorted(a.hash for a in lost)
    assert all(isinstance(h, str) for h in report.missing)
    assert not report.corrupt
    # What is still there still reads.
    for a in [*kept, big]:
        assert store.read_bytes(a, verify=True) is not None
