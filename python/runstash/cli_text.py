"""How the ``runstash`` command prints: rich tables fitted to a terminal (whole, without
padding, to a pipe), JSON documents, sizes and artifacts."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._core import Artifact
from .reports import IntegrityReport
from .store import Store

__all__ = ["human_size"]


def _err() -> Console:
    return Console(stderr=True, highlight=False)


#: Width for output to a pipe or file: tables come out whole (rich would fit them to 80).
_PIPE_WIDTH = 1000


def _print(*things: Any, stderr: bool = False) -> None:
    """Print rich renderables: fitted to a terminal, else whole and without the trailing
    blanks that pad table rows."""
    c = Console(stderr=stderr, highlight=False)
    if c.is_terminal:
        c.print(*things)
        return
    buf = io.StringIO()
    Console(file=buf, highlight=False, width=_PIPE_WIDTH).print(*things)
    text = "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())
    (sys.stderr if stderr else sys.stdout).write(text)


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def human_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _n(count: int, noun: str) -> str:
    """``1 record``, ``2 records``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _when(created_at: str) -> str:
    return created_at[:19].replace("T", " ")


def _kv(d: dict[str, Any], first: str | None = None) -> str:
    keys = sorted(d, key=lambda k: (k != first, k))
    return ", ".join(f"{k}={d[k]:g}" if isinstance(d[k], float) else f"{k}={d[k]}" for k in keys)


def _artifact_table(arts: Sequence[Artifact], metric: str | None = None) -> Table:
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    t.add_column("id", no_wrap=True, min_width=26)
    t.add_column("kind", no_wrap=True)
    t.add_column("size", justify="right", no_wrap=True)
    t.add_column("created (UTC)", no_wrap=True)
    t.add_column("run", overflow="fold")
    t.add_column("pin", no_wrap=True)
    t.add_column("metrics", overflow="fold")
    t.add_column("labels", overflow="fold")
    for a in arts:
        t.add_row(
            Text(a.id),
            Text(a.kind),
            human_size(a.size),
            _when(a.created_at),
            Text(a.run_id or ""),
            "yes" if a.pinned else "",
            Text(_kv(a.metrics, metric)),
            Text(_kv(a.labels)),
        )
    return t


def _show_artifact(store: Store, a: Artifact, as_json: bool) -> None:
    path = store.path_of(a)
    if as_json:
        _emit_json({**a.to_dict(), "path": path})
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value")
    rows: list[tuple[str, str]] = [
        ("id", a.id),
        ("kind", a.kind),
        ("hash", a.hash),
        ("size", f"{a.size} bytes ({human_size(a.size)})"),
        ("mime", a.mime or ""),
        ("created", a.created_at),
        ("run_id", a.run_id or ""),
        ("graph_id", a.graph_id or ""),
        ("node_id", a.node_id or ""),
        ("project_id", a.project_id or ""),
        ("pinned", "yes" if a.pinned else "no"),
        ("labels", _kv(a.labels)),
        ("metrics", _kv(a.metrics)),
        ("uri", a.uri),
        ("path", path),
    ]
    for k, v in rows:
        t.add_row(k, Text(v))
    _print(t)


@contextmanager
def _status(message: str) -> Iterator[None]:
    """A spinner on stderr while a walk runs, only when stderr is a terminal."""
    err = _err()
    if not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


def _problem_table(report: IntegrityReport, orphans_ok: bool) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    t.add_column("problem", no_wrap=True)
    t.add_column("blob", no_wrap=True)
    t.add_column("detail")
    for m in report.missing:
        t.add_row("missing", m.hash, Text("named by " + ", ".join(m.records)))
    for c in report.corrupt:
        t.add_row("corrupt", c.hash, Text(c.path))
    for path, why in report.unreadable:
        t.add_row("unreadable", "", Text(f"{path}: {why}"))
    for s in report.stray:
        t.add_row("stray", "", Text(s))
    for q in report.quarantined:
        t.add_row("quarantined", q.hash or "", Text(f"{human_size(q.size)}, {q.path}"))
    if not orphans_ok:
        for o in report.orphaned[:_MAX_ORPHANS_SHOWN]:
            t.add_row("orphaned", o.hash, Text(f"{human_size(o.size)}, {o.path}"))
        more = len(report.orphaned) - _MAX_ORPHANS_SHOWN
        if more > 0:
            t.add_row("orphaned", f"... and {more} more", Text("(--json lists all)"))
    return t


#: Orphans are listed up to this many in text output (a pruned store may have thousands).
_MAX_ORPHANS_SHOWN = 20
