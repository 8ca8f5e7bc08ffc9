"""Missing or inconsistent index files are refused, never opened as a smaller store (issue 10,
item 4).

Before the fix a store whose current log segment, whole ``index/`` directory or an older
segment holding live packed bytes was deleted opened silently with fewer records (a deleted
record could come back, and gc would then delete live blobs); a ``STORE.json`` naming the
other hash opened and called every blob corrupt; a deleted ``STORE.json`` was re-created as a
new blake3 store. Now each of these refuses to open with CorruptError (naming what is missing)
and changes nothing on disk; and an open handle whose index files vanish refuses to gc or run
retention, deleting no blob file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import runstash
from tests.faults.helpers import tree, tree_diff
from tests.index_helpers import log_segments, snapshots


def _fill(root: Path, *, compact: bool, hash: str = "blake3") -> list[runstash.Artifact]:
    """Packed records, one blob file, a deletion; with ``compact`` also a snapshot and records
    after it. Returns the live records."""
    with runstash.Store(root, durability="os", hash=hash) as s:
        arts = [s.put_bytes(f"record {i}".encode(), kind="k") for i in range(5)]
        arts.append(s.put_bytes(b"big " * 30_000, kind="k"))  # over pack_max: a blob file
        if compact:
            s.compact()
            arts += [s.put_bytes(f"after {i}".encode(), kind="k") for i in range(3)]
        s.delete(arts.pop(1))
    return arts


def _refused(root: Path, what: str, **kw: object) -> runstash.CorruptError:
    before = tree(root)
    with pytest.raises(runstash.CorruptError) as info:
        runstash.Store(root, durability="os", **kw)  # type: ignore[arg-type]
    assert tree_diff(before, tree(root)) == [], "a refused open changed the store"
    # The root's own path (pytest names it after the test) must not count as naming `what`.
    message = str(info.value).replace(str(root), "<root>")
    assert what in message, f"the error does not name {what!r}: {info.value}"
    return info.value


@pytest.mark.parametrize("compact", [False, True], ids=["no-snapshot", "with-snapshot"])
def test_current_log_segment_deleted(tmp_path: Path, compact: bool) -> None:
    root = tmp_path / "store"
    _fill(root, compact=compact)
    current = log_segments(root)[-1]
    assert bool(snapshots(root)) == compact
    current.unlink()
    _refused(root, current.name)


def test_index_directory_deleted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _fill(root, compact=True)
    shutil.rmtree(root / "index")
    _refused(root, "index")
    assert not (root / "index").exists(), "the refused open re-created index/"


def test_old_segment_with_live_packed_bytes_deleted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _fill(root, compact=True)
    segments = log_segments(root)
    assert len(segments) == 2, "compaction should keep the segment holding live packed bytes"
    segments[0].unlink()
    _refused(root, segments[0].name)


@pytest.mark.parametrize(("made", "edited"), [("blake3", "sha256"), ("sha256", "blake3")])
def test_store_json_edited_to_the_other_hash(tmp_path: Path, made: str, edited: str) -> None:
    root = tmp_path / "store"
    _fill(root, compact=False, hash=made)
    meta = root / "STORE.json"
    text = meta.read_text()
    assert f'"{made}"' in text
    meta.write_text(text.replace(f'"{made}"', f'"{edited}"'))
    before = tree(root)
    with pytest.raises(runstash.CorruptError):
        runstash.Store(root, durability="os")
    # Asking for the hash the edited file names: still refused (either error will do).
    with pytest.raises((runstash.CorruptError, runstash.IncompatibleStoreError)):
        runstash.Store(root, durability="os", hash=edited)
    assert tree_diff(before, tree(root)) == []


@pytest.mark.parametrize("layout", ["blob-files", "packed-only"])
def test_store_json_deleted_is_never_recreated(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "store"
    with runstash.Store(root, durability="os", hash="sha256") as s:
        s.put_bytes(b"a record " * (10_000 if layout == "blob-files" else 1))
    assert any((root / "blobs").rglob("*")) == (layout == "blob-files")
    (root / "STORE.json").unlink()
    _refused(root, "STORE.json")
    with pytest.raises(runstash.CorruptError):
        runstash.Store(root, durability="os", hash="blake3")
    assert not (root / "STORE.json").exists(), "STORE.json was re-created"


def _blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def _delete_index_files(root: Path, which: str) -> None:
    for p in sorted((root / "index").iterdir()):
        if which == "all" and p.name.startswith(("log-", "snap-")):
            p.unlink()
    if which == "current-log":
        log_segments(root)[-1].unlink()


@pytest.mark.parametrize("which", ["all", "current-log"])
@pytest.mark.parametrize("op", ["gc", "keep_best"])
def test_open_handle_refuses_to_delete_when_index_files_vanish(
    tmp_path: Path, op: str, which: str
) -> None:
    root = tmp_path / "store"
    s = runstash.Store(root, durability="os", pack_max=0)
    arts = [s.put_bytes(f"r{i}".encode(), kind="m", metrics={"v": float(i)}) for i in range(5)]
    s.compact()
    s.put_bytes(b"later", kind="m", metrics={"v": 9.0})
    s.delete(arts[0])  # an orphan: what gc would delete from an intact store
    blobs = _blob_files(root)
    assert len(blobs) == 6
    _delete_index_files(root, which)

    with pytest.raises(runstash.CorruptError):
        if op == "gc":
            s.gc(dry_run=False, grace=0)
        else:
            s.keep_best(kind="m", metric="v", mode="max", k=1, dry_run=False, grace=0)
    assert _blob_files(root) == blobs, "a blob file was deleted"
