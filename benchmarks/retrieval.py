"""Retrieval engines side by side: ScaNN vs faiss ``IndexFlatIP`` vs geojax's exact JAX search.

001's kNN (k = 100) over a database of L2-normalised features. For each engine, in one run on
the same database and queries: build time, queries/s (all queries searched as one batch of
``--queries``), recall@k against the exact JAX search, and peak memory. Each engine runs in
its own child process, one after the other, so that its memory is measured alone:

* **peak RSS** — ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child at its end: the
  database it loads (float32, read fully into memory), the build and the searches;
* **index RSS** — the peak minus the child's RSS right after loading the database: what the
  engine adds (its copy of the features, codes, trees; for JAX on CPU the device buffers).

The database (default): 1,000,000 × 512 synthetic features, a two-level Gaussian mixture —
64 groups of 64 centres (4,096 centres, group members closer to each other than to other
groups), cluster sizes log-normal (σ = 1), each point its centre plus a displacement in a
random 16-dimensional subspace of the cluster (scale 0.5–1.0) plus isotropic noise (norm
0.15), normalised; queries are new draws from the same mixture. ``--rank 0`` drops the
subspaces (isotropic clusters, norm ``--spread``): points in a cluster are then nearly
equidistant, a harder case for any partitioning index.

    python benchmarks/retrieval.py                  # 1M × 512, 1,000 queries, k = 100
    python benchmarks/retrieval.py --quick          # 50,000 × 128, 500 queries: a smoke run
    python benchmarks/retrieval.py --scann_leaves 10,40   # + ScaNN with other leaves_to_search
    python benchmarks/retrieval.py --scann_params '{"reorder_factor": 8}'   # override the rule
    python benchmarks/retrieval.py --features <workdir>/features/train [--query_features DIR]

With ``--features`` the database is a geojax feature store (``geojax.inference.features``);
without ``--query_features``, ``--queries`` random valid rows of it are the queries and are
left out of the database.

Needs ``faiss-cpu`` (benchmark only, not a geojax dependency) and the ``retrieval`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ENGINES = ("exact", "scann", "faiss")


# ---------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def mixture(dim: int, groups: int, per_group: int, rank: int, seed: int) -> dict[str, np.ndarray]:
    """The two-level mixture of the module docstring (centres, weights, subspaces, scales)."""
    rng = np.random.default_rng(seed)
    tops = _unit(rng.standard_normal((groups, dim), dtype=np.float32))
    centres = np.repeat(tops, per_group, axis=0)
    centres += 0.8 / np.sqrt(dim) * rng.standard_normal(centres.shape, dtype=np.float32)
    centres = _unit(centres)
    weights = rng.lognormal(0.0, 1.0, len(centres))
    basis = rng.standard_normal((len(centres), dim, max(rank, 1)), dtype=np.float32)
    basis /= np.sqrt(dim)
    scale = rng.uniform(0.5, 1.0, len(centres)).astype(np.float32) / np.sqrt(max(rank, 1))
    return dict(centres=centres, weights=weights / weights.sum(), basis=basis, scale=scale,
                rank=np.int64(rank))


def sample(mix: dict[str, np.ndarray], out: np.ndarray, seed: int, noise: float,
           spread: float) -> None:
    """Fills ``out`` (n, dim) with unit draws from ``mix``, cluster by cluster."""
    rng = np.random.default_rng(seed)
    n, dim = out.shape
    labels = rng.choice(len(mix["weights"]), n, p=mix["weights"])
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(mix["weights"]) + 1))
    rank = int(mix["rank"])
    for j in range(len(mix["weights"])):
        rows = order[bounds[j]:bounds[j + 1]]
        if not len(rows):
            continue
        x = rng.standard_normal((len(rows), dim), dtype=np.float32)
        x *= (noise if rank else spread) / np.sqrt(dim)
        x += mix["centres"][j]
        if rank:
            z = rng.standard_normal((len(rows), rank), dtype=np.float32) * mix["scale"][j]
            x += z @ mix["basis"][j].T
        out[rows] = _unit(x)


# ---------------------------------------------------------------------------- children
def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _load_database(work: str) -> tuple[np.ndarray | object, dict]:
    with open(os.path.join(work, "setup.json")) as f:
        setup = json.load(f)
    if setup["store"]:
        from geojax.inference import features  # pylint: disable=import-outside-toplevel
        store = features.open_store(setup["store"], verify=False)
        valid = store.valid.copy()
        valid[np.asarray(setup["held_out"], np.int64)] = False
        return store, dict(valid=valid, num=store.num)
    database = np.load(os.path.join(work, "database.npy"))
    return database, dict(valid=None, num=len(database))


def _child(engine: str, work: str, args: argparse.Namespace) -> None:
    """Builds one engine, searches every query, writes ``<engine>.json`` and its rows."""
    if engine == "exact":
        from geojax import runtime  # pylint: disable=import-outside-toplevel
        runtime.configure_cpu()  # the CPU tuning the geojax CLI applies, before JAX starts
    queries = np.load(os.path.join(work, "queries.npy"))
    database, info = _load_database(work)
    loaded_kib = _rss_kib()
    result: dict = {"engine": engine}
    if engine == "faiss":
        import faiss  # pylint: disable=import-outside-toplevel
        t = time.perf_counter()
        if isinstance(database, np.ndarray):
            data = database
        else:  # a store: the valid rows as one float32 array (faiss needs them in memory)
            rows = np.flatnonzero(info["valid"])
            data = database.rows(rows)
        index = faiss.IndexFlatIP(data.shape[1])
        index.add(data)
        result["build_s"] = time.perf_counter() - t
        index.search(queries[:10], args.k)  # warm-up
        t = time.perf_counter()
        _, found = index.search(queries, args.k)
        result["search"] = [{"label": "IndexFlatIP", "seconds": time.perf_counter() - t}]
        if not isinstance(database, np.ndarray):
            found = rows[found]
        np.save(os.path.join(work, "faiss-0.npy"), found)
    else:
        from geojax.inference import retrieval  # pylint: disable=import-outside-toplevel
        t = time.perf_counter()
        index = retrieval.Index.build(
            database, lat=np.zeros(info["num"]), lng=np.zeros(info["num"]), engine=engine,
            valid=info["valid"], params=json.loads(args.scann_params) if engine == "scann"
            else None, log=lambda line: print("   ", line, flush=True))
        result["build_s"] = time.perf_counter() - t
        result["params"] = index.params
        settings = [None]
        if engine == "scann":
            settings += [int(v) for v in args.scann_leaves.split(",") if v]
        result["search"] = []
        for i, leaves in enumerate(settings):
            if leaves is not None:
                index._engine.params = {**index.params, "leaves_to_search": leaves}  # pylint: disable=protected-access
            index.search(queries[:args.batch], args.k, batch_size=args.batch)  # compile, warm
            t = time.perf_counter()
            _, found = index.search(queries, args.k, batch_size=args.batch)
            seconds = time.perf_counter() - t
            if engine == "exact":
                padded = min(args.batch, 1 << (len(queries) - 1).bit_length())
                label = f"{index.params['dtype']}, batches of {padded} (Index.search's padding)"
            else:
                label = f"leaves_to_search={index.params['leaves_to_search']}"
                if leaves is None:
                    label += (" (the default rule)" if json.loads(args.scann_params) == {}
                              else " (the rule with --scann_params)")
            result["search"].append({"label": label, "seconds": seconds})
            np.save(os.path.join(work, f"{engine}-{i}.npy"), found)
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["index_rss_kib"] = result["peak_rss_kib"] - loaded_kib
    with open(os.path.join(work, f"{engine}.json"), "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------------------- parent
def _prepare(work: str, args: argparse.Namespace) -> str:
    """Writes the database (synthetic) or the held-out rows (store) and the queries."""
    t = time.perf_counter()
    setup = {"store": None, "held_out": []}
    if args.features:
        from geojax.inference import features  # pylint: disable=import-outside-toplevel
        store = features.open_store(args.features)
        if args.query_features:
            queries = features.open_store(args.query_features)
            rows = np.flatnonzero(queries.valid)[:args.queries]
            np.save(os.path.join(work, "queries.npy"), queries.rows(rows))
        else:
            rng = np.random.default_rng(args.seed)
            rows = np.sort(rng.choice(np.flatnonzero(store.valid), args.queries, replace=False))
            np.save(os.path.join(work, "queries.npy"), store.rows(rows))
            setup["held_out"] = rows.tolist()
        setup["store"] = os.path.abspath(args.features)
        what = (f"feature store {args.features}: {store.num} rows × {store.dim} "
                f"({int(store.valid.sum()) - len(setup['held_out'])} indexed)")
    else:
        mix = mixture(args.dim, args.groups, args.per_group, args.rank, args.seed)
        database = np.lib.format.open_memmap(os.path.join(work, "database.npy"), mode="w+",
                                             dtype=np.float32, shape=(args.num, args.dim))
        sample(mix, database, args.seed + 1, args.noise, args.spread)
        database.flush()
        del database
        queries = np.empty((args.queries, args.dim), np.float32)
        sample(mix, queries, args.seed + 2, args.noise, args.spread)
        np.save(os.path.join(work, "queries.npy"), queries)
        shape = (f"subspaces of rank {args.rank}, noise {args.noise}" if args.rank
                 else f"isotropic spread {args.spread}")
        what = (f"synthetic {args.num} × {args.dim}: {args.groups} × {args.per_group} "
                f"centres, {shape}")
    with open(os.path.join(work, "setup.json"), "w") as f:
        json.dump(setup, f)
    return f"{what}; {args.queries} queries, k = {args.k} (prepared in " \
           f"{time.perf_counter() - t:.0f} s)"


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = [np.intersect1d(a, b, assume_unique=True).size for a, b in zip(found, truth)]
    return float(np.mean(hits)) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--per_group", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1024, help="Index.search batch_size")
    parser.add_argument("--scann_leaves", default="",
                        help="comma-separated leaves_to_search to measure besides the rule's")
    parser.add_argument("--scann_params", default="{}",
                        help='JSON overrides of the ScaNN rule, e.g. \'{"reorder_factor": 8}\'')
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--quick", action="store_true", help="50,000 × 128, 500 queries")
    parser.add_argument("--features", help="a feature store directory: the database")
    parser.add_argument("--query_features", help="a feature store directory: the queries")
    parser.add_argument("--workdir", help="keep the data and results here (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.num, args.dim, args.queries, args.groups, args.per_group = 50_000, 128, 500, 16, 16
    if args._child:
        _child(args._child, args.workdir, args)
        return

    engines = [e for e in args.engines.split(",") if e]
    if "exact" not in engines:
        parser.error("--engines must include exact: it is the recall reference.")
    with tempfile.TemporaryDirectory(prefix="geojax-retrieval-") as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)
        print(_prepare(work, args), flush=True)
        print("load average (1 min) at the start: %.1f on %d cores" % (os.getloadavg()[0],
                                                                       os.cpu_count()))
        results = {}
        for engine in engines:
            print(f"{engine}: building and searching in a child process", flush=True)
            child = [sys.executable, os.path.abspath(__file__), "--_child", engine,
                     "--workdir", work, *sys.argv[1:]]
            subprocess.run(child, check=True)
            with open(os.path.join(work, f"{engine}.json")) as f:
                results[engine] = json.load(f)
        truth = np.load(os.path.join(work, "exact-0.npy"))
        faiss_qps = None
        if "faiss" in results:
            faiss_qps = args.queries / results["faiss"]["search"][0]["seconds"]
        print(f"\n| engine | search | build (s) | queries/s | × faiss-flat | recall@{args.k} | "
              "peak RSS (GiB) | index RSS (GiB) |")
        print("|---|---|---|---|---|---|---|---|")
        for engine in engines:
            r = results[engine]
            for i, run in enumerate(r["search"]):
                qps = args.queries / run["seconds"]
                recall = _recall(np.load(os.path.join(work, f"{engine}-{i}.npy")), truth)
                ratio = f"{qps / faiss_qps:.1f}×" if faiss_qps else "–"
                print(f"| {engine} | {run['label']} | {r['build_s']:.1f} | {qps:.0f} | {ratio} | "
                      f"{recall:.4f} | {r['peak_rss_kib'] / 2**20:.2f} | "
                      f"{r['index_rss_kib'] / 2**20:.2f} |")
        if "scann" in results:
            print(f"\nScaNN parameters (default rule): {results['scann']['params']}")
        print("load average (1 min) at the end: %.1f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
