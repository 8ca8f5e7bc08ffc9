"""Run-bundle helpers compatible with ``crv.io.artifacts``: swap the import, keep the results.

``from crv.io.artifacts import lab_dir, write_parquet_atomic`` becomes
``from runstash.bundle import lab_dir, write_parquet_atomic``. Names, signatures, defaults and
the returned dictionaries (their exact key sets) are those of crv; the layout is crv's::

    <root_dir>/runs/<run_id>/artifacts/lab/{tidy,probes,policy,audit}/<name>.(parquet|json|...)

What is fixed compared with crv (each point is pinned by tests/test_bundle.py):

- Bytes reach the final name through runstash's Rust atomic writer: a uniquely named temp file
  opened ``O_CREAT | O_EXCL`` beside the target, fsynced, renamed, then the directory fsynced.
  crv used ``<path>.tmp``, so concurrent writers of one path clobbered each other's temp file
  and most of them failed (5 of 8 threads); here they all succeed and the file is always one
  complete version. Text writes are fsynced too (crv did not), and so are the directories the
  helpers create.
- A failure (polars raising mid-write, a full disk, a target that is a directory) leaves no
  temp file behind and the previous version of the target untouched.
- A bare file name (``"summary.json"``) writes into the working directory (crv called
  ``makedirs("")`` and failed).
- Run ids that are empty, ``.``, ``..``, absolute or contain a path separator are refused with
  :class:`~runstash.errors.InvalidArgumentError` (a ``ValueError``) instead of escaping the
  run tree.
- ``write_parquet_atomic`` refuses a non-polars argument with ``TypeError`` before touching the
  disk (crv created the parent directory first).

Additions (keyword-only, off by default, so crv call sites are unaffected): the write helpers
take ``register=`` and ``store=`` to also record the written file in a runstash index with kind
``"lab.<subdir>"``; :func:`register_file` does the same for any existing file and returns the
:class:`~runstash.Artifact`.
"""

from __future__ import annotations

import io
import os
import threading
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._core import Artifact
from .errors import InvalidArgumentError
from .functions import write_atomic
from .mime import PARQUET as PARQUET_MIME
from .mime import guess as guess_mime
from .store import DEFAULT_ROOT, Store

if TYPE_CHECKING:
    import polars

__all__ = [
    "LAB_SUBDIRS",
    "IoSettings",
    "artifacts_root",
    "file_stat",
    "lab_dir",
    "register_file",
    "run_root",
    "write_parquet_atomic",
    "write_text_atomic",
]

#: The lab artifact subdirectories crv defines, in crv's order.
LAB_SUBDIRS: tuple[str, ...] = ("tidy", "probes", "policy", "audit")

LabSubdir = Literal["tidy", "policy", "probes", "audit"]
Partitioning = Literal["tick_buckets"]
Compression = Literal["zstd", "lz4", "snappy"]

_COMPRESSIONS = ("zstd", "lz4", "snappy")
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IoSettings:
    """Runtime settings of the run-bundle layout, as ``crv.io.config.IoSettings``.

    Only ``root_dir`` affects this module (everything lives under
    ``<root_dir>/runs/<run_id>``); the other fields are carried so that code which builds or
    reads crv settings keeps working. ``IoSettings()`` is the built-in defaults;
    :meth:`from_env` applies ``CRV_IO_*`` variables and :meth:`load` applies TOML then the
    environment (precedence: env > TOML > defaults), as crv does.

    Attributes:
        root_dir: Root under which run bundles live (``"out"``).
        partitioning: Table partitioning strategy; only ``"tick_buckets"``.
        tick_bucket_size: Ticks per bucket (100).
        row_group_size: Parquet row group size for crv's table writers (131072).
        compression: Parquet codec for crv's table writers: ``"zstd"``, ``"lz4"``, ``"snappy"``.
        fs_protocol: Filesystem protocol (``"file"``); this module only writes local files.
        fs_options: Filesystem options (TOML only).
        strict_schema: Whether crv validates table schemas strictly.
        write_manifest_every_n: How often crv persists its manifest (>= 1).
    """

    root_dir: str = "out"
    partitioning: Partitioning = "tick_buckets"
    tick_bucket_size: int = 100
    row_group_size: int = 131_072
    compression: Compression = "zstd"
    fs_protocol: str = "file"
    fs_options: dict[str, Any] = field(default_factory=dict)
    strict_schema: bool = True
    write_manifest_every_n: int = 1

    @classmethod
    def from_env(cls, base: IoSettings | None = None, prefix: str = "CRV_IO_") -> IoSettings:
        """Settings from environment variables; precedence env > ``base`` > defaults.

        Recognised (crv's names and parsing): ``CRV_IO_ROOT_DIR``, ``CRV_IO_PARTITIONING``
        (only ``"tick_buckets"``), ``CRV_IO_TICK_BUCKET_SIZE``, ``CRV_IO_ROW_GROUP_SIZE``,
        ``CRV_IO_COMPRESSION`` (``zstd``/``lz4``/``snappy``, any case), ``CRV_IO_FS_PROTOCOL``,
        ``CRV_IO_STRICT_SCHEMA`` (``1/true/t/yes/y/on`` are true, anything else false) and
        ``CRV_IO_WRITE_MANIFEST_EVERY_N``. Empty variables and unparsable values are ignored,
        as in crv; ``fs_options`` cannot be set from the environment.
        """
        names = (
            "root_dir",
            "partitioning",
            "tick_bucket_size",
            "row_group_size",
            "compression",
            "fs_protocol",
            "strict_schema",
            "write_manifest_every_n",
        )
        mapping: dict[str, Any] = {}
        for name in names:
            value = os.environ.get(prefix + name.upper())
            if value:
                mapping[name] = value
        return cls._apply(base if base is not None else cls(), mapping)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str] | None = None) -> IoSettings:
        """Settings from a TOML file over the defaults.

        With ``path=None`` the search is crv's: ``./crv.toml`` (an ``[io]`` table or top-level
        keys), then ``./pyproject.toml`` (``[tool.crv.io]``). A missing or unreadable file
        gives the defaults.
        """
        if path is not None:
            candidates = [Path(path)]
        else:
            candidates = [Path.cwd() / "crv.toml", Path.cwd() / "pyproject.toml"]
        for p in candidates:
            try:
                with p.open("rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if p.name == "pyproject.toml":
                tool = data.get("tool")
                crv = tool.get("crv") if isinstance(tool, dict) else None
                cfg = crv.get("io") if isinstance(crv, dict) else None
            else:
                cfg = data["io"] if isinstance(data.get("io"), dict) else data
            if isinstance(cfg, dict) and cfg:
                return cls._apply(cls(), cfg)
        return cls()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> IoSettings:
        """Settings with crv's precedence: environment > TOML (:meth:`from_toml`) > defaults."""
        return cls.from_env(base=cls.from_toml(path))

    @classmethod
    def _apply(cls, base: IoSettings, cfg: dict[str, Any]) -> IoSettings:
        """``base`` with the usable entries of a loose mapping (env strings or TOML values)
        applied; unusable entries are skipped, as crv does."""
        changes: dict[str, Any] = {}
        if isinstance(cfg.get("root_dir"), str):
            changes["root_dir"] = cfg["root_dir"]
        if cfg.get("partitioning") == "tick_buckets":
            changes["partitioning"] = "tick_buckets"
        for name in ("tick_bucket_size", "row_group_size", "write_manifest_every_n"):
            if name in cfg:
                try:
                    changes[name] = int(cfg[name])
                except (TypeError, ValueError):
                    pass
        comp = cfg.get("compression")
        if isinstance(comp, str) and comp.strip().lower() in _COMPRESSIONS:
            changes["compression"] = comp.strip().lower()
        if isinstance(cfg.get("fs_protocol"), str):
            changes["fs_protocol"] = cfg["fs_protocol"]
        if isinstance(cfg.get("fs_options"), dict):
            changes["fs_options"] = dict(cfg["fs_options"])
        if "strict_schema" in cfg:
            changes["strict_schema"] = _truthy(cfg["strict_schema"])
        return replace(base, **changes) if changes else base


def _truthy(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return bool(v)
    if isinstance(v, str):
        return v.strip().lower() in _TRUE
    return False


# -- paths ------------------------------------------------------------------------------------


def _check_run_id(run_id: object) -> str:
    """The run id as a single, safe path component, or InvalidArgumentError."""
    if run_id is None or isinstance(run_id, bytes | bytearray):
        raise InvalidArgumentError(f"run_id must be a string, got {run_id!r}")
    rid = str(run_id)  # crv's RunId is a str; crv itself calls str(run_id)
    if rid in ("", ".", ".."):
        raise InvalidArgumentError(f"invalid run_id {rid!r}: must name a directory")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in rid for s in seps) or "\x00" in rid:
        raise InvalidArgumentError(
            f"invalid run_id {rid!r}: must not contain a path separator or NUL"
        )
    if os.path.isabs(rid) or os.path.splitdrive(rid)[0]:
        raise InvalidArgumentError(f"invalid run_id {rid!r}: must not be an absolute path")
    return rid


def run_root(settings: IoSettings, run_id: str) -> str:
    """Root directory of a run: ``"<root_dir>/runs/<run_id>"`` (pure: nothing is created).

    Raises:
        InvalidArgumentError: (a ``ValueError``) when ``run_id`` is empty, ``.``, ``..``,
            absolute, or contains a path separator.
    """
    return os.path.join(os.fspath(settings.root_dir), "runs", _check_run_id(run_id))


def artifacts_root(settings: IoSettings, run_id: str) -> str:
    """Root directory of a run's artifacts: ``"<root_dir>/runs/<run_id>/artifacts"``.

    Pure: nothing is created. Raises InvalidArgumentError for an unsafe ``run_id``
    (see :func:`run_root`).
    """
    return os.path.join(run_root(settings, run_id), "artifacts")


def lab_dir(settings: IoSettings, run_id: str, subdir: LabSubdir) -> str:
    """Directory of one kind of lab artifact, created if missing:
    ``"<root_dir>/runs/<run_id>/artifacts/lab/<subdir>"``.

    ``subdir`` is one of ``"tidy"``, ``"policy"``, ``"probes"``, ``"audit"``. Directories
    that this call creates are made durable (their parent directories are fsynced).

    Raises:
        InvalidArgumentError: (a ``ValueError``) naming the bad ``subdir``, or for an unsafe
            ``run_id``; nothing is created then.
    """
    if subdir not in LAB_SUBDIRS:
        raise InvalidArgumentError(
            f"unknown lab artifacts subdir {subdir!r}; expected one of {LAB_SUBDIRS}"
        )
    p = os.path.join(artifacts_root(settings, run_id), "lab", subdir)
    _makedirs_durable(p)
    return p


# -- files ------------------------------------------------------------------------------------


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


def file_stat(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Basic facts about a file: ``{"path": path, "bytes": int, "created_at": ISO 8601}``.

    As in crv, ``bytes`` is 0 when the file does not exist and ``created_at`` is the time of
    this call (UTC), not the file's creation time.
    """
    p = os.fspath(path)
    try:
        size = os.stat(p).st_size
    except OSError:
        size = 0
    return {"path": p, "bytes": int(size), "created_at": _utc_now_iso()}


def _fsync_dir(d: str) -> None:
    fd = os.open(d or os.curdir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(d: str) -> None:
    """``os.makedirs(d, exist_ok=True)``, then fsync the parent of every directory it made, so
    that a file later published inside survives a power cut together with its path."""
    if not d or os.path.isdir(d):
        return
    missing: list[str] = []
    cur = os.path.abspath(d)
    while not os.path.isdir(cur):
        missing.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    for p in reversed(missing):
        try:
            os.mkdir(p)
        except FileExistsError:
            if not os.path.isdir(p):  # a file is in the way: report it as makedirs would
                raise
    for p in reversed(missing):
        _fsync_dir(os.path.dirname(p))


def _dest(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"path must be a str or os.PathLike[str], not {type(p).__name__}")
    if not p:
        raise InvalidArgumentError("path must not be empty")
    return p


def _publish(dest: str, payload: bytes | memoryview) -> None:
    """Create the parent directories, then publish ``payload`` at ``dest`` with the Rust atomic
    writer (unique O_EXCL temp beside it, fsync, rename, fsync of the directory)."""
    parent = os.path.dirname(dest)
    _makedirs_durable(parent)
    # A bare name goes through "./name": the directory to fsync must not be "".
    write_atomic(dest if parent else os.path.join(os.curdir, dest), payload, "fsync")


def _check_store(store: object) -> None:
    if store is not None and not isinstance(store, Store):
        raise TypeError(f"store must be a runstash.Store or None, not {type(store).__name__}")


def write_text_atomic(
    path: str | os.PathLike[str],
    text: str,
    *,
    register: bool = False,
    store: Store | None = None,
) -> dict[str, Any]:
    """Atomically and durably write a text/JSON payload as UTF-8.

    Args:
        path: Final destination path. Missing parent directories are created; a bare file
            name is written into the working directory.
        text: The text (a ``str``).
        register: Also record the file in the default store (``runstash.Store()``, i.e.
            ``./.runstash``), with kind ``"lab.<subdir>"`` (see :func:`register_file`).
        store: Record the file in this store (implies ``register``).

    Returns:
        dict: ``file_stat(path) + {"wrote_text": True}``, exactly crv's keys; ``bytes`` is the
        size of what this call wrote. To get the index record, call :func:`register_file`
        instead of passing ``register``, or query the store by kind and ``labels={"path":
        ...}``.

    Raises:
        TypeError: ``text`` is not a ``str`` (nothing touched on disk).
        UnicodeEncodeError: ``text`` cannot be encoded (e.g. a lone surrogate); nothing touched.
        OSError: the write failed; the previous file, if any, is intact and no temp is left.
    """
    dest = _dest(path)
    if not isinstance(text, str):
        raise TypeError(f"write_text_atomic expects a str, not {type(text).__name__}")
    _check_store(store)
    payload = text.encode("utf-8")
    _publish(dest, payload)
    st = _written_stat(dest, len(payload))
    st["wrote_text"] = True
    if register or store is not None:
        _register(dest, payload, store, None, None, guess_mime(dest) or "text/plain")
    return st


def write_parquet_atomic(
    path: str | os.PathLike[str],
    df: polars.DataFrame,
    *,
    register: bool = False,
    store: Store | None = None,
) -> dict[str, Any]:
    """Atomically and durably write a polars DataFrame as parquet (polars' defaults).

    The parquet bytes are produced in memory, then published with the same atomic writer as
    :func:`write_text_atomic`, so a writer that fails midway never leaves a file behind.

    Args:
        path: Final parquet path. Missing parent directories are created; a bare file name is
            written into the working directory.
        df: A ``polars.DataFrame`` (polars is imported lazily).
        register: Also record the file in the default store (see :func:`write_text_atomic`).
        store: Record the file in this store (implies ``register``).

    Returns:
        dict: ``file_stat(path) + {"rows": int}``, exactly crv's keys.

    Raises:
        TypeError: ``df`` is not a ``polars.DataFrame`` (raised before touching the disk).
        RuntimeError: polars is not installed.
        OSError: the write failed; the previous file, if any, is intact and no temp is left.
    """
    try:
        import polars as pl
    except ImportError as e:  # pragma: no cover - polars is a test dependency
        raise RuntimeError("polars is required to write parquet artifacts") from e
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"write_parquet_atomic expects a polars.DataFrame, not {type(df).__name__}")
    dest = _dest(path)
    _check_store(store)
    buf = io.BytesIO()
    df.write_parquet(buf)
    with buf.getbuffer() as payload:
        _publish(dest, payload)
        st = _written_stat(dest, payload.nbytes)
        st["rows"] = int(df.height)
        if register or store is not None:
            _register(dest, payload, store, None, None, PARQUET_MIME)
    return st


def _written_stat(dest: str, size: int) -> dict[str, Any]:
    # The size of what we published, not a stat of the path: another writer may already have
    # replaced the file (crv's file_stat would then report someone else's size).
    return {"path": dest, "bytes": size, "created_at": _utc_now_iso()}


# -- registration -----------------------------------------------------------------------------

_default_stores: dict[str, Store] = {}
_default_stores_lock = threading.Lock()


def _default_store() -> Store:
    """``runstash.Store()`` for the working directory, opened once per process and root."""
    root = os.path.abspath(DEFAULT_ROOT)
    with _default_stores_lock:
        s = _default_stores.get(root)
        if s is None:
            s = _default_stores[root] = Store(root)
        return s


def _classify(path: str, subdir: str | None, run_id: str | None) -> tuple[str, str | None, str]:
    """(kind, run_id, path label) of a file, from its place in the run-bundle layout."""
    if subdir is not None and subdir not in LAB_SUBDIRS:
        raise InvalidArgumentError(
            f"unknown lab artifacts subdir {subdir!r}; expected one of {LAB_SUBDIRS}"
        )
    if run_id is not None:
        run_id = _check_run_id(run_id)
    parts = Path(os.path.abspath(path)).parts
    found_run: str | None = None
    found_sub: str | None = None
    label = os.path.basename(path)
    # The rightmost ".../runs/<run_id>/artifacts/..." (root_dir itself may contain "runs").
    for i in range(len(parts) - 4, -1, -1):
        if parts[i] != "runs" or parts[i + 2] != "artifacts":
            continue
        if run_id is not None and parts[i + 1] != run_id:
            continue
        found_run = parts[i + 1]
        label = "/".join(parts[i + 2 :])
        if len(parts) > i + 5 and parts[i + 3] == "lab" and parts[i + 4] in LAB_SUBDIRS:
            found_sub = parts[i + 4]
        break
    kind = f"lab.{subdir or found_sub or 'file'}"
    return kind, run_id or found_run, label


def _register(
    path: str,
    data: bytes | memoryview | None,
    store: Store | None,
    subdir: str | None,
    run_id: str | None,
    mime: str | None,
) -> Artifact:
    kind, rid, label = _classify(path, subdir, run_id)
    s = store if store is not None else _default_store()
    meta: dict[str, Any] = {"kind": kind, "labels": {"path": label}, "run_id": rid, "mime": mime}
    if data is None:
        return s.save(path, **meta)
    # The write helpers record the bytes they published, not whatever is at the path by now
    # (a concurrent writer may have replaced it in between).
    return s.put_bytes(data, **meta)


def register_file(
    path: str | os.PathLike[str],
    *,
    store: Store | None = None,
    subdir: str | None = None,
    run_id: str | None = None,
) -> Artifact:
    """Record an existing file in a runstash index (a copy of its bytes goes into the store's
    blobs; the file itself is left in place) and return the :class:`~runstash.Artifact`.

    The record has kind ``"lab.<subdir>"``, ``run_id`` and ``labels={"path": <path>}``:

    - ``subdir`` defaults to the lab subdirectory the file sits in
      (``.../runs/<run_id>/artifacts/lab/<subdir>/...``), else ``"file"`` (kind
      ``"lab.file"``); given explicitly, it must be one of :data:`LAB_SUBDIRS`.
    - ``run_id`` defaults to the ``<run_id>`` of that layout, else None.
    - the ``path`` label is the path relative to the run root (``"artifacts/lab/tidy/x.parquet"``,
      with ``/`` separators), or the file name when the file is not inside a run.

    ``store`` defaults to ``runstash.Store()`` (``./.runstash``, opened once per process).
    ``write_text_atomic(..., register=True)`` and ``write_parquet_atomic(..., register=True)``
    record their file the same way but return crv's dictionary; call this function after a
    plain write when you need the record itself.

    Raises:
        InvalidArgumentError: a bad ``subdir`` or ``run_id`` (before anything is stored).
        NotFoundError: the file does not exist.
    """
    _check_store(store)
    dest = _dest(path)
    return _register(dest, None, store, subdir, run_id, guess_mime(dest))
