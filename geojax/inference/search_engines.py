"""The two search engines behind :class:`geojax.inference.retrieval.Index`: ScaNN (tree,
asymmetric hashing, exact reordering) and the exact search sharded over a device mesh; their
parameters, the database they read, and their files. See :mod:`geojax.inference.retrieval` for
what each does and how an index is saved."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from geojax.training import sharding as sharding_lib

FORMAT_VERSION = 1
MANIFEST = "index.json"
ENGINES = ("scann", "exact")
ROWS_PER_CHUNK = 65_536  # rows read from a feature store at a time while building

SCANN_DEFAULTS = dict(brute_force_below=10_000, num_leaves=None, leaves_to_search=None,
                      training_sample_size=None, dims_per_block=2,
                      anisotropic_quantization_threshold=None, reorder_factor=4,
                      spherical=True, num_threads=0)
SCANN_THREAD_BATCH = 128  # queries per task of ScaNN's search threads
EXACT_DEFAULTS = dict(dtype="float32", block_rows=32_768)
EXACT_DTYPES = ("float32", "float16", "bfloat16")


class RetrievalError(ValueError):
    """A retrieval request that cannot work: bad database, queries, k or parameters."""


class IndexFileError(RetrievalError):
    """A saved index that fails a load check; ``path`` is the file or folder at fault."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class IndexMismatchError(RetrievalError):
    """A saved index built from another backbone, feature dimension or database than the one
    expected; ``differences`` maps each differing key to ``(index's value, expected value)``."""

    def __init__(self, directory: str, differences: dict[str, tuple[Any, Any]]):
        lines = "; ".join(f"{key}: index has {have!r}, expected {want!r}"
                          for key, (have, want) in differences.items())
        super().__init__(
            f"the retrieval index in {directory} was built for something else ({lines}). "
            f"Rebuild it from the current features (or delete the folder {directory} so that "
            "it is rebuilt).")
        self.directory = directory
        self.differences = differences


# ------------------------------------------------------------------------ parameters
def _resolve(defaults: Mapping[str, Any], params: Mapping[str, Any] | None,
             engine: str) -> dict[str, Any]:
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise RetrievalError(f"unknown {engine} parameters {unknown}; the {engine} engine "
                             f"takes {sorted(defaults)}.")
    return {**defaults, **params}


def scann_params(num_valid: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ScaNN's parameters for ``num_valid`` rows: the rule of the module docstring, with
    every value given in ``params`` taking precedence (``None`` in ``params`` = the rule)."""
    given = {key: value for key, value in dict(params or {}).items() if value is not None}
    out = _resolve(SCANN_DEFAULTS, given, "scann")
    n = int(num_valid)
    if n < out["brute_force_below"]:
        out.update(num_leaves=0, leaves_to_search=0, training_sample_size=0)
        return out
    if out["num_leaves"] is None:
        out["num_leaves"] = max(1, int(round(math.sqrt(n))))
    if out["leaves_to_search"] is None:
        out["leaves_to_search"] = max(8, math.ceil(out["num_leaves"] / 50))
    if out["training_sample_size"] is None:
        out["training_sample_size"] = min(n, max(100_000, 50 * out["num_leaves"]))
    out["leaves_to_search"] = min(out["leaves_to_search"], out["num_leaves"])
    if not 1 <= out["num_leaves"] <= n:
        raise RetrievalError(f"scann num_leaves={out['num_leaves']} must be between 1 and the "
                             f"{n} valid rows.")
    for key in ("leaves_to_search", "training_sample_size", "dims_per_block", "reorder_factor"):
        if int(out[key]) < 1:
            raise RetrievalError(f"scann {key}={out[key]} must be a positive integer.")
    return out


def exact_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The exact engine's parameters (:data:`EXACT_DEFAULTS` updated with ``params``)."""
    out = _resolve(EXACT_DEFAULTS, params, "exact")
    if out["dtype"] not in EXACT_DTYPES:
        raise RetrievalError(f"exact dtype={out['dtype']!r} is not one of {EXACT_DTYPES}.")
    if int(out["block_rows"]) < 1:
        raise RetrievalError(f"exact block_rows={out['block_rows']} must be positive.")
    out["block_rows"] = int(out["block_rows"])
    return out


# ------------------------------------------------------------------------ the database
@dataclasses.dataclass
class _Database:
    """The database as the engines read it: chunks of float32 rows, and which are valid."""

    num: int
    dim: int
    chunks: Callable[[int], Iterator[tuple[int, np.ndarray]]]
    valid: np.ndarray  # bool (num,)
    lat: np.ndarray  # float64 (num,)
    lng: np.ndarray
    meta: dict[str, Any]
    array: np.ndarray | None = None  # the whole (num, dim) array when the caller gave one

    def valid_chunks(self, rows_per_chunk: int = ROWS_PER_CHUNK) -> Iterator[np.ndarray]:
        """The valid rows in order, float32, checked finite, in chunks."""
        for start, block in self.chunks(rows_per_chunk):
            block = np.asarray(block)
            if block.ndim != 2 or block.shape[1] != self.dim:
                raise RetrievalError(f"the database yielded a chunk of shape {block.shape} at "
                                     f"row {start}; expected (n, {self.dim}).")
            block = block[self.valid[start:start + len(block)]].astype(np.float32, copy=False)
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(self.valid[start:])[int(np.argmax(bad))]) + start
                raise RetrievalError(f"database row {row} has non-finite features (NaN or "
                                     "inf); recompute the features or mark it invalid.")
            yield block

    def valid_array(self) -> np.ndarray:
        """Every valid row in one float32 (num_valid, dim) array."""
        rows = int(self.valid.sum())
        if self.array is not None and rows == self.num and self.array.dtype == np.float32:
            for _ in self.valid_chunks():
                pass  # the finiteness check
            return np.ascontiguousarray(self.array)
        out = np.empty((rows, self.dim), np.float32)
        at = 0
        for block in self.valid_chunks():
            out[at:at + len(block)] = block
            at += len(block)
        return out


def _coordinates(values: Any, num: int, name: str) -> np.ndarray:
    if values is None:
        raise RetrievalError(f"{name} is required: the (N,) {name} of the database rows.")
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.shape != (num,):
        raise RetrievalError(f"{name} has {arr.size} values for {num} database rows.")
    return arr


def _database(database: Any, lat: Any, lng: Any, valid: Any,
              meta: Mapping[str, Any] | None) -> _Database:
    """An (N, D) array or a feature store (``num``, ``dim``, ``chunks``, ``valid``, ``lat``,
    ``lng``, ``meta``) as a :class:`_Database`; the arguments override the store's values."""
    if all(hasattr(database, name) for name in ("num", "dim", "chunks")):
        num, dim = int(database.num), int(database.dim)
        chunks = database.chunks
        store_valid = getattr(database, "valid", None)
        lat = getattr(database, "lat", None) if lat is None else lat
        lng = getattr(database, "lng", None) if lng is None else lng
        merged = {**dict(getattr(database, "meta", None) or {}), **dict(meta or {})}
        array = None
    else:
        array = np.asarray(database)
        if array.ndim != 2 or 0 in array.shape:
            raise RetrievalError(f"the database must be an (N, D) array of features with N, D "
                                 f"≥ 1 (or a feature store); got shape {array.shape}.")
        if not np.issubdtype(array.dtype, np.floating):
            raise RetrievalError(f"the database features are {array.dtype}; expected floats.")
        num, dim = array.shape
        store_valid = None
        merged = dict(meta or {})

        def chunks(rows_per_chunk: int) -> Iterator[tuple[int, np.ndarray]]:
            for start in range(0, num, rows_per_chunk):
                yield start, array[start:start + rows_per_chunk]

    mask = np.ones(num, bool)
    for given, name in ((store_valid, "the store's valid"), (valid, "valid")):
        if given is not None:
            given = np.asarray(given)
            if given.shape != (num,) or given.dtype != np.bool_:
                raise RetrievalError(f"{name} must be a bool array of shape ({num},); got "
                                     f"{given.dtype} {given.shape}.")
            mask &= given
    if not mask.any():
        raise RetrievalError(f"none of the {num} database rows is valid: nothing to index.")
    try:
        merged = json.loads(json.dumps(merged))
    except (TypeError, ValueError) as e:
        raise RetrievalError(f"meta must be JSON-serialisable (it is saved in {MANIFEST}): "
                             f"{e}") from e
    return _Database(num=num, dim=dim, chunks=chunks, valid=mask,
                     lat=_coordinates(lat, num, "lat"), lng=_coordinates(lng, num, "lng"),
                     meta=merged, array=array)


# ------------------------------------------------------------------------ ScaNN
def _scann():
    try:
        import scann  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(
            "the ScaNN retrieval engine needs the `scann` package (the `retrieval` extra): "
            "pip install -e '.[retrieval]' — or use engine=\"exact\".") from e
    return scann


class _ScannEngine:
    """ScaNN's searcher over the valid rows (rows numbered 0 .. num_valid - 1)."""

    name = "scann"

    def __init__(self, searcher: Any, params: dict[str, Any]):
        self.searcher = searcher
        self.params = params

    @classmethod
    def build(cls, db: _Database, params: Mapping[str, Any] | None, mesh: Mesh | None,
              log: Callable[[str], Any]) -> "_ScannEngine":
        del mesh
        scann = _scann()
        n = int(db.valid.sum())
        p = scann_params(n, params)
        data = db.valid_array()
        builder = scann.scann_ops_pybind.builder(data, 100, "dot_product")
        if p["num_leaves"]:
            log(f"ScaNN: tree of {p['num_leaves']} leaves ({p['leaves_to_search']} searched), "
                f"asymmetric hashing ({p['dims_per_block']} dimensions per block), exact "
                f"reordering of {p['reorder_factor']}×k candidates, over {n} rows × {db.dim}")
            builder = builder.tree(
                num_leaves=p["num_leaves"], num_leaves_to_search=p["leaves_to_search"],
                training_sample_size=p["training_sample_size"], spherical=bool(p["spherical"]))
            threshold = p["anisotropic_quantization_threshold"]
            builder = builder.score_ah(
                p["dims_per_block"],
                anisotropic_quantization_threshold=(
                    float("nan") if threshold is None else float(threshold)),
                training_sample_size=p["training_sample_size"])
            builder = builder.reorder(p["reorder_factor"] * 100)
        else:
            log(f"ScaNN: brute force over {n} rows × {db.dim} (fewer than "
                f"brute_force_below={p['brute_force_below']})")
            builder = builder.score_brute_force()
        if p["num_threads"]:
            builder = builder.set_n_training_threads(int(p["num_threads"]))
        searcher = builder.build()
        if p["num_threads"]:
            searcher.set_num_threads(int(p["num_threads"]))
        return cls(searcher, p)

    def search(self, queries: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        pre = max(k, p["reorder_factor"] * k)
        leaves = p["leaves_to_search"] or None
        idx, dist = self._search(queries, k, pre, leaves, batch_size)
        missing = np.isnan(dist).any(axis=1)
        while missing.any():  # the searched leaves held fewer than k rows
            if not leaves or leaves >= p["num_leaves"]:
                raise RetrievalError(f"ScaNN found fewer than k={k} neighbours for "
                                     f"{int(missing.sum())} queries with every leaf searched.")
            leaves = min(2 * leaves, p["num_leaves"])
            more_idx, more_dist = self._search(queries[missing], k, pre, leaves, batch_size)
            idx[missing], dist[missing] = more_idx, more_dist
            missing = np.isnan(dist).any(axis=1)
        return dist, idx

    def _search(self, queries, k, pre, leaves, batch_size):
        idx = np.empty((len(queries), k), np.int64)
        dist = np.empty((len(queries), k), np.float32)
        for start in range(0, len(queries), batch_size):
            # ScaNN's threads take SCANN_THREAD_BATCH queries of the batch at a time.
            found, scores = self.searcher.search_batched_parallel(
                queries[start:start + batch_size], final_num_neighbors=k,
                pre_reorder_num_neighbors=pre, leaves_to_search=leaves,
                batch_size=SCANN_THREAD_BATCH)
            idx[start:start + batch_size], dist[start:start + batch_size] = found, scores
        return idx, dist

    def save(self, folder: str) -> list[str]:
        """Process 0 serializes the searcher (every process holds the same one) into
        ``scann/``; returns the files written, relative to ``folder``."""
        if jax.process_index() != 0:
            return []
        os.makedirs(os.path.join(folder, "scann"))
        self.searcher.serialize(os.path.join(folder, "scann"), relative_path=True)
        return [os.path.join("scann", path) for path in _files(os.path.join(folder, "scann"))]

    @classmethod
    def load(cls, folder: str, params: dict[str, Any], mesh: Mesh | None) -> "_ScannEngine":
        del mesh
        scann = _scann()
        searcher = scann.scann_ops_pybind.load_searcher(os.path.join(folder, "scann"))
        if params.get("num_threads"):
            searcher.set_num_threads(int(params["num_threads"]))
        return cls(searcher, params)


# ------------------------------------------------------------------------ exact
def _row_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(mesh.axis_names)


@functools.lru_cache(maxsize=64)
def _exact_search_fn(mesh: Mesh, num_valid: int, rows_per_device: int, block_rows: int,
                     k: int) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """The jitted ``(queries, database, offsets) → (scores, rows)`` of the exact engine."""
    axes = _row_axes(mesh)
    per_device_k = min(k, rows_per_device)
    block_k = min(k, block_rows)
    num_blocks = rows_per_device // block_rows

    def local(queries, rows, offset):
        # On one device: ``rows`` (rows_per_device, D) are database rows offset[0] onwards.
        limit = num_valid - offset[0]  # local rows at or past this are padding
        blocks = rows.reshape(num_blocks, block_rows, rows.shape[-1])
        starts = jnp.arange(num_blocks, dtype=jnp.int32) * block_rows
        batch = queries.shape[0]

        def step(carry, xs):
            best_scores, best_rows = carry
            block, start = xs
            scores = jnp.dot(queries, block.astype(jnp.float32).T,
                             precision=jax.lax.Precision.HIGHEST,
                             preferred_element_type=jnp.float32)
            local_rows = start + jnp.arange(block_rows, dtype=jnp.int32)
            scores = jnp.where(local_rows < limit, scores, -jnp.inf)
            top_scores, top = jax.lax.top_k(scores, block_k)
            # Earlier blocks (lower rows) first: top_k keeps the lower index of equal scores.
            merged_scores = jnp.concatenate([best_scores, top_scores], axis=1)
            merged_rows = jnp.concatenate([best_rows, local_rows[top]], axis=1)
            keep_scores, keep = jax.lax.top_k(merged_scores, per_device_k)
            return (keep_scores, jnp.take_along_axis(merged_rows, keep, axis=1)), None

        init = (jnp.full((batch, per_device_k), -jnp.inf, jnp.float32),
                jnp.zeros((batch, per_device_k), jnp.int32))
        init = jax.lax.pcast(init, axes, to="varying")  # the carry differs between devices
        (scores, local_rows), _ = jax.lax.scan(step, init, (blocks, starts))
        return scores, local_rows + offset[0]

    per_device = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes), P(axes)),
                               out_specs=(P(None, axes), P(None, axes)))

    def search(queries, rows, offsets):
        # (B, devices × per_device_k), device by device in row order: equal scores keep the
        # lower row first through the final top_k as well.
        scores, found = per_device(queries, rows, offsets)
        top_scores, top = jax.lax.top_k(scores, k)
        return top_scores, jnp.take_along_axis(found, top, axis=1)

    replicated = NamedSharding(mesh, P())
    return jax.jit(search, out_shardings=(replicated, replicated))


class _ExactEngine:
    """The valid rows sharded over the devices of ``mesh`` (rows numbered 0 .. n - 1)."""

    name = "exact"

    def __init__(self, rows: jax.Array, offsets: jax.Array, mesh: Mesh, num_valid: int,
                 params: dict[str, Any]):
        self.rows, self.offsets, self.mesh = rows, offsets, mesh
        self.num_valid = num_valid
        self.params = params

    @staticmethod
    def _layout(num_valid: int, mesh: Mesh, block_rows: int) -> tuple[int, int]:
        """``(rows_per_device, block_rows)``: every device holds the same whole number of
        blocks; a database smaller than one block per device gets smaller blocks."""
        devices = mesh.devices.size
        per_device = -(-num_valid // devices)
        block = min(block_rows, per_device)
        return -(-per_device // block) * block, block

    @classmethod
    def from_chunks(cls, chunks: Iterator[np.ndarray], num_valid: int, dim: int,
                    params: dict[str, Any], mesh: Mesh | None) -> "_ExactEngine":
        mesh = sharding_lib.make_mesh() if mesh is None else mesh
        dtype = jnp.dtype(params["dtype"])
        per_device, _ = cls._layout(num_valid, mesh, params["block_rows"])
        total = per_device * mesh.devices.size
        row_sharding = NamedSharding(mesh, P(_row_axes(mesh)))
        # Which rows each local device holds; fill them in row order from the chunks, so the
        # host holds one device's share (plus a chunk) at a time.
        targets = sorted(((index[0].start or 0, device) for device, index in
                          row_sharding.addressable_devices_indices_map((total, dim)).items()),
                         key=lambda t: t[0])
        starts = sorted({start for start, _ in targets})
        shards: dict[Any, jax.Array] = {}
        pending = iter(starts)
        current = next(pending, None)
        buffer = np.zeros((per_device, dim), dtype)
        at = 0  # global valid row of the next chunk row

        def flush(start):
            for s, device in targets:
                if s == start:
                    shards[device] = jax.device_put(buffer, device)

        for block in chunks:
            pos = 0
            while pos < len(block) and current is not None:
                row = at + pos
                if row < current:  # rows of another process's devices
                    pos = min(len(block), current - at)
                    continue
                take = min(len(block) - pos, current + per_device - row)
                buffer[row - current:row - current + take] = block[pos:pos + take]
                pos += take
                if row + take == current + per_device:
                    flush(current)
                    buffer = np.zeros((per_device, dim), dtype)
                    current = next(pending, None)
            at += len(block)
        if at != num_valid:
            raise RetrievalError(f"the database yielded {at} valid rows; expected {num_valid}.")
        while current is not None:  # padding, and the last partial share
            flush(current)
            buffer = np.zeros((per_device, dim), dtype)
            current = next(pending, None)
        rows = jax.make_array_from_single_device_arrays(
            (total, dim), row_sharding, [shards[d] for d in row_sharding.addressable_devices])
        offsets = jax.make_array_from_callback(
            (mesh.devices.size,), row_sharding,
            lambda index: np.arange(mesh.devices.size, dtype=np.int32)[index] * per_device)
        return cls(rows, offsets, mesh, num_valid, params)

    @classmethod
    def build(cls, db: _Database, params: Mapping[str, Any] | None, mesh: Mesh | None,
              log: Callable[[str], Any]) -> "_ExactEngine":
        p = exact_params(params)
        n = int(db.valid.sum())
        engine = cls.from_chunks(db.valid_chunks(), n, db.dim, p, mesh)
        log(f"exact search: {n} rows × {db.dim} ({p['dtype']}) over the "
            f"{engine.mesh.devices.size} devices of the mesh {dict(engine.mesh.shape)}")
        return engine

    def search(self, queries: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        per_device, block = self._layout(self.num_valid, self.mesh, self.params["block_rows"])
        fn = _exact_search_fn(self.mesh, self.num_valid, per_device, block, k)
        replicated = NamedSharding(self.mesh, P())
        # Batches of batch_size queries, or of the power of two above a smaller total: one
        # compilation per size, at most log2(batch_size) sizes.
        batch = min(batch_size, 1 << (len(queries) - 1).bit_length())
        scores = np.empty((len(queries), k), np.float32)
        rows = np.empty((len(queries), k), np.int64)
        for start in range(0, len(queries), batch):
            part = queries[start:start + batch]
            padded = np.zeros((batch, queries.shape[1]), np.float32)  # one compiled shape
            padded[:len(part)] = part
            q = jax.make_array_from_callback(padded.shape, replicated, lambda i: padded[i])
            s, r = fn(q, self.rows, self.offsets)
            scores[start:start + len(part)] = np.asarray(s)[:len(part)]
            rows[start:start + len(part)] = np.asarray(r)[:len(part)]
        return scores, rows

    def save(self, folder: str) -> list[str]:
        """Each process writes the rows its devices hold: ``database-<first row>.npy`` per
        device share (replica 0, the padding left out); returns the files written."""
        # numpy has no bfloat16: its bits are saved as uint16 (params["dtype"] says so).
        stored = np.uint16 if self.rows.dtype == jnp.bfloat16 else self.rows.dtype
        written = []
        for shard in self.rows.addressable_shards:
            start = shard.index[0].start or 0
            if start >= self.num_valid or shard.replica_id != 0:
                continue
            stop = min(start + shard.data.shape[0], self.num_valid)
            written.append(f"database-{start:012d}.npy")
            _save_array(os.path.join(folder, written[-1]),
                        np.asarray(shard.data)[:stop - start].view(stored))
        return written

    @staticmethod
    def _parts(folder: str) -> list[np.ndarray]:
        """The saved shares in row order, memory-mapped, checked to tile the rows."""
        names = sorted(n for n in os.listdir(folder)
                       if n.startswith("database") and n.endswith(".npy"))
        parts, at = [], 0
        for name in names:
            start = 0 if name == "database.npy" else int(name[len("database-"):-len(".npy")])
            if start != at:
                raise IndexFileError(os.path.join(folder, name), f"starts at row {start}, "
                                     f"expected {at}; build the index again.")
            parts.append(np.load(os.path.join(folder, name), mmap_mode="r"))
            at += len(parts[-1])
        return parts

    @classmethod
    def load(cls, folder: str, params: dict[str, Any], mesh: Mesh | None) -> "_ExactEngine":
        dtype = jnp.dtype(params["dtype"])
        parts = [p.view(dtype) for p in cls._parts(folder)]
        chunks = (p[s:s + ROWS_PER_CHUNK] for p in parts for s in range(0, len(p), ROWS_PER_CHUNK))
        return cls.from_chunks(chunks, sum(map(len, parts)), parts[0].shape[1], params, mesh)


_ENGINES = {"scann": _ScannEngine, "exact": _ExactEngine}


# ------------------------------------------------------------------------ files
def _files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def _save_array(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
