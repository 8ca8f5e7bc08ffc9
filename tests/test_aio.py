"""Awaitables made in Rust (``_core.run_async``, ``CoreStore.save_async``): results and errors
reach the caller's loop, the work runs off the loop's thread, a cancelled future is left
alone, and a forked child gets a pool of its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

import runstash
from runstash import _core
from runstash.args import _meta


class Box:
    """A value whose death can be watched (``weakref.finalize``)."""


def test_result_comes_back_from_another_thread() -> None:
    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        got = await _core.run_async(loop, lambda a, b: (a + b, threading.get_ident()), 2, 3)
        return got[0], got[1], threading.get_ident()

    total, worker, caller = asyncio.run(main())
    assert total == 5
    assert worker != caller


def test_exception_reaches_the_awaiting_task_with_its_type() -> None:
    def boom() -> None:
        raise KeyError("missing thing")

    async def main() -> None:
        await _core.run_async(asyncio.get_running_loop(), boom)

    with pytest.raises(KeyError, match="missing thing"):
        asyncio.run(main())


def test_store_errors_keep_their_class(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "s", durability="os")

    async def main() -> None:
        await store._core.save_async(
            asyncio.get_running_loop(),
            tmp_path / "absent.bin",
            _meta("k", None, None, None, None, None, None, False, None),
        )

    with pytest.raises(runstash.errors.NotFoundError):
        asyncio.run(main())
    store.close()


def test_save_async_records_the_file(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 3000)
    store = runstash.Store(tmp_path / "s", durability="os")

    async def main() -> runstash.Artifact:
        meta = _meta("frame", None, None, "r1", None, None, None, False, None)
        return await store._core.save_async(asyncio.get_running_loop(), src, meta)

    art = asyncio.run(main())
    assert art.size == 3000 and art.run_id == "r1"
    assert store.get(art.id).hash == art.hash
    store.close()


def test_a_cancelled_future_is_left_alone() -> None:
    """The job finishes after its future was cancelled: setting its result would raise
    ``InvalidStateError`` in a loop callback; the loop must report nothing."""
    release = threading.Event()
    errors: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(repr(ctx.get("exception"))))
        settled = loop.create_future()

        def job() -> Box:
            release.wait(60)
            value = Box()
            # The value dies once the loop has run (and dropped) the callback that settles
            # the future, or once the worker drops it: either way after settling.
            weakref.finalize(value, loop.call_soon_threadsafe, settled.set_result, None)
            return value

        fut = _core.run_async(loop, job)
        fut.cancel()
        release.set()
        await asyncio.wait_for(settled, 60)
        assert fut.cancelled()

    asyncio.run(main())
    assert errors == []


def test_a_forked_child_runs_its_own_pool(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        from runstash import _core

        async def once(x):
            return await _core.run_async(asyncio.get_running_loop(), lambda: x * 2)

        assert asyncio.run(once(1)) == 2  # the parent's pool is running
        pid = os.fork()
        if pid == 0:
            try:
                ok = asyncio.run(once(21)) == 42
            except BaseException:
                ok = False
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert asyncio.run(once(5)) == 10  # and the parent's still is
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    # The watchdog: a child stuck on the parent's (absent) threads fails the test.
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
