"""Shared parts of the lifecycle model tests (``test_lifecycle_model.py``: the in-process
state machine; ``test_lifecycle_processes.py``: the walk with child processes): the payload
pool, the model's record, damage and quarantine checks, the expected keep_best plan."""

from __future__ import annotations

import os
import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import runstash

DEFAULT_STEPS = 12000
STEPS = max(1, int(os.environ.get("RUNSTASH_MODEL_STEPS", DEFAULT_STEPS)))
SCALE = STEPS / DEFAULT_STEPS
_SEED_ENV = os.environ.get("RUNSTASH_MODEL_SEED")
SEED = int(_SEED_ENV) if _SEED_ENV else 20261123
STEPS_PER_EXAMPLE = 100
#: A fresh handle reads everything back and runs verify_report every this many steps.
FRESH_EVERY = 10
#: Seconds one state-machine step (with its checks) may take before the run is stopped.
STEP_TIMEOUT = 180.0

PACK_MAX = 64 * 1024


def _payload(i: int, size: int) -> bytes:
    return random.Random(f"lifecycle-{i}").randbytes(size)


#: Small payloads (packed into the log by put_bytes and a writer; 65536 is pack_max itself).
SMALL_SIZES = (0, 1, 33, 700, 5000, PACK_MAX)
#: Large payloads: a blob file each, the only ones the tests damage.
LARGE_SIZES = (PACK_MAX + 1, 80_000, 150_000)
POOL: tuple[bytes, ...] = tuple(_payload(i, n) for i, n in enumerate(SMALL_SIZES + LARGE_SIZES))
SMALL = tuple(range(len(SMALL_SIZES)))
LARGE = tuple(range(len(SMALL_SIZES), len(POOL)))
HASH_OF: dict[bytes, str] = {b: runstash.hash_bytes(b) for b in POOL}
BYTES_OF: dict[str, bytes] = {h: b for b, h in HASH_OF.items()}
LARGE_HASHES = frozenset(HASH_OF[POOL[i]] for i in LARGE)
WRITE_PATHS = ("put", "save", "writer", "ingest")
KINDS = ("a", "b")
RUNS = ("r1", "r2")
METRICS = (None, 0, 1, 2)


@dataclass
class Rec:
    """What the model knows of one live record."""

    hash: str
    kind: str
    run_id: str
    metric: int | None
    pinned: bool
    origin: str  # how it was written, for failure messages
    files: tuple[str, ...] = ()  # a directory artifact's file hashes


def blob_path(root: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return root / "blobs" / hexd[:2] / hexd[2:]


def quarantine_files(root: Path) -> list[Path]:
    q = root / "quarantine"
    return sorted(p for p in q.rglob("*") if p.is_file()) if q.is_dir() else []


def damage(path: Path, how: str) -> bytes:
    """Flip a byte in place (same size) or cut the file short, as bit rot or a bad copy;
    returns the damaged bytes."""
    os.chmod(path, 0o644)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(size // 2)
        else:
            f.seek(size // 3)
            b = f.read(1)
            f.seek(size // 3)
            f.write(bytes([b[0] ^ 0x5A]))
    return path.read_bytes()


def assert_quarantined(root: Path, damaged: bytes, what: str) -> None:
    """The damaged file is in ``<root>/quarantine/`` (under whatever name)."""
    for q in quarantine_files(root):
        if q.stat().st_size == len(damaged) and q.read_bytes() == damaged:
            return
    raise AssertionError(f"{what}: the damaged blob file did not move into quarantine/")


def check_quarantine_accounting(store: runstash.Store, rep: Any) -> None:
    """verify_report().quarantined and stats() count the files in quarantine/ (contract 3)."""
    files = quarantine_files(Path(store.root))
    assert len(rep.quarantined) == len(files), (rep.quarantined, files)
    st_ = store.stats()
    assert st_.quarantined_files == len(files), st_
    assert st_.quarantined_bytes == sum(f.stat().st_size for f in files), st_


def write_via(
    store: runstash.Store, data: bytes, how: str, src_dir: Path, **kw: Any
) -> runstash.Artifact:
    """Store ``data`` through one of the four write paths."""
    if how == "put":
        return store.put_bytes(data, **kw)
    if how == "save":
        fd, name = tempfile.mkstemp(dir=src_dir, suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return store.save(name, **kw)
        finally:
            os.unlink(name)
    if how == "writer":
        with store.writer(".bin", **kw) as w:
            w.write(data[: len(data) // 2])
            w.write(data[len(data) // 2 :])
        assert w.artifact is not None
        return w.artifact
    if how == "ingest":
        staged = store.stage(".bin")
        Path(staged).write_bytes(data)
        return store.ingest(staged, **kw)
    raise AssertionError(how)


def expected_keep_best(
    live: dict[str, Rec], kind: str, mode: str, k: int, per: str | None
) -> set[str]:
    """The ids keep_best must delete (README: top k per group by the metric, ties to the older
    id, pinned records count towards k and are never deleted, records without it are kept)."""
    groups: dict[str | None, list[str]] = defaultdict(list)
    for i, r in live.items():
        if r.kind == kind and r.metric is not None:
            groups[r.run_id if per == "run" else None].append(i)
    sign = -1 if mode == "max" else 1
    out: set[str] = set()
    for ids in groups.values():
        ranked = sorted(ids, key=lambda i: (sign * (live[i].metric or 0), i))
        out |= {i for i in ranked[k:] if not live[i].pinned}
    return out


# -- variant 1: a hypothesis state machine over handles in this process ------------------------


handle_st = st.integers(0, 2)
pick_st = st.integers(0, 10_000)
meta_st = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "metric": st.sampled_from(METRICS),
        "run_id": st.sampled_from(RUNS),
        "pin": st.sampled_from([False, False, False, True]),
    }
)
