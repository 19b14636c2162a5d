"""Parameter sweeps -> labelled ``xarray.Dataset``: vmap in process, or chunks on Dask.

A sweep evaluates ``fn(**point)`` on the Cartesian product of its axes. The grid is flattened in
C order and cut into chunks of ``chunk_size`` consecutive points. Each chunk is evaluated

* in process by ``jax.vmap`` (one jitted call per chunk; the last chunk is padded so that every
  call has the same shape and nothing recompiles), or by a plain loop, or
* as one Dask task on a ``distributed`` cluster: an in-process ``LocalCluster`` by default, or
  an existing scheduler given by its address (``"tcp://host:port"``) or a ``Client``.

With ``store=<folder>`` each finished chunk is written at once to its own netCDF file (netCDF-4
via h5netcdf when h5py is installed, else netCDF-3 via scipy). Running the same sweep again with
the same store loads the finished chunks and computes only the missing ones; ``result.nc`` holds
the assembled Dataset once every chunk is done. Nothing half-written or corrupt is ever used:

* every file is written to a temporary name (``.<name>.<host>-<pid>-<random>.tmp``), flushed to
  disk and renamed, so a killed sweep leaves either the whole file or none;
* temporary files left by a killed writer (its process gone, or older than a day when written
  from another host, or of the unnamed form of quasirl before issue 15) are removed when the
  store is opened again;
* every chunk (and ``result.nc``) carries the sha256 of its variables in the netCDF attribute
  ``quasirl_sha256``; a chunk that does not verify (flipped bits, a truncated or unreadable
  file) is recomputed with a ``RuntimeWarning`` naming the file. Chunks written before the
  checksums existed cannot be verified and are recomputed the same way (once: the rewritten
  chunk carries one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np

from ._validate import QuasirlValueError, check_int

BACKENDS = ("auto", "vmap", "loop", "dask")
STORE_FORMAT = "quasirl-sweep/1"
MANIFEST = "sweep.json"
RESULT = "result.nc"
CHECKSUM_ATTR = "quasirl_sha256"
# A temporary file written from another host is taken for stale after this long (its writer's
# process cannot be looked up from here).
STALE_FOREIGN_TMP_S = 24 * 3600.0


# --------------------------------------------------------------------------------------------
# axes and points
# --------------------------------------------------------------------------------------------
def _check_axes(axes: Mapping) -> dict[str, np.ndarray]:
    if not axes:
        raise QuasirlValueError("sweep needs at least one axis, e.g. sweep(fn, T=[0.1, 1.0])")
    out = {}
    for name, values in axes.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise QuasirlValueError(f"axis names must be Python identifiers, got {name!r}")
        a = np.asarray(values)
        if a.ndim == 0:
            a = a[None]
        if a.ndim != 1:
            raise QuasirlValueError(f"axis {name!r} must be 1-D, got shape {a.shape}")
        if a.size == 0:
            raise QuasirlValueError(f"axis {name!r} is empty")
        if a.dtype.kind in "biuf":
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                i = int(np.flatnonzero(~np.isfinite(a))[0])
                raise QuasirlValueError(f"axis {name!r} must be finite, but {name}[{i}] = {a[i]}")
        elif a.dtype.kind not in "US":
            raise QuasirlValueError(
                f"axis {name!r} must hold numbers or strings, got dtype {a.dtype}"
            )
        if a.dtype.kind == "S":
            a = a.astype(str)
        out[name] = a
    return out


def _chunk_points(axes: dict[str, np.ndarray], start: int, stop: int, pad_to: int | None = None):
    """The axis values of flat points start..stop-1 (padded by repeating the last point)."""
    shape = tuple(len(v) for v in axes.values())
    flat = np.arange(start, stop)
    if pad_to is not None and pad_to > flat.size:
        flat = np.concatenate([flat, np.full(pad_to - flat.size, stop - 1)])
    idx = np.unravel_index(flat, shape)
    return {name: values[i] for (name, values), i in zip(axes.items(), idx, strict=True)}


# --------------------------------------------------------------------------------------------
# evaluating one chunk
# --------------------------------------------------------------------------------------------
def _as_outputs(result, name: str) -> dict:
    if isinstance(result, Mapping):
        if not result:
            raise QuasirlValueError("fn returned an empty mapping")
        return {str(k): v for k, v in result.items()}
    return {name: result}


def default_chunk_size(n_points: int) -> int:
    """Points per chunk when none is given: ceil(N / 8), between 1 and 1024."""
    return max(1, min(1024, math.ceil(n_points / 8)))


def _call(fn, kw):
    return fn(**kw)


@contextlib.contextmanager
def _precision(x64: bool | None):
    """Scoped JAX precision on a worker (matches the client's; never a global change)."""
    if x64 is None:
        yield
        return
    import jax

    with jax.enable_x64(bool(x64)):
        yield


_VMAPPED = {}


def _vmapped(fn):
    """jit(vmap(fn)), cached per function object so that equal-shape chunks reuse it."""
    import jax

    key = id(fn)
    hit = _VMAPPED.get(key)
    if hit is not None and hit[0] is fn:
        return hit[1]
    f = jax.jit(jax.vmap(partial(_call, fn)))
    if len(_VMAPPED) > 64:
        _VMAPPED.clear()
    _VMAPPED[key] = (fn, f)
    return f


def _evaluate(fn, points: dict, n: int, vectorized: bool, name: str, x64=None) -> dict:
    """fn on the first n of ``points`` -> {variable: array [n, ...]} (numpy)."""
    with _precision(x64):
        if vectorized:
            out = _vmapped(fn)({k: np.asarray(v) for k, v in points.items()})
            out = _as_outputs(out, name)
            return {k: np.asarray(v)[:n] for k, v in out.items()}
        rows = []
        for i in range(n):
            kw = {k: _scalar(v[i]) for k, v in points.items()}
            rows.append(_as_outputs(fn(**kw), name))
    keys = list(rows[0])
    for j, r in enumerate(rows):
        if list(r) != keys:
            raise QuasirlValueError(
                f"fn must return the same outputs at every point: {keys} at the first point, "
                f"{list(r)} at point {j} of the chunk"
            )
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in keys}


def _scalar(v):
    """A numpy scalar as the matching Python number/str (what a user's fn expects)."""
    return v.item() if isinstance(v, np.generic) else v


def _run_chunk(fn, axes, start, stop, pad_to, vectorized, name, x64):
    """One Dask task: evaluate flat points start..stop-1. Module-level so workers import it."""
    points = _chunk_points(axes, start, stop, pad_to if vectorized else None)
    return _evaluate(fn, points, stop - start, vectorized, name, x64)


def is_vectorizable(fn, axes: dict[str, np.ndarray]) -> bool:
    """True when ``jax.vmap(fn)`` traces on two points of the grid (fn is jittable)."""
    import jax

    if any(v.dtype.kind in "US" for v in axes.values()):
        return False
    points = _chunk_points(axes, 0, min(2, math.prod(len(v) for v in axes.values())), pad_to=2)
    try:
        jax.eval_shape(jax.vmap(partial(_call, fn)), {k: np.asarray(v) for k, v in points.items()})
    except Exception:  # any tracing failure means "not jittable": fall back to plain calls
        return False
    return True


# --------------------------------------------------------------------------------------------
# the chunk store
# --------------------------------------------------------------------------------------------
def _fn_id(fn) -> str:
    f = fn.func if isinstance(fn, partial) else fn
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}"


def _manifest(fn, axes, chunk_size, name, tag) -> dict:
    return {
        "format": STORE_FORMAT,
        "fn": _fn_id(fn),
        "tag": tag,
        "name": name,
        "chunk_size": int(chunk_size),
        "axes": {k: v.tolist() for k, v in axes.items()},
    }


def _open_store(store, manifest) -> Path:
    path = Path(store)
    if path.exists() and not path.is_dir():
        raise QuasirlValueError(f"store must be a folder, but {str(path)!r} is a file")
    path.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    mpath = path / MANIFEST
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise QuasirlValueError(f"store {str(path)!r} has an unreadable {MANIFEST}") from exc
        for key in ("format", "fn", "tag", "name", "chunk_size", "axes"):
            if old.get(key) != manifest[key]:
                raise QuasirlValueError(
                    f"store {str(path)!r} holds a different sweep ({key} differs: stored "
                    f"{_short(old.get(key))}, now {_short(manifest[key])}); use another folder"
                )
    else:
        _atomic_write_text(mpath, json.dumps(manifest, indent=1))
    return path


def _short(x, n=80) -> str:
    s = repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------
# atomic writes, stale temporary files, checksums
# --------------------------------------------------------------------------------------------
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# .<final name>.<host>-<pid>-<random>.tmp, and the unnamed .<final name>.<hex>.tmp of old
_TMP = re.compile(r"^\.(?P<final>.+?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[0-9a-f]+\.tmp$")


def _tmp_path(final: Path) -> Path:
    """A temporary name next to ``final`` that says which host and process writes it."""
    return final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists under another user, or cannot be asked
        return True
    return True


def _is_stale(p: Path) -> bool:
    m = _TMP.match(p.name)
    if m is None:
        return False
    final = m["final"]
    if not (final in (MANIFEST, RESULT) or re.fullmatch(r"chunk-\d{6}\.nc", final)):
        return False  # not a file of this store: leave it alone
    if m["pid"] is None:  # written by a quasirl without writer names: no writer can be running
        return True
    if m["host"] == _HOST:
        return not _pid_alive(int(m["pid"]))
    try:
        return time.time() - p.stat().st_mtime > STALE_FOREIGN_TMP_S
    except FileNotFoundError:
        return False


def _remove_stale_tmp(store: Path) -> None:
    """Delete the temporary files a killed writer left in the store (never read, only litter;
    a live writer's, on this host or written from another within a day, are kept)."""
    for p in store.glob(".*.tmp"):
        if _is_stale(p):
            p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # (Windows cannot flush a read-only descriptor)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk, then rename it to ``final`` (atomic on POSIX and Windows): after
    a crash ``final`` is the whole new file or the old one (a rename lost with the power is a
    chunk computed again)."""
    _fsync(tmp)
    os.replace(tmp, final)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _canonical_bytes(a) -> bytes:
    """The values of an array as bytes that survive a netCDF round trip unchanged: integers as
    little-endian int64 and reals as float64 (netCDF-3 narrows int64 and is big-endian), booleans
    as uint8, every NaN as the one quiet NaN, strings as UTF-8 joined by NUL."""
    a = np.asarray(a)
    k = a.dtype.kind
    if k in "USO":
        return "\0".join(str(x) for x in a.ravel().tolist()).encode()
    if k == "b":
        a = a.astype(np.uint8)
    elif k in "iu":
        a = a.astype("<i8")
    elif k == "f":
        a = a.astype("<f8")
        a = np.where(np.isnan(a), np.nan, a)
    elif k == "c":
        a = a.astype("<c16")
        a = np.where(np.isnan(a), complex(np.nan, np.nan), a)
    return np.ascontiguousarray(a).tobytes()


def checksum(ds) -> str:
    """sha256 over every variable of ``ds`` (name, dims, shape, values; attrs excluded)."""
    h = hashlib.sha256()
    for name in sorted(ds.variables):
        v = ds.variables[name]
        head = json.dumps([str(name), list(map(str, v.dims)), list(v.shape), v.dtype.kind])
        h.update(head.encode())
        data = _canonical_bytes(v.values)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return "sha256:" + h.hexdigest()


def _write_netcdf(ds, final: Path) -> None:
    """``ds`` with its checksum attribute, written atomically to ``final``."""
    ds = ds.copy(deep=False)
    ds.attrs[CHECKSUM_ATTR] = checksum(ds)
    tmp = _tmp_path(final)
    try:
        ds.to_netcdf(tmp, engine=netcdf_engine())
        _commit(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checked(path: Path):
    """(Dataset, None) when the netCDF file at ``path`` verifies, else (None, why not)."""
    import xarray as xr

    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
    except Exception as exc:  # any failure to read (truncated, garbage) means: do not use it
        return None, f"unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
    stored = ds.attrs.get(CHECKSUM_ATTR)
    if stored is None:
        return None, "it has no checksum (written before quasirl checked its stores)"
    if stored != checksum(ds):
        return None, "its checksum does not match its contents (corrupt)"
    return ds, None


def verify(path) -> str | None:
    """Why the chunk or result file at ``path`` cannot be trusted; None when it verifies."""
    return _load_checked(Path(path))[1]


def netcdf_engine() -> str:
    """The xarray engine for writing netCDF: h5netcdf (needs h5py) or scipy (netCDF-3)."""
    import importlib.util

    return "h5netcdf" if importlib.util.find_spec("h5py") is not None else "scipy"


def _chunk_path(store: Path, c: int) -> Path:
    return store / f"chunk-{c:06d}.nc"


def _write_chunk(store: Path, c: int, start: int, out: dict) -> None:
    import xarray as xr

    n = next(iter(out.values())).shape[0]
    data = {}
    for k, v in out.items():
        dims = ("point", *(f"{k}_dim{j}" for j in range(v.ndim - 1)))
        data[k] = (dims, v)
    ds = xr.Dataset(data, coords={"point": np.arange(start, start + n)})
    _write_netcdf(ds, _chunk_path(store, c))


def _read_chunk(store: Path, c: int, start: int, stop: int) -> dict | None:
    """A finished chunk's outputs, or None when it is missing; a chunk that cannot be trusted
    (:func:`verify`) is None too, with a RuntimeWarning naming the file (it is recomputed)."""
    path = _chunk_path(store, c)
    if not path.exists():
        return None
    ds, why = _load_checked(path)
    if ds is not None:
        pts = np.asarray(ds["point"])
        if not np.array_equal(pts, np.arange(start, stop)):
            why = f"it holds points {pts[:1]}..{pts[-1:]}, not [{start}]..[{stop - 1}]"
    if why is not None:
        warnings.warn(f"sweep store: {path} is not used: {why}; recomputing chunk {c}",
                      RuntimeWarning, stacklevel=3)
        return None
    return {k: np.asarray(ds[k]) for k in ds.data_vars}


# --------------------------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _dask_client(scheduler, n_workers: int, threads_per_worker: int):
    """A distributed.Client: in-process LocalCluster (None/"local"), an address, or a Client."""
    import logging

    import distributed

    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is None or scheduler == "local":
        with distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=False,
            dashboard_address=None, silence_logs=logging.ERROR,
        ) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise QuasirlValueError(
            f"scheduler must be None, 'local', an address like 'tcp://127.0.0.1:8786' or a "
            f"distributed.Client, got {scheduler!r}"
        )
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except OSError as exc:
        raise QuasirlValueError(
            f"could not connect to the Dask scheduler at {scheduler}: {exc}"
        ) from None
    with client:
        yield client


def _jax_x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------
def sweep(fn, axes: Mapping | None = None, *, backend: str = "auto", scheduler=None,
          store=None, chunk_size: int | None = None, progress: bool | None = True,
          name: str = "value", tag: str | None = None, n_workers: int = 1,
          threads_per_worker: int = 2, **more_axes):
    """Evaluate ``fn(**point)`` on the Cartesian product of the axes -> ``xarray.Dataset``.

    Axes are keyword arguments (``sweep(fn, T=Ts, mu=mus)``) or a mapping ``axes=``; each is a
    1-D array of numbers (or strings, for the loop/Dask backends). ``fn`` returns a number, an
    array of fixed shape, or a mapping name -> number/array; the Dataset has one variable per
    output (a bare result is called ``name``), with dims = the axes (in the order given) plus
    ``<var>_dim<j>`` for array outputs, and the axes as coordinates.

    backend:
      "vmap"  in process, one ``jit(vmap(fn))`` call per chunk (fn must be jittable);
      "loop"  in process, one Python call per point;
      "dask"  one task per chunk on a distributed cluster: an in-process ``LocalCluster``
              (``n_workers`` x ``threads_per_worker`` threads) when ``scheduler`` is None, else
              the scheduler at ``scheduler="tcp://host:port"`` or a ``distributed.Client``.
              Within a task fn is vmapped when it is jittable. Workers run with the client's
              JAX precision (x64 on or off, scoped to the task).
      "auto"  "dask" if a scheduler is given, else "vmap" if fn traces under vmap, else "dask".
    store: a folder; each finished chunk is written there at once (netCDF), and a
      rerun with the same store computes only the chunks that are missing (interrupted sweeps
      resume). The store records fn's qualified name, ``tag``, the axes and the chunk size, and
      refuses a different sweep. It cannot see inside fn: pass ``tag`` = a string naming what
      else fn depends on (the parameters a closure captures), and use a fresh folder after
      editing fn's code. Every stored file carries a sha256 checksum: a chunk that fails it
      (corrupt, truncated, or written before the checksums) is recomputed with a
      RuntimeWarning naming the file, and the temporary files of a killed run are removed
      when the store is opened (see the module docstring).
    chunk_size: points per chunk (default ceil(N / 8), at most 1024). progress: a tqdm bar on
    stderr (True), none (False), or one only when stderr is a terminal (None).

    Dask pickles fn (cloudpickle) even for the in-process cluster: module-level functions
    travel by reference (workers must be able to import them), closures by value, so let a
    closure capture numpy arrays rather than JAX arrays or objects that do not pickle. "auto"
    traces fn once with abstract values to decide whether it can be vmapped.

    Returns the Dataset (in memory); attrs record the backend, chunk size and how many chunks
    this call computed (``chunks_computed``) versus loaded from the store (``chunks_loaded``).
    """
    import xarray as xr
    from tqdm import tqdm

    if axes is not None and not isinstance(axes, Mapping):
        raise QuasirlValueError(f"axes must be a mapping name -> values, got {type(axes).__name__}")
    all_axes = dict(axes or {})
    for k, v in more_axes.items():
        if k in all_axes:
            raise QuasirlValueError(f"axis {k!r} given twice")
        all_axes[k] = v
    ax = _check_axes(all_axes)
    if not callable(fn):
        raise QuasirlValueError(f"fn must be callable, got {type(fn).__name__}")
    if backend not in BACKENDS:
        raise QuasirlValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise QuasirlValueError(f"name must be an identifier, got {name!r}")
    for what, v in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        check_int(what, v, minimum=1)
    shape = tuple(len(v) for v in ax.values())
    N = math.prod(shape)
    if chunk_size is None:
        chunk_size = default_chunk_size(N)
    chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), N)
    n_chunks = math.ceil(N / chunk_size)
    bounds = [(c * chunk_size, min((c + 1) * chunk_size, N)) for c in range(n_chunks)]

    if backend == "vmap" and any(v.dtype.kind in "US" for v in ax.values()):
        raise QuasirlValueError("backend 'vmap' needs numeric axes; use 'loop' or 'dask'")
    vectorized = is_vectorizable(fn, ax) if backend in ("auto", "dask", "vmap") else False
    if backend == "vmap" and not vectorized:
        raise QuasirlValueError("backend 'vmap' needs a jittable fn (jax.vmap(fn) failed to trace)")
    if backend == "auto":
        backend = "dask" if scheduler is not None or not vectorized else "vmap"
    if scheduler is not None and backend != "dask":
        raise QuasirlValueError(f"scheduler is only used by backend 'dask', got {backend!r}")

    root = None
    results: dict[int, dict] = {}
    if store is not None:
        if tag is not None and not isinstance(tag, str):
            raise QuasirlValueError(f"tag must be a string or None, got {type(tag).__name__}")
        root = _open_store(store, _manifest(fn, ax, chunk_size, name, tag))
        for c, (a, b) in enumerate(bounds):
            got = _read_chunk(root, c, a, b)
            if got is not None:
                results[c] = got
    loaded = len(results)
    todo = [c for c in range(n_chunks) if c not in results]
    bar = tqdm(total=N, initial=sum(bounds[c][1] - bounds[c][0] for c in results),
               desc=f"sweep {name} [{backend}]", unit="pt", leave=False, file=sys.stderr,
               disable=None if progress is None else not progress)

    def finish(c, out):
        results[c] = out
        if root is not None:
            _write_chunk(root, c, bounds[c][0], out)
        bar.update(bounds[c][1] - bounds[c][0])

    try:
        if backend == "dask" and todo:
            import distributed

            x64 = _jax_x64()
            with _dask_client(scheduler, n_workers, threads_per_worker) as client:
                token = uuid.uuid4().hex[:8]
                futures = {
                    client.submit(_run_chunk, fn, ax, *bounds[c], chunk_size, vectorized, name,
                                  x64, key=f"quasirl-sweep-{token}-{c}", pure=False): c
                    for c in todo
                }
                try:
                    for fut in distributed.as_completed(futures):
                        finish(futures[fut], fut.result())
                finally:
                    client.cancel(list(futures))
        else:
            for c in todo:
                a, b = bounds[c]
                pts = _chunk_points(ax, a, b, chunk_size if vectorized else None)
                finish(c, _evaluate(fn, pts, b - a, backend == "vmap", name))
    finally:
        bar.close()

    ds = _assemble(ax, shape, results, bounds, xr)
    ds.attrs.update(backend=backend, chunk_size=chunk_size, n_chunks=n_chunks,
                    chunks_computed=len(todo), chunks_loaded=loaded, fn=_fn_id(fn))
    if root is not None:
        _write_netcdf(ds, root / RESULT)
    return ds


def _assemble(ax, shape, results, bounds, xr):
    first = results[0]
    data = {}
    for k, v0 in first.items():
        extra = v0.shape[1:]
        arr = np.empty((math.prod(shape), *extra), dtype=v0.dtype)
        for c, (a, b) in enumerate(bounds):
            v = results[c][k]
            if v.shape[1:] != extra:
                raise QuasirlValueError(
                    f"output {k!r} changes shape across the grid: {extra} in chunk 0, "
                    f"{v.shape[1:]} in chunk {c}"
                )
            arr[a:b] = v
        dims = (*ax.keys(), *(f"{k}_dim{j}" for j in range(len(extra))))
        data[k] = (dims, arr.reshape(*shape, *extra))
    return xr.Dataset(data, coords=dict(ax))
