"""Helpers for tests/test_facade.py: a stub AetherGraph ``context`` and small utilities."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runstash import ArtifactFacade, _core

T = TypeVar("T")

SEED_DOC = Path("/work/shared/seeds/aethergraph_artifacts_facade.md")


class StubChannel:
    """Records what the seed's examples send through ``context.channel()``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send_text(self, text: str, **kw: Any) -> None:
        self.sent.append(("text", {"text": text, **kw}))

    async def send_image(self, **kw: Any) -> None:
        self.sent.append(("image", kw))


class StubContext:
    """The part of AetherGraph's node ``context`` that the seed's examples use."""

    def __init__(self, facade: ArtifactFacade) -> None:
        self._facade = facade
        self._channel = StubChannel()

    def artifacts(self) -> ArtifactFacade:
        return self._facade

    def channel(self) -> StubChannel:
        return self._channel


class CountingExecutor(ThreadPoolExecutor):
    """A default executor that counts submissions (to prove a call made no thread hop)."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


class HopCounter:
    """Counts the facade's hops to runstash's worker threads (``_core.run_async`` calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hops = 0
        real = _core.run_async

        def counting(event_loop: Any, func: Any, *args: Any) -> Any:
            self.hops += 1
            return real(event_loop, func, *args)

        monkeypatch.setattr(_core, "run_async", counting)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


def seed_code_blocks() -> list[str]:
    """The fenced ```python blocks of the seed document, in order."""
    text = SEED_DOC.read_text(encoding="utf-8")
    blocks = []
    for chunk in text.split("```python\n")[1:]:
        blocks.append(chunk.split("```", 1)[0])
    return blocks
