"""Loading a directory artifact gives its files as stored, and only a directory artifact
loads as a directory (issue 10, hostile pass).

- ``load_artifact`` of a directory builds ``<root>/trees/<hash>/`` of hard links to the blob
  files once. A member blob damaged in place, then moved to quarantine (by a verified read)
  and written again, left the tree linking the damaged inode: the next load served the
  damaged bytes. Now a built tree is used only while each of its files is its blob's file;
  otherwise it is built again (or, with the blob gone, the load raises ``NotFoundError``).
- The bytes of a manifest named by a newer record that is not a directory artifact (the
  same bytes saved as JSON): a facade that had not written the directory decoded the
  newest record and returned the manifest's JSON. Now the directory artifact wins.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import runstash
from runstash.errors import CorruptError, NotFoundError

A = b"member a " * 64
B = b"member b " * 64


def _flip(path: Path) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0x20]))


def _tree(tmp_path: Path, store: runstash.Store) -> runstash.Artifact:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(A)
    (src / "sub").mkdir()
    (src / "sub" / "b.bin").write_bytes(B)
    fac = runstash.ArtifactFacade(store, run_id="r")
    return asyncio.run(fac.ingest_dir(str(src), kind="dir", cleanup=False))


def _load(store: runstash.Store, uri: str) -> Path:
    # A new facade each time: nothing remembered of earlier loads.
    got = asyncio.run(runstash.ArtifactFacade(store, run_id="r").load_artifact(uri))
    assert isinstance(got, str), f"a directory artifact loaded as {type(got).__name__}"
    return Path(got)


@pytest.mark.parametrize("heal", [True, False], ids=["written-again", "still-quarantined"])
def test_a_tree_never_serves_a_quarantined_members_bytes(tmp_path: Path, heal: bool) -> None:
    store = runstash.Store(tmp_path / "store", durability="os", pack_max=0)
    art = _tree(tmp_path, store)
    tree = _load(store, art.uri)
    assert (tree / "a.bin").read_bytes() == A
    probe = store.put_bytes(A, kind="probe")  # a record naming member a's blob
    _flip(Path(store.path_of(probe)))
    with pytest.raises(CorruptError):
        store.read_bytes(probe, verify=True)  # moves the damaged file to quarantine
    if heal:
        store.put_bytes(A, kind="again")
        tree = _load(store, art.uri)
        assert (tree / "a.bin").read_bytes() == A
        assert (tree / "sub" / "b.bin").read_bytes() == B
    else:
        with pytest.raises(NotFoundError):
            _load(store, art.uri)


def test_a_directory_artifact_loads_as_a_directory_whatever_newer_records_say(
    tmp_path: Path,
) -> None:
    store = runstash.Store(tmp_path / "store", durability="os")
    art = _tree(tmp_path, store)
    store.put_bytes(
        store.read_bytes(art),
        kind="json",
        run_id="r",
        labels={"filename": "same-bytes.json"},
        mime="application/json",
    )
    tree = _load(store, art.uri)
    assert tree.is_dir()
    assert (tree / "a.bin").read_bytes() == A


def test_a_directory_artifact_of_another_run_still_loads_as_a_directory(tmp_path: Path) -> None:
    # Before: a facade of run r2, where the same bytes were saved as JSON, found that record
    # in its own run first and returned the manifest's JSON.
    store = runstash.Store(tmp_path / "store", durability="os")
    art = _tree(tmp_path, store)  # run "r"
    store.put_bytes(store.read_bytes(art), kind="json", run_id="r2", mime="application/json")
    got = asyncio.run(runstash.ArtifactFacade(store, run_id="r2").load_artifact(art.uri))
    assert isinstance(got, str) and Path(got).is_dir()
