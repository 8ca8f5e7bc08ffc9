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


#: The artifact table's columns in display order: (header, justify, width it never shrinks
#: below, drop rank). On a terminal too narrow for all, columns go by drop rank (the highest
#: first) until the rest fit; a kept column elides ("...") what does not fit, and no row ever
#: wraps onto more lines.
_COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("id", "left", 26, 0),
    ("kind", "left", 12, 1),
    ("size", "right", 9, 4),
    ("created (UTC)", "left", 19, 7),
    ("run", "left", 6, 3),
    ("pin", "left", 3, 6),
    ("metrics", "left", 12, 2),
    ("labels", "left", 10, 5),
)


def _cells(a: Artifact, metric: str | None) -> tuple[str, ...]:
    return (
        a.id,
        a.kind,
        human_size(a.size),
        _when(a.created_at),
        a.run_id or "",
        "yes" if a.pinned else "",
        _kv(a.metrics, metric),
        _kv(a.labels),
    )


def _artifact_table(
    arts: Sequence[Artifact], metric: str | None = None, width: int | None = None
) -> Table:
    """The artifacts as a table that fits ``width`` columns (a terminal's; ``None``: whole)."""
    if width is None:
        c = Console(highlight=False)
        width = c.width if c.is_terminal else None
    rows = [_cells(a, metric) for a in arts]
    natural = [max([len(h)] + [len(r[i]) for r in rows]) for i, (h, *_) in enumerate(_COLUMNS)]
    # What each column needs: its widest cell or header, but at most its elision floor.
    need = [min(n, c[2]) for n, c in zip(natural, _COLUMNS, strict=True)]
    keep = set(range(len(_COLUMNS)))
    by_rank = sorted(keep, key=lambda i: _COLUMNS[i][3])
    for i in reversed(by_rank):
        if width is None or sum(need[j] for j in keep) + 2 * (len(keep) - 1) <= width:
            break
        if _COLUMNS[i][3] > 0:
            keep.discard(i)
    widths: list[int | None] = [None] * len(_COLUMNS)
    if width is not None:
        # Each kept column gets what it needs; what is left goes to them by rank, up to each
        # one's widest cell, so that the most useful columns are elided last.
        spare = width - sum(need[j] for j in keep) - 2 * (len(keep) - 1)
        for i in by_rank:
            if i in keep:
                extra = max(0, min(spare, natural[i] - need[i]))
                widths[i] = need[i] + extra
                spare -= extra
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for i, (header, justify, _, _) in enumerate(_COLUMNS):
        if i in keep:
            t.add_column(
                header,
                justify=justify,  # type: ignore[arg-type]
                no_wrap=True,
                overflow="ellipsis",
                width=widths[i],
            )
    for r in rows:
        t.add_row(*(Text(r[i]) for i in range(len(_COLUMNS)) if i in keep))
    return t


def render_table(arts: Sequence[Artifact], metric: str | None, width: int) -> str:
    """The artifact table as ``ls`` prints it on a terminal ``width`` columns wide."""
    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False).print(_artifact_table(arts, metric, width))
    return buf.getvalue()


def _show_artifact(store: Store, a: Artifact, as_json: bool) -> None:
    path = store.existing_path(a)  # looking never writes: a packed blob has no file yet
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
        ("path", path or "(packed in the index: `runstash cat` prints the bytes)"),
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
