"""``ArtifactFacade``: the AetherGraph-compatible async API (a drop-in for ``context.artifacts()``).

Bound to a :class:`~runstash.Store` and a run / graph / node (and optionally a project), like
AetherGraph's facade. Index-only calls (``list``, ``search``, ``best``, ``pin``) answer inline,
from memory, without a thread hop; file work (``save``, ``ingest``, ``writer`` commits,
directories, loads) runs on runstash's own worker threads with the GIL released and completes
on the caller's loop (``_core.run_async``, measured ~1.7x less overhead per call than
``loop.run_in_executor``, see ``benches/aio_compare.py``), so the loop never stalls on I/O and
no Python thread pool is involved.

Both AetherGraph spellings are accepted: the 0.1.0a1 names of the seed document (``stage``,
``ingest``, ``save``, ``tmp_path``, ``mode=``, ``scope=``) and the newer ones (``stage_path``,
``ingest_file``, ``save_file``, ``metric_mode=``, ``level=``, ``view=``).

Deliberate differences from AetherGraph 0.1.0a15, each a fix:

- One record per write. AetherGraph ids are content hashes, so saving identical bytes twice
  merges (overwrites) the labels and metrics of the first save; here each write keeps its own
  record and id, while the bytes are still stored once (``sha256`` / ``hash`` dedup).
- ``save()`` leaves the caller's file in place unless ``cleanup=True`` (AetherGraph moves it).
- Label filters match exactly and by type (AetherGraph uses a case-insensitive ``LIKE``, where
  ``%`` and ``_`` are wildcards and int or bool labels never match).
- Rankings break ties by the older artifact first (AetherGraph: the newest); ``mode`` must be
  ``"max"`` or ``"min"`` (AetherGraph treats any typo as min); metrics must be finite numbers.
- ``pin`` of an unknown id raises ``NotFoundError`` (AetherGraph silently does nothing).
- Scope ids are the record's own fields, not labels; a write whose ``labels`` name a scope id
  (``run_id``, ``graph_id``, ``node_id``, ``project_id``) with another value than the facade's
  raises ``InvalidArgumentError`` (AetherGraph silently replaces the caller's value).
- ``ingest_dir`` keeps every file's bytes (AetherGraph's default deletes them and keeps only
  the manifest) and ``load_artifact`` of a directory returns a real, read-only directory path.
- ``load_artifact`` decodes by kind and extension (json, text, parquet, npy/npz); it never
  unpickles. A URI names the bytes, not the record: artifacts with identical bytes share one
  URI, and it decodes the way the most recent of them asked.
- A directory artifact's ``size`` / ``bytes`` is its manifest's size (the artifact's own
  bytes); the manifest lists every file's size (AetherGraph reports the files' total).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import _core, loaders
from ._core import Artifact
from .args import Labels, Metrics, _meta, check_limit
from .errors import IncompatibleStoreError, InvalidArgumentError, NotFoundError
from .mime import ext_for
from .mime import guess as guess_mime
from .store import TREE_MIME, Store
from .writer import ArtifactWriter

__all__ = ["ArtifactFacade", "Scope", "TREE_MIME"]

Scope = Literal["node", "graph", "run", "project", "all"]
_SCOPES = ("node", "graph", "run", "project", "all")
_SCOPE_KEYS = ("run_id", "graph_id", "node_id", "project_id")

T = TypeVar("T")


def _pick(name: str, *spellings: tuple[str, Any]) -> Any:
    """The one value given among several spellings of one keyword (None when none is)."""
    given = [(k, v) for k, v in spellings if v is not None]
    if len(given) > 1 and len({repr(v) for _, v in given}) > 1:
        names = ", ".join(f"{k}={v!r}" for k, v in given)
        raise InvalidArgumentError(f"{name} given twice with different values: {names}")
    return given[0][1] if given else None


def _check_suggested_uri(uri: str | None) -> str | None:
    if uri is None:
        return None
    p = uri.split("://", 1)[-1] if "://" in uri else uri
    parts = Path(p).parts
    if os.path.isabs(p) or ".." in parts:
        raise InvalidArgumentError(
            f"suggested_uri {uri!r} must be a relative name without '..' components"
        )
    return os.path.basename(p) or None


def _open_sha256(root: str | os.PathLike[str] | None) -> Store:
    """The store at ``root``, created with SHA-256 (AetherGraph's content hash) if new."""
    root = root or ".runstash"
    try:
        return Store(root, create=False)
    except NotFoundError:
        pass
    try:
        return Store(root, hash="sha256")
    except IncompatibleStoreError:
        # Created meanwhile by another process, with another hash: open it as it is.
        return Store(root, create=False)


class ArtifactFacade:
    """Artifacts of one run / graph / node, with AetherGraph's ``context.artifacts()`` API.

    ``ArtifactFacade(store, run_id=..., graph_id=..., node_id=..., project_id=...)``; ``store``
    may also be a path or an ``s3://`` URL (``None`` means the embedded default store,
    ``./.runstash``). A store the facade opens this way that does not exist yet is created
    with ``hash="sha256"``, so that ``Artifact.sha256`` is the SHA-256 of the bytes, as in
    AetherGraph (an existing store keeps its own hash; on a BLAKE3 store ``sha256`` is
    ``None`` and ``hash`` has the BLAKE3 digest). Pass a :class:`Store` to share one handle.

    Every write records the facade's scope ids; queries filter on them by ``scope``.

    :param store: a :class:`Store`, a store path or ``s3://`` URL, or ``None`` (``./.runstash``).
    :param run_id: the run this facade records into and queries (required, non-empty).
    :param graph_id: its graph; ``None``: records have none, and queries do not filter on it.
    :param node_id: its node; ``None``: likewise.
    :param project_id: its project; ``None``: records have none, and the ``"project"`` scope is
        the whole store.
    :raises InvalidArgumentError: ``run_id`` is empty or not a str, or the store at the path
        given cannot be opened (see :class:`Store`).
    :raises IncompatibleStoreError: the store at the path given was made by a newer runstash.
    :raises CorruptError: the store at the path given is damaged (see :class:`Store`).
    :raises StoreIOError: the OS (on S3: a request) refused to open or create the store.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        run_id: str,
        graph_id: str | None = None,
        node_id: str | None = None,
        project_id: str | None = None,
    ) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise InvalidArgumentError("run_id must be a non-empty string")
        self.store: Store = store if isinstance(store, Store) else _open_sha256(store)
        self.run_id = run_id
        self.graph_id = graph_id
        self.node_id = node_id
        self.project_id = project_id
        #: The artifact of the last successful save / ingest / writer / ingest_dir.
        self.last_artifact: Artifact | None = None
        self._decoders: OrderedDict[str, str] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"ArtifactFacade(store={self.store.root!r}, run_id={self.run_id!r}, "
            f"graph_id={self.graph_id!r}, node_id={self.node_id!r})"
        )

    # -- plumbing -------------------------------------------------------------------------

    async def _index(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """An index call: inline on a local store (answered from memory), off the loop on an
        S3 store (it may list the bucket or upload a segment)."""
        if self.store.is_remote:
            return await self._run(fn, *args, **kw)
        return fn(*args, **kw)

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` on a runstash worker thread, awaited on the running loop."""
        loop = asyncio.get_running_loop()
        return await _core.run_async(loop, functools.partial(fn, *args, **kw))

    def _scope_ids(self) -> dict[str, str | None]:
        return {
            "run_id": self.run_id,
            "graph_id": self.graph_id,
            "node_id": self.node_id,
            "project_id": self.project_id,
        }

    def _remember(self, art: Artifact, ext: str | None = None) -> Artifact:
        """Keeps how to decode an artifact's bytes, keyed by URI, for load_artifact."""
        if ext is None:
            ext = os.path.splitext(str(art.labels.get("filename", "")))[1] or ext_for(art.mime)
        how = "tree" if art.mime == TREE_MIME else loaders.decoder_for(art.kind, ext)
        self._decoders[art.uri] = how
        self._decoders.move_to_end(art.uri)
        while len(self._decoders) > 100_000:
            self._decoders.popitem(last=False)
        return art

    def _check_scope_labels(self, labels: Labels) -> None:
        """Refuses labels that give a scope id another value than the facade is bound to."""
        ids = self._scope_ids()
        for key in _SCOPE_KEYS:
            if key in labels and ids[key] is not None and labels[key] != ids[key]:
                raise InvalidArgumentError(
                    f"labels[{key!r}] = {labels[key]!r} clashes with the facade's {key} "
                    f"{ids[key]!r}: a facade records into the scope it is bound to (bind "
                    f"another ArtifactFacade, or use another label key)"
                )

    def _write_meta(
        self,
        kind: str,
        labels: Labels | None,
        metrics: Metrics | None,
        pin: bool,
        filename: str | None,
        mime: str | None = None,
    ) -> tuple[Any, ...]:
        if not isinstance(kind, str) or not kind:
            raise InvalidArgumentError("kind must be a non-empty string")
        labels = dict(labels or {})
        self._check_scope_labels(labels)
        if filename and "filename" not in labels and "name" not in labels:
            labels["filename"] = filename
        if mime is None and filename:
            mime = guess_mime(filename)
        ids = self._scope_ids()
        return _meta(
            kind,
            labels,
            metrics,
            ids["run_id"],
            ids["graph_id"],
            ids["node_id"],
            ids["project_id"],
            pin,
            mime,
        )

    def _filters(self, scope: str) -> dict[str, str | None]:
        if scope not in _SCOPES:
            raise InvalidArgumentError(f"scope must be one of {_SCOPES}, got {scope!r}")
        ids = self._scope_ids()
        if scope == "node":
            return {"run_id": ids["run_id"], "graph_id": ids["graph_id"], "node_id": ids["node_id"]}
        if scope == "graph":
            return {"run_id": ids["run_id"], "graph_id": ids["graph_id"]}
        if scope == "run":
            return {"run_id": ids["run_id"]}
        if scope == "project":
            return {"project_id": ids["project_id"]} if ids["project_id"] else {}
        return {}

    # -- staging and writes ---------------------------------------------------------------

    async def stage(self, ext: str = "") -> str:
        """An empty file in the store's staging area (same filesystem: ingest is a rename).

        :param ext: the file's extension, ``".png"`` or ``"png"`` (up to 32 ASCII letters, digits,
            ``.``, ``_`` or ``-``); ``""`` (the default): none. :meth:`ingest` picks the mime and
            the ``filename`` label from the staged name.
        :raises InvalidArgumentError: a bad ``ext``.
        :raises StoreIOError: the OS refused to create the file.
        :returns: the file's path.
        """
        return await self._run(self.store.stage, ext)

    async def stage_path(self, ext: str = "") -> str:
        """AetherGraph 0.1.0a15 name of :meth:`stage`.

        :param ext: the file's extension, as for :meth:`stage`.
        :raises InvalidArgumentError: a bad ``ext``.
        """
        return await self.stage(ext)

    async def tmp_path(self, suffix: str = "") -> str:
        """Alias of :meth:`stage` (AetherGraph 0.1.0a1).

        :param suffix: the file's extension, as ``ext`` of :meth:`stage` (same rules: not a
            free-form suffix).
        :raises InvalidArgumentError: a bad ``suffix``.
        """
        return await self.stage(suffix)

    async def stage_dir(self, suffix: str = "") -> str:
        """An empty directory in the staging area, for :meth:`ingest_dir`.

        :param suffix: appended to the directory's name: ``""`` (the default) or a plain name
            (no ``/``, ``\\`` or NUL, not ``"."`` or ``".."``).
        :raises InvalidArgumentError: a bad ``suffix``.
        :raises StoreIOError: the OS refused to create the directory.
        :returns: the directory's path.
        """
        return await self._run(self.store.stage_dir, suffix)

    async def ingest(
        self,
        staged_path: str,
        *,
        kind: str,
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        suggested_uri: str | None = None,
        pin: bool = False,
    ) -> Artifact:
        """Move a staged file into the store (a rename, no copy; on S3, an upload) and index it.
        Returns once it is stored with the store's durability (see :meth:`Store.put_bytes`); the
        artifact is also kept as ``last_artifact``.

        :param staged_path: a file from :meth:`stage`: a regular file directly in the staging area,
            not a symlink, with no other hard link. Its name is the ``filename`` label when there
            is no ``suggested_uri``.
        :param kind: what the artifact is (required): a non-empty str without ``/``, ``\\`` or NUL,
            and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values; a ``run_id``, ``graph_id``,
            ``node_id`` or ``project_id`` key must equal the facade's own (when it has one).
        :param metrics: str names to finite numbers, what :meth:`best` and :meth:`search` rank by.
        :param suggested_uri: a relative name (not absolute, no ``..``; a ``scheme://`` prefix is
            dropped) whose last component becomes the ``filename`` label (unless ``labels`` has
            ``filename`` or ``name``) and picks the mime; the bytes are stored by hash whatever it
            says.
        :param pin: record it pinned (default ``False``): retention never deletes it.
        :raises InvalidArgumentError: an empty or bad ``kind``, a bad label or metric, a label
            naming a scope id other than the facade's, or a bad ``suggested_uri``; nothing is
            stored.
        :raises NotFoundError: there is no file at ``staged_path``.
        :raises InvalidArgumentError: ``staged_path`` is outside the staging area, a symlink, not a
            regular file, or has several hard links.
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        :returns: the new :class:`Artifact`.
        """
        name = _check_suggested_uri(suggested_uri) or os.path.basename(os.fspath(staged_path))
        meta = self._write_meta(kind, labels, metrics, pin, name)
        art = await self._run(self.store._core.ingest, staged_path, meta)
        self.last_artifact = self._remember(art)
        return art

    async def ingest_file(self, staged_path: str, **kw: Any) -> Artifact:
        """AetherGraph 0.1.0a15 name of :meth:`ingest`; the keyword arguments (``kind``, ``labels``,
        ``metrics``, ``suggested_uri``, ``pin``) are :meth:`ingest`'s, and so is what it raises.

        :param staged_path: a file from :meth:`stage`, as for :meth:`ingest`.
        """
        return await self.ingest(staged_path, **kw)

    async def save(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str,
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        suggested_uri: str | None = None,
        pin: bool = False,
        cleanup: bool = False,
    ) -> Artifact:
        """Store a copy of an existing file and index it. The file stays where it is unless
        ``cleanup=True`` (then it is removed after the artifact is safely stored). Returns once
        the artifact is stored with the store's durability (see :meth:`Store.put_bytes`); it is
        also kept as ``last_artifact``.

        :param path: a regular file (a symlink to one is followed). Its name is the ``filename``
            label when there is no ``suggested_uri``.
        :param kind: what the artifact is (required): a non-empty str without ``/``, ``\\`` or NUL,
            and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values; a ``run_id``, ``graph_id``,
            ``node_id`` or ``project_id`` key must equal the facade's own (when it has one).
        :param metrics: str names to finite numbers, what :meth:`best` and :meth:`search` rank by.
        :param suggested_uri: a relative name (not absolute, no ``..``; a ``scheme://`` prefix is
            dropped) whose last component becomes the ``filename`` label (unless ``labels`` has
            ``filename`` or ``name``) and picks the mime; the bytes are stored by hash whatever it
            says.
        :param pin: record it pinned (default ``False``): retention never deletes it.
        :param cleanup: remove ``path`` once the artifact is stored (default ``False``; AetherGraph
            always moves the file).
        :raises InvalidArgumentError: an empty or bad ``kind``, a bad label or metric, a label
            naming a scope id other than the facade's, or a bad ``suggested_uri``; nothing is
            stored.
        :raises NotFoundError: there is no file at ``path``.
        :raises InvalidArgumentError: ``path`` is a directory, FIFO, socket or device.
        :raises OSError: with ``cleanup=True``, removing ``path`` failed (the artifact is stored,
            but ``last_artifact`` is not updated).
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        :returns: the new :class:`Artifact`.
        """
        name = _check_suggested_uri(suggested_uri) or os.path.basename(os.fspath(path))
        meta = self._write_meta(kind, labels, metrics, pin, name)
        art = await self._run(self.store._core.save, path, meta)
        if cleanup:
            await self._run(os.unlink, path)
        self.last_artifact = self._remember(art)
        return art

    async def save_file(self, path: str | os.PathLike[str], **kw: Any) -> Artifact:
        """AetherGraph 0.1.0a15 name of :meth:`save`; the keyword arguments (``kind``, ``labels``,
        ``metrics``, ``suggested_uri``, ``pin``, ``cleanup``) are :meth:`save`'s, and so is what
        it raises.

        :param path: the file to store, as for :meth:`save`.
        """
        return await self.save(path, **kw)

    @asynccontextmanager
    async def writer(
        self,
        *,
        kind: str,
        planned_ext: str | None = None,
        pin: bool = False,
        labels: Labels | None = None,
        metrics: Metrics | None = None,
    ) -> AsyncIterator[ArtifactWriter]:
        """An async context manager yielding a real binary file object; the artifact is stored
        and indexed on normal exit (then ``last_artifact`` is set), and nothing is left behind
        on an exception::

            async with arts.writer(kind="image", planned_ext=".png") as w:
                img.save(w, format="PNG")

        :param kind: what the artifact is (required): a non-empty str without ``/``, ``\\`` or NUL,
            and not ``"."`` or ``".."``.
        :param planned_ext: the extension of the bytes, e.g. ``".png"`` (up to 32 ASCII letters,
            digits, ``.``, ``_`` or ``-``): the ``filename`` label is ``kind + planned_ext``
            (unless ``labels`` has ``filename`` or ``name``), which picks the mime, and the
            extension picks how :meth:`load_artifact` decodes it; ``None``: no ``filename`` label,
            no mime.
        :param pin: record it pinned (default ``False``): retention never deletes it.
        :param labels: str keys to str / int / float / bool values; a ``run_id``, ``graph_id``,
            ``node_id`` or ``project_id`` key must equal the facade's own (when it has one).
        :param metrics: str names to finite numbers, what :meth:`best` and :meth:`search` rank by.
        :raises InvalidArgumentError: an empty or bad ``kind``, a bad ``planned_ext``, label or
            metric, or a label naming a scope id other than the facade's; raised on entering the
            block (also by the writer's ``add_labels`` for such a label).
        :raises StoreIOError: the OS (on S3: a request) refused a write or the commit.
        """
        ext = planned_ext or ""
        if ext and not ext.startswith("."):
            ext = "." + ext  # "png" means ".png", as for Store.writer
        meta = self._write_meta(kind, labels, metrics, pin, f"{kind}{ext}" if ext else None)
        core = await self._run(self.store._core.writer, ext, meta)
        w = ArtifactWriter(core)
        w._check_labels = self._check_scope_labels
        try:
            yield w
        except BaseException:
            await self._run(w._abort)
            raise
        try:
            art = await self._run(w._commit)
        except BaseException:
            await self._run(w._abort)
            raise
        self.last_artifact = self._remember(art, ext)

    async def ingest_dir(
        self,
        staged_dir: str,
        *,
        kind: str = "dir",
        labels: Labels | None = None,
        metrics: Metrics | None = None,
        suggested_uri: str | None = None,
        pin: bool = False,
        cleanup: bool = True,
        **kw: Any,
    ) -> Artifact:
        """Store a directory as one artifact: every file a blob, plus a manifest (sorted
        relative paths, sizes, hashes) whose hash is the artifact's. Symlinks that leave the
        directory are refused. With ``cleanup`` (the default) a directory from
        :meth:`stage_dir` is removed afterwards; its bytes are all in the store.

        AetherGraph's keywords ``store``, ``archive``, ``archive_name``, ``include`` and
        ``exclude`` are accepted and ignored (every file is stored); any other keyword raises
        ``TypeError``.

        :param staged_dir: the directory (from :meth:`stage_dir`, or anywhere).
        :param kind: what the artifact is (default ``"dir"``): a non-empty str without ``/``,
            ``\\`` or NUL, and not ``"."`` or ``".."``.
        :param labels: str keys to str / int / float / bool values; a ``run_id``, ``graph_id``,
            ``node_id`` or ``project_id`` key must equal the facade's own (when it has one).
        :param metrics: str names to finite numbers, what :meth:`best` and :meth:`search` rank by.
        :param suggested_uri: a relative name (not absolute, no ``..``; a ``scheme://`` prefix is
            dropped) whose last component becomes the ``filename`` label (unless ``labels`` has
            ``filename`` or ``name``); ``None``: no such label.
        :param pin: record it pinned (default ``False``): retention never deletes it.
        :param cleanup: remove the directory afterwards when it came from :meth:`stage_dir`
            (``True``, the default; a directory elsewhere is never removed).
        :raises InvalidArgumentError: an empty or bad ``kind``, a bad label or metric, a label
            naming a scope id other than the facade's, or a bad ``suggested_uri``; nothing is
            stored.
        :raises InvalidArgumentError: ``staged_dir`` is not a directory (or does not exist); an
            entry is a symlink pointing out of it or to nothing, a FIFO, socket or device, or has a
            name that is not UTF-8.
        :raises TypeError: an unknown keyword argument.
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        :returns: the new :class:`Artifact`.
        """
        unknown = set(kw) - {"store", "archive", "archive_name", "include", "exclude"}
        if unknown:
            raise TypeError(f"ingest_dir() got unexpected keyword arguments {sorted(unknown)}")
        name = _check_suggested_uri(suggested_uri)
        meta = self._write_meta(kind, labels, metrics, pin, name, mime=TREE_MIME)
        art = await self._run(self._ingest_dir_sync, os.fspath(staged_dir), meta, cleanup)
        self.last_artifact = self._remember(art)
        return art

    def _ingest_dir_sync(self, staged_dir: str, meta: tuple[Any, ...], cleanup: bool) -> Artifact:
        # The walk, its checks, the manifest and the commit are the core's (runstash_core::tree).
        return self.store._core.ingest_dir(staged_dir, meta, cleanup)

    # -- loading --------------------------------------------------------------------------

    async def load_artifact_bytes(self, uri: str) -> bytes:
        """The bytes of an artifact of this store, by URI (another store's URI is refused).

        :param uri: an artifact's ``uri`` (of this store), or its ``hash``.
        :raises NotFoundError: the bytes are not stored.
        :raises InvalidArgumentError: ``uri`` is not a blob URI or digest of this store.
        :raises StoreIOError: the OS (on S3: a request) refused the read.
        """
        return await self._run(self.store.read_bytes, uri)

    async def load_artifact(self, uri: str) -> Any:
        """An artifact decoded by kind / extension: json -> object, text -> str, parquet ->
        polars DataFrame, npy/npz -> numpy, a directory -> its read-only path, else bytes.
        Bytes this facade did not write are decoded as the newest record naming them asks
        (this run's first); bytes no record names are sniffed (npy, parquet, else bytes).

        :param uri: an artifact's ``uri`` (of this store), or its ``hash``.
        :raises NotFoundError: the bytes (or a file of a directory artifact) are not stored.
        :raises InvalidArgumentError: ``uri`` is not a blob URI or digest of this store.
        :raises CorruptError: a directory artifact's manifest is damaged.
        :raises ModuleNotFoundError: decoding needs polars or numpy, which is not installed.
        :raises ValueError: the bytes do not decode as their kind / extension says (invalid JSON
            or UTF-8).
        :raises StoreIOError: the OS (on S3: a request) refused the read.
        """
        how = self._decoders.get(uri)
        if how is None:
            how = await self._run(self._decoder_from_index, uri)
        if how == "tree":
            return await self._run(self._materialize_tree, uri)
        data = await self.load_artifact_bytes(uri)
        return loaders.decode(data, how or loaders.sniff(data))

    def _decoder_from_index(self, uri: str) -> str | None:
        """How to decode bytes this facade did not write: from the newest record naming them
        (this run's records first, then the whole store; a scan, so it is the slow path)."""
        digest = self.store._core.digest_of(uri)
        run_hits = [a for a in self.store.list(run_id=self.run_id) if a.hash == digest]
        all_hits = [a for a in self.store.list() if a.hash == digest]
        # Bytes that a directory artifact names (in any run) are its manifest, whatever other
        # records (newer ones, this run's) say about the same bytes.
        for hits in (
            [a for a in run_hits if a.mime == TREE_MIME],
            [a for a in all_hits if a.mime == TREE_MIME],
            run_hits,
            all_hits,
        ):
            if hits:
                return self._decoders.get(self._remember(hits[-1]).uri)
        return None

    def _materialize_tree(self, uri: str) -> str:
        return self.store.dir_of(uri)

    # -- index queries (inline on a local store: answered from memory) -------------------

    async def list(
        self,
        *,
        scope: Scope | None = None,
        level: str | None = None,
        view: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Artifacts in a scope (default "run"), newest first (as AetherGraph's list).

        :param scope: ``"node"`` (the facade's run, graph and node), ``"graph"`` (its run and
            graph), ``"run"`` (the default), ``"project"`` (its ``project_id``; a facade without
            one sees the whole store) or ``"all"``. A scope id the facade lacks is not filtered on.
        :param level: AetherGraph 0.1.0a15's name for ``scope``; giving both with different values
            raises InvalidArgumentError.
        :param view: another AetherGraph 0.1.0a15 name for ``scope``; as for ``level``, a
            different value raises InvalidArgumentError.
        :param limit: at most this many artifacts (the newest), a non-negative int; ``None`` (the
            default): all.
        :raises InvalidArgumentError: an unknown scope, ``scope`` / ``level`` / ``view`` given with
            different values, or a bad ``limit``.
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        """
        s = _pick("scope", ("scope", scope), ("level", level), ("view", view)) or "run"
        arts = await self._index(self.store.list, **self._filters(s))
        arts.reverse()
        n = check_limit(limit)
        return arts[:n] if n is not None else arts

    async def search(
        self,
        *,
        kind: str | None = None,
        labels: Labels | None = None,
        metric: str | None = None,
        mode: Literal["max", "min"] | None = None,
        scope: Scope | None = None,
        extra_scope_labels: dict[str, Any] | None = None,
        metric_mode: Literal["max", "min"] | None = None,
        level: str | None = None,
        view: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Index search within a scope (default "run"). ``labels``, the scope and
        ``extra_scope_labels`` are merged, in that order (later wins); scope id keys
        (run_id, graph_id, node_id, project_id) filter the record's scope ids, every other
        key its labels. With ``metric`` and a mode: ranked best first; otherwise newest first.

        :param kind: only artifacts of this kind (exact); ``None`` or ``""``: any.
        :param labels: label filters, matched exactly and by type (the int ``3`` does not match
            the string ``"3"``); scope id keys filter the scope ids, but the ids the scope sets
            win.
        :param metric: rank by this metric (artifacts without it are left out; ties: older
            first); only with a mode, otherwise it is ignored.
        :param mode: ``"max"`` (highest first) or ``"min"``; ``None`` (the default): no ranking.
            Only checked when ``metric`` is given.
        :param scope: ``"node"`` (the facade's run, graph and node), ``"graph"`` (its run and
            graph), ``"run"`` (the default), ``"project"`` (its ``project_id``; a facade without
            one sees the whole store) or ``"all"``. A scope id the facade lacks is not filtered on.
        :param level: AetherGraph 0.1.0a15's name for ``scope``; giving both with different values
            raises InvalidArgumentError.
        :param view: another AetherGraph 0.1.0a15 name for ``scope``; as for ``level``, a
            different value raises InvalidArgumentError.
        :param extra_scope_labels: more filters, merged last (they win over the scope): e.g.
            ``{"graph_id": "g2"}`` within ``scope="run"``.
        :param metric_mode: AetherGraph 0.1.0a15's name for ``mode``; giving both with different
            values raises InvalidArgumentError.
        :param limit: at most this many artifacts (the best, or the newest), a non-negative int;
            ``None`` (the default): all.
        :raises InvalidArgumentError: an unknown scope or mode, an alias given with a different
            value, a bad ``limit``, or a label key or value of the wrong type.
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        """
        s = _pick("scope", ("scope", scope), ("level", level), ("view", view)) or "run"
        m = _pick("mode", ("mode", mode), ("metric_mode", metric_mode))
        merged: dict[str, Any] = dict(labels or {})
        merged.update(self._filters(s))
        merged.update(extra_scope_labels or {})
        ids = {k: merged.pop(k) for k in _SCOPE_KEYS if k in merged}
        kind = kind or None
        if metric is not None and m is not None:
            return await self._index(
                self.store.search,
                kind=kind,
                labels=merged or None,
                metric=metric,
                mode=m,
                limit=limit,
                **ids,
            )
        arts = await self._index(self.store.list, kind=kind, labels=merged or None, **ids)
        arts.reverse()
        n = check_limit(limit)
        return arts[:n] if n is not None else arts

    async def best(
        self,
        *,
        kind: str | None,
        metric: str,
        mode: Literal["max", "min"] | None = None,
        scope: Scope | None = None,
        filters: dict[str, Any] | None = None,
        metric_mode: Literal["max", "min"] | None = None,
        level: str | None = None,
        view: str | None = None,
    ) -> Artifact | None:
        """The best artifact of ``kind`` by ``metric`` within a scope (default "run"), or None.
        ``filters`` are label filters (scope id keys filter the scope ids).

        :param kind: only artifacts of this kind (exact); ``None`` or ``""``: any (required
            keyword).
        :param metric: the metric to rank by; artifacts without it are left out (an unknown
            metric gives None). Ties go to the older artifact.
        :param mode: ``"max"`` (highest is best) or ``"min"``; required (here or as
            ``metric_mode``).
        :param scope: ``"node"`` (the facade's run, graph and node), ``"graph"`` (its run and
            graph), ``"run"`` (the default), ``"project"`` (its ``project_id``; a facade without
            one sees the whole store) or ``"all"``. A scope id the facade lacks is not filtered on.
        :param level: AetherGraph 0.1.0a15's name for ``scope``; giving both with different values
            raises InvalidArgumentError.
        :param view: another AetherGraph 0.1.0a15 name for ``scope``; as for ``level``, a
            different value raises InvalidArgumentError.
        :param filters: label filters, matched exactly and by type; scope id keys filter the scope
            ids, but the ids the scope sets win.
        :param metric_mode: AetherGraph 0.1.0a15's name for ``mode``; giving both with different
            values raises InvalidArgumentError.
        :raises InvalidArgumentError: no mode, an unknown mode or scope, an alias given with a
            different value, or a label key or value of the wrong type.
        :raises StoreIOError: the OS (on S3: a request) refused the work.
        """
        s = _pick("scope", ("scope", scope), ("level", level), ("view", view)) or "run"
        m = _pick("mode", ("mode", mode), ("metric_mode", metric_mode))
        if m is None:
            raise InvalidArgumentError('best() needs mode="max" or mode="min"')
        merged: dict[str, Any] = dict(filters or {})
        merged.update(self._filters(s))
        ids = {k: merged.pop(k) for k in _SCOPE_KEYS if k in merged}
        return await self._index(
            self.store.best, kind=kind or None, metric=metric, mode=m, labels=merged or None, **ids
        )

    async def pin(self, artifact_id: str, pinned: bool = True) -> None:
        """Pin (or unpin) an artifact. An unknown id raises NotFoundError.

        :param artifact_id: the artifact's id (a str).
        :param pinned: ``True`` (the default) pins, ``False`` unpins.
        :raises InvalidArgumentError: ``artifact_id`` is not a str.
        :raises NotFoundError: no live artifact has this id (also a malformed or deleted one).
        :raises StoreIOError: the OS (on S3: a request) refused the index write.
        """
        if not isinstance(artifact_id, str):
            raise InvalidArgumentError("artifact_id must be a string")
        try:
            await self._index(self.store.pin, artifact_id, pinned)
        except InvalidArgumentError:
            raise NotFoundError(f"no artifact with id {artifact_id!r}") from None
