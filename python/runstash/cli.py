"""The ``runstash`` command (also ``python -m runstash``): look inside a store, check it,
reclaim space, and run the demo.

Exit codes a script can rely on: 0 ok; 1 ``verify`` found problems; 2 usage error (bad
option or value); 3 not found (an unknown id, no store at the path, no matching artifact) or
a store error. Every error is one line on stderr, ``runstash: error: ...``. With ``--json`` a
command prints one JSON document on stdout and nothing else there (progress goes to stderr,
and only to a terminal). A reader that closes the pipe early (``runstash ls | head``) ends
the command quietly with 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ._core import Artifact
from .args import Labels
from .cli_open import add_store_options, open_store
from .cli_text import (
    _artifact_table,
    _emit_json,
    _err,
    _n,
    _print,
    _problem_table,
    _show_artifact,
    _status,
    human_size,
)
from .demo import run_demo
from .errors import InvalidArgumentError, NotFoundError, RunstashError
from .functions import write_atomic
from .reports import GcReport
from .store import DEFAULT_GC_GRACE, Store

__all__ = ["EXIT_NOT_FOUND", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "build_parser", "main"]

#: Success.
EXIT_OK = 0
#: ``verify`` found missing, corrupt, orphaned, stray, unreadable or quarantined blobs.
EXIT_PROBLEMS = 1
#: A usage error: unknown option, bad value.
EXIT_USAGE = 2
#: Not found (no store at the path, an unknown id, nothing matches) or a store error.
EXIT_NOT_FOUND = 3
#: Rows ``ls`` prints in its table unless given ``--limit`` (``--json`` prints every match).
LS_ROWS = 50

_EPILOG = """\
exit codes: 0 ok, 1 verify found problems, 2 usage error, 3 not found or store error.
Errors are one line on stderr ("runstash: error: ..."); with --json, stdout holds exactly one
JSON document. Label filters are KEY=VALUE; VALUE is read as JSON when it is a number, true,
false or a quoted string (seed=3 is the int 3, 'seed="3"' the string "3"), else as text.
"""


class CliError(Exception):
    """An error the command reports on one stderr line, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one stderr line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"runstash: error: {_one_line(message)}\n")
    raise SystemExit(code)


def _one_line(message: str) -> str:
    return " ".join(message.split())


# -- argument types -------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"1d"``."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 0, 90s, 15m, 2h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_label(text: str) -> tuple[str, str | int | float | bool]:
    """``KEY=VALUE``: VALUE as a JSON number, boolean or string when it reads as one, else
    the text itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    if isinstance(value, float) and not math.isfinite(value):
        return key, raw
    if isinstance(value, str | int | float | bool):
        return key, value
    return key, raw


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return n


def _labels(args: argparse.Namespace) -> Labels | None:
    pairs = getattr(args, "label", None)
    return dict(pairs) if pairs else None


def _duration_text(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds / n:g}{unit}"
    return f"{seconds:g}s"


def _get(store: Store, ref: str) -> Artifact:
    a = store.get(ref)
    if a is None:
        raise CliError(f"no artifact with id {ref!r}")
    return a


# -- commands -------------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    store = open_store(args)
    filters: dict[str, Any] = {
        "kind": args.kind,
        "run_id": args.run,
        "labels": _labels(args),
        "pinned": args.pinned,
    }
    limit = args.limit if args.limit is not None or args.json else LS_ROWS
    if args.sort:
        arts = store.search(**filters, metric=args.sort, mode=args.mode, limit=limit)
        if not arts:  # as `best`: nothing ranks by a metric no matching artifact has
            raise CliError(f"no matching artifact has the metric {args.sort!r}")
    else:
        arts = store.list(**filters, limit=limit)
    if args.json:
        _emit_json([a.to_dict() for a in arts])
        return EXIT_OK
    if not arts:
        _print("no artifacts match", stderr=True)
        return EXIT_OK
    _print(_artifact_table(arts, args.sort))
    total = store.count(kind=args.kind, run_id=args.run, labels=_labels(args), pinned=args.pinned)
    if args.sort:
        shown = f"{len(arts)} of {total} matching, best first by {args.sort} ({args.mode})"
    else:
        shown = f"{len(arts)} of {total} matching, oldest first"
    if args.limit is None and total > len(arts):
        shown += f"; {total - len(arts)} more (--limit N shows N)"
    _print(Text(shown))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    store = open_store(args)
    _show_artifact(store, _get(store, args.id), args.json)
    return EXIT_OK


def _best(args: argparse.Namespace) -> int:
    store = open_store(args)
    a = store.best(
        metric=args.metric, mode=args.mode, kind=args.kind, run_id=args.run, labels=_labels(args)
    )
    if a is None:
        raise CliError(f"no matching artifact has the metric {args.metric!r}")
    _show_artifact(store, a, args.json)
    return EXIT_OK


def _cat(args: argparse.Namespace) -> int:
    store = open_store(args)
    ref = args.ref
    a = store.get(ref)
    if a is not None:
        ref = a.hash
    elif ":" not in ref:
        raise CliError(f"no artifact with id {args.ref!r}")
    out = sys.stdout.buffer
    path = None if args.verify else store.existing_path(ref)
    if path is None:  # verify, or packed (small) bytes: read them, writing no file
        out.write(store.read_bytes(ref, verify=args.verify))
    else:
        with open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    out.flush()
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    store = open_store(args)
    err = _err()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("verify", total=None)

        def tick(done: int, total: int, nbytes: int, total_bytes: int) -> None:
            progress.update(
                task,
                completed=nbytes,
                total=total_bytes,
                description=f"verify {done}/{total} blobs",
            )

        report = store.verify_report(progress=tick)
    bad = (
        not report.intact
        or report.stray
        or report.quarantined
        or (report.orphaned and not args.orphans_ok)
    )
    if args.json:
        _emit_json(report.to_dict())
        return EXIT_PROBLEMS if bad else EXIT_OK
    problems = _problem_table(report, args.orphans_ok)
    if problems.row_count:
        _print(problems)
    _print(
        Text(
            f"{_n(report.checked, 'blob')} checked ({human_size(report.checked_bytes)}): "
            f"{len(report.missing)} missing, {len(report.corrupt)} corrupt, "
            f"{len(report.orphaned)} orphaned, {len(report.stray)} stray, "
            f"{len(report.unreadable)} unreadable, {len(report.quarantined)} quarantined"
        )
    )
    if report.quarantined:
        hint = (
            "quarantined files are damaged copies moved aside (writing the same bytes again "
            "heals the records); inspect and remove them from quarantine/"
        )
        _print(Text(hint))
    if report.orphaned and report.intact:
        hint = "orphaned blobs are not damage: 'runstash gc' reclaims them"
        _print(Text(hint))
    return EXIT_PROBLEMS if bad else EXIT_OK


def _gc_summary(report: GcReport, grace: float) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    text = f"{verb} {_n(report.deleted_count, 'unreferenced blob')} "
    text += f"({human_size(report.deleted_bytes)}); "
    if grace > 0:
        text += f"kept {report.recent} younger than {_duration_text(grace)} "
        text += f"({human_size(report.recent_bytes)}); "
    if report.trees_removed:
        gone = "would remove" if report.dry_run else "removed"
        text += f"{gone} {_n(report.trees_removed, 'built tree')} of deleted directories; "
    if report.pending:
        size = human_size(report.pending_bytes)
        text += f"{_n(report.pending, 'blob')} marked unreferenced ({size}), "
        text += "for a later gc to delete (S3); "
    return text + f"{report.scanned} blob files scanned"


def _gc(args: argparse.Namespace) -> int:
    store = open_store(args)
    with _status("scanning blobs"):
        report = store.gc(dry_run=not args.yes, grace=args.grace)
    if args.json:
        _emit_json(report.to_dict())
        return EXIT_OK
    _print(Text(("gc (dry run): " if report.dry_run else "gc: ") + _gc_summary(report, args.grace)))
    if report.dry_run and report.deleted:
        _print(Text("run again with --yes to delete them"))
    return EXIT_OK


def _keep_best(args: argparse.Namespace) -> int:
    store = open_store(args)
    with _status("planning"):
        report = store.keep_best(
            kind=args.kind,
            metric=args.metric,
            mode=args.mode,
            k=args.k,
            per=args.per,
            labels=_labels(args),
            run_id=args.run,
            dry_run=not args.yes,
            grace=args.grace,
        )
    if args.json:
        _emit_json(report.to_dict())
        return EXIT_OK
    per = f"per {args.per}" if args.per else "in one group"
    head = "keep-best (dry run)" if report.dry_run else "keep-best"
    _print(
        Text(
            f"{head}: kind {args.kind!r}, top {args.k} by {args.metric} ({args.mode}) {per}; "
            f"groups: {report.groups}"
        )
    )
    _print(
        Text(
            f"kept: {report.kept} in a top {args.k}, {report.kept_pinned} pinned beyond it, "
            f"{report.unranked} without the metric"
        )
    )
    verb = "would delete" if report.dry_run else "deleted"
    _print(Text(f"{verb}: {_n(len(report.deleted), 'record')}"))
    if report.deleted and report.dry_run:
        shown = [a for a in (store.get(i) for i in report.deleted[:20]) if a is not None]
        _print(_artifact_table(shown, args.metric))
        if len(report.deleted) > len(shown):
            _print(Text(f"... and {len(report.deleted) - len(shown)} more (--json lists all)"))
    _print(Text("gc: " + _gc_summary(report.gc, args.grace)))
    if report.dry_run and report.deleted:
        _print(Text("run again with --yes to delete them"))
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    with _status("scanning blobs"):
        s = store.stats()
    if args.json:
        _emit_json(s.to_dict())
        return EXIT_OK
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column("what", style="bold", no_wrap=True)
    t.add_column("count", justify="right")
    t.add_column("bytes", justify="right")
    t.add_row("live records", str(s.records), human_size(s.live_bytes))
    t.add_row("distinct blobs they name", str(s.blob_count), human_size(s.blob_bytes))
    t.add_row("dedup ratio", f"{s.dedup_ratio:.2f}x", "")
    t.add_row("blob files on disk", str(s.disk_blobs), human_size(s.disk_bytes))
    t.add_row("orphaned (gc can reclaim)", str(s.orphan_blobs), human_size(s.orphan_bytes))
    t.add_row("missing", str(s.missing_blobs), "")
    t.add_row("stray files in blobs/", str(s.stray_files), "")
    t.add_row("quarantined (damaged)", str(s.quarantined_files), human_size(s.quarantined_bytes))
    t.add_row("staging leftovers", str(s.staging_files), human_size(s.staging_bytes))
    t.add_row("index", "", human_size(s.index_bytes))
    _print(t)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        df = store.to_polars()
    except ImportError as e:
        raise CliError(f"export needs polars and pyarrow ({e}); pip install polars pyarrow") from e
    buf = io.BytesIO()
    df.write_parquet(buf)
    write_atomic(args.parquet, buf.getvalue())  # readers see the old file or the whole new one
    _print(Text(f"exported {df.height} artifacts to {args.parquet}"))
    return EXIT_OK


# -- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``runstash`` command."""
    p = _Parser(
        prog="runstash",
        description="Look inside a runstash store, check it, reclaim space, run the demo.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(p, defaults=True)
    # --store and the S3 flags are accepted after the subcommand too (runstash ls --store P).
    common = argparse.ArgumentParser(add_help=False)
    add_store_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> _Parser:
        c = sub.add_parser(name, help=help, description=help, parents=[common])
        c.set_defaults(func=func)
        return c  # type: ignore[return-value]

    def filters(c: argparse.ArgumentParser, *, run: bool = True) -> None:
        c.add_argument("--kind", help="only artifacts of this kind")
        if run:
            c.add_argument("--run", metavar="RUN_ID", help="only artifacts of this run")
        c.add_argument(
            "--label",
            metavar="KEY=VALUE",
            type=parse_label,
            action="append",
            help="only artifacts with this label (repeatable; all must match)",
        )

    def json_flag(c: argparse.ArgumentParser) -> None:
        c.add_argument("--json", action="store_true", help="print JSON on stdout")

    def mode(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--mode",
            choices=["max", "min"],
            default="max",
            help="best is the largest (max) or smallest (min) value (default: max)",
        )

    def grace(c: argparse.ArgumentParser) -> None:
        default = DEFAULT_GC_GRACE.total_seconds()
        c.add_argument(
            "--grace",
            type=parse_duration,
            default=default,
            metavar="DURATION",
            help="keep unreferenced blobs younger than this, as writes in progress may still "
            f"record them (e.g. 0, 90s, 15m, 2h; default: {_duration_text(default)})",
        )

    c = command("ls", "list artifacts (oldest first, or best first with --sort)", _ls)
    filters(c)
    pin = c.add_mutually_exclusive_group()
    pin.add_argument(
        "--pinned",
        dest="pinned",
        action="store_const",
        const=True,
        default=None,
        help="only pinned artifacts",
    )
    pin.add_argument(
        "--unpinned",
        dest="pinned",
        action="store_const",
        const=False,
        help="only unpinned artifacts",
    )
    c.add_argument("--sort", metavar="METRIC", help="rank by this metric, best first (see --mode)")
    mode(c)
    c.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help=f"at most N artifacts (default: {LS_ROWS} in the table, all with --json)",
    )
    json_flag(c)

    c = command("show", "show one artifact's record", _show)
    c.add_argument("id", metavar="ID", help="the artifact id")
    json_flag(c)

    c = command("best", "show the best artifact by a metric", _best)
    filters(c)
    c.add_argument("--metric", required=True, help="the metric to rank by")
    mode(c)
    json_flag(c)

    c = command("cat", "write an artifact's bytes to stdout", _cat)
    c.add_argument("ref", metavar="ID", help="an artifact id (or a blob hash, algo:hex)")
    c.add_argument("--verify", action="store_true", help="re-hash first; exit 3 if corrupt")

    c = command(
        "verify",
        "re-hash every blob; report missing, corrupt, orphaned, stray blobs; exit 1 on any",
        _verify,
    )
    c.add_argument(
        "--orphans-ok",
        action="store_true",
        help="do not count orphaned blobs (reclaimable, not damage) as problems",
    )
    json_flag(c)

    c = command("gc", "delete blobs no live record names (only reports without --yes)", _gc)
    c.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    grace(c)
    json_flag(c)

    c = command(
        "keep-best",
        "retention: keep the top k records of each group by a metric, delete the rest (never a "
        "pinned one), then gc; only reports without --yes",
        _keep_best,
    )
    c.add_argument("--kind", required=True, help="the kind of artifact to prune")
    c.add_argument("--run", metavar="RUN_ID", help="only records of this run")
    c.add_argument(
        "--label",
        metavar="KEY=VALUE",
        type=parse_label,
        action="append",
        help="only records with this label (repeatable)",
    )
    c.add_argument("--metric", required=True, help="the metric to rank by")
    mode(c)
    c.add_argument(
        "--k", type=_positive_int, required=True, metavar="N", help="records to keep per group"
    )
    c.add_argument(
        "--per",
        choices=["run", "graph", "node"],
        help="group by run, by (run, graph) or by (run, graph, node) (default: one group)",
    )
    c.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    grace(c)
    json_flag(c)

    c = command("stats", "space accounting: records, blobs, dedup, orphans, leftovers", _stats)
    json_flag(c)

    c = command("export", "write the index as a table file (one row per artifact)", _export)
    c.add_argument("--parquet", required=True, metavar="FILE", help="write Parquet here (polars)")

    c = command("demo", "run a small simulation loop that stores artifacts", run_demo)
    c.add_argument("--steps", type=int, default=500, help="simulation steps (default: %(default)s)")
    c.add_argument(
        "--durability",
        choices=["fsync", "os"],
        default="fsync",
        help="store durability (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runstash`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as e:
        _fail(str(e), e.code)
    except InvalidArgumentError as e:
        _fail(str(e), EXIT_USAGE)
    except (NotFoundError, RunstashError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            return _broken_pipe()
        _fail(str(e), EXIT_NOT_FOUND)
    except KeyboardInterrupt:
        sys.stderr.write("runstash: interrupted\n")
        return 130


def _broken_pipe() -> int:
    """stdout's reader went away (``runstash ls | head``): stop quietly."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13  # as if killed by SIGPIPE, like other tools in a pipe
