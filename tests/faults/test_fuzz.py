"""Fuzzing the index decoders (the log's frames, header and operations, replay, and the
snapshot loader), for a bounded time. Both entry points live in
``rust/core/src/index/fuzz.rs`` and must never panic, abort or allocate beyond what the
input's size justifies; what decodes must be a usable index that survives a snapshot round
trip.

- ``test_libfuzzer``: coverage-guided, with libFuzzer (``fuzz/``), built on stable Rust with
  the sanitizer-coverage passes (no nightly, no cargo-fuzz needed), seeded with the log
  segments and snapshot of a real store. Its mutator re-computes the frames' CRCs after most
  mutations so that they reach the decoders. 25 s per target.
- ``test_stable_loop``: the structure-aware mutational loop of
  ``rust/core/tests/fuzz_index.rs`` (plain ``cargo test``; it also runs for 2 s in every
  ``cargo test``), here for 10 s with a fresh seed.

A failing input is saved (its path is in the failure message); add it to ``REGRESSIONS`` in
``rust/core/tests/fuzz_index.rs`` with the fix. Run longer by hand::

    RUNSTASH_FUZZ_TARGET_SECS=600 python -m pytest -q tests/faults/test_fuzz.py
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

import runstash
from tests.index_helpers import log_segments, snapshots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cargo") is None, reason="needs a Rust toolchain"),
]

REPO = Path(__file__).resolve().parents[2]
TARGET_SECS = int(os.environ.get("RUNSTASH_FUZZ_TARGET_SECS", "25"))
LOOP_SECS = int(os.environ.get("RUNSTASH_FUZZ_LOOP_SECS", "10"))
# What cargo-fuzz passes, minus the sanitizer (which needs nightly): coverage counters and
# comparison tracing for libFuzzer, and checked arithmetic so that overflows are found too.
SANCOV = " ".join(
    [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
)


def _host() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("host:"))


def _target_dir() -> Path:
    base = os.environ.get("CARGO_TARGET_DIR")
    return Path(base) / "fuzz" if base else REPO / "fuzz" / "target"


def _seed_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """Log segments and a snapshot of a real store: every operation and value type."""
    root = tmp_path / "seed-store"
    logs, snaps = tmp_path / "corpus-replay", tmp_path / "corpus-snapshot"
    logs.mkdir()
    snaps.mkdir()
    with runstash.Store(root, durability="os") as s:
        a = s.put_bytes(
            b"a",
            kind="model",
            labels={"task": "t1", "seed": 3, "lr": 0.5, "ok": True},
            metrics={"loss": 0.25, "acc": 0.9},
            run_id="r1",
            graph_id="g",
            node_id="n",
            project_id="p",
            mime="text/plain",
        )
        b = s.put_bytes(b"b", kind="frame", pin=True)
        s.pin(a.id)
        s.delete(b.id)
        s.record_many(a, [{"kind": "x", "labels": {"i": i}} for i in range(3)])
        shutil.copy(log_segments(root)[-1], logs / "before-compaction")
        s.compact()
        s.put_bytes(b"c", kind="after", metrics={"m": -1.0})
    for p in log_segments(root):
        shutil.copy(p, logs / p.name)
    for p in snapshots(root):
        shutil.copy(p, snaps / p.name)
    assert len(list(logs.iterdir())) >= 2 and len(list(snaps.iterdir())) == 1
    return logs, snaps


def test_libfuzzer(tmp_path: Path) -> None:
    host = _host()
    target_dir = _target_dir()
    env = {**os.environ, "RUSTFLAGS": SANCOV, "CARGO_TARGET_DIR": str(target_dir)}
    build = subprocess.run(
        ["cargo", "build", "--release", "--bins", "--target", host],
        cwd=REPO / "fuzz",
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"building the fuzz targets failed:\n{build.stderr[-3000:]}"
    corpora = dict(zip(("replay", "snapshot"), _seed_corpus(tmp_path), strict=True))
    for name, corpus in corpora.items():
        binary = target_dir / host / "release" / name
        artifacts = tmp_path / f"crashes-{name}"
        artifacts.mkdir()
        res = subprocess.run(
            [
                str(binary),
                str(corpus),
                f"-max_total_time={TARGET_SECS}",
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-max_len=8192",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(artifacts.iterdir())
        assert res.returncode == 0 and not found, (
            f"libFuzzer target {name} failed; inputs saved: {[str(p) for p in found]}\n"
            f"{res.stderr[-4000:]}"
        )
        runs = [ln for ln in res.stderr.splitlines() if "stat::number_of_executed_units" in ln]
        assert runs and int(runs[0].split()[-1]) > 1000, res.stderr[-2000:]


def test_stable_loop(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    env = {
        **os.environ,
        "RUNSTASH_FUZZ_SECS": str(LOOP_SECS),
        "RUNSTASH_FUZZ_SEED": str(seed),
        "RUNSTASH_FUZZ_OUT": str(tmp_path),
    }
    res = subprocess.run(
        [
            "cargo",
            "test",
            "-q",
            "-p",
            "runstash-core",
            "--test",
            "fuzz_index",
            "fuzz_index_decoders_bounded",
            "--",
            "--nocapture",
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, f"seed {seed}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    assert "no failure" in res.stderr, res.stderr[-2000:]
