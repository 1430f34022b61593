"""S2 lat/lng → cell id throughput: geojax (numpy, jitted jax) vs s2geometry, s2sphere, s2cell.

    python benchmarks/s2_throughput.py                 # 1,000,000 points, level 13 + level sweep
    python benchmarks/s2_throughput.py --points 200000 --sweep 0,10,20,30

All implementations convert the same uniformly random points in one run; the
table gives points/s, the speed-up over s2geometry and whether every id is
identical to s2geometry's.  The per-point reference libraries are timed on
``--ref_points`` points for the level sweep (their rate does not depend on the
input size), and on all points at the headline level.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from geojax import runtime
from geojax.geo import s2, s2_jax


def _best_of(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _reference_impls():
    impls = {}
    try:
        import s2geometry as s2g

        impls["s2geometry"] = lambda lat, lng, lv: np.fromiter(
            (s2g.S2CellId(s2g.S2LatLng.FromDegrees(a, b)).parent(lv).id() for a, b in zip(lat, lng)),
            np.uint64, len(lat))
    except ImportError:
        pass
    try:
        import s2sphere

        impls["s2sphere"] = lambda lat, lng, lv: np.fromiter(
            (s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).parent(lv).id()
             for a, b in zip(lat, lng)), np.uint64, len(lat))
    except ImportError:
        pass
    try:
        import s2cell

        impls["s2cell"] = lambda lat, lng, lv: np.fromiter(
            (s2cell.lat_lon_to_cell_id(a, b, lv) for a, b in zip(lat, lng)), np.uint64, len(lat))
    except ImportError:
        pass
    return impls


def run(num_points: int, level: int, sweep: list[int], ref_points: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, num_points)))
    lng = rng.uniform(-180, 180, num_points)
    lat_l, lng_l = lat.tolist(), lng.tolist()
    refs = _reference_impls()

    with jax.enable_x64(True):
        jlat, jlng = jnp.asarray(lat), jnp.asarray(lng)
        jit64 = jax.jit(s2_jax.cell_id_from_latlng, static_argnums=2)
    jlat32, jlng32 = jnp.asarray(lat, jnp.float32), jnp.asarray(lng, jnp.float32)
    jit32 = jax.jit(s2_jax.cell_id_from_latlng, static_argnums=2)

    print(f"S2 lat/lng → cell id, {num_points:,} uniform random points, best of {repeats}; "
          f"{jax.devices()[0].platform} jax {jax.__version__}\n")
    header = f"{'level':>5}  {'implementation':<22}{'points':>10}{'points/s':>14}{'vs s2geometry':>15}  ids identical"
    print(header)
    print("-" * len(header))
    for lv in [level] + [x for x in sweep if x != level]:
        n_ref = num_points if lv == level else min(ref_points, num_points)
        rows = []
        t_np, ids = _best_of(lambda: s2.cell_id_from_latlng(lat, lng, lv), repeats)
        rows.append(("geojax numpy", num_points, t_np, ids))

        def jax64():
            with jax.enable_x64(True):
                w = jit64(jlat, jlng, lv)
                jax.block_until_ready(w)
            return w

        jax64()  # compile
        t_j, words = _best_of(jax64, repeats)
        rows.append(("geojax jax (x64)", num_points, t_j, s2_jax.join_words(words)))

        def jax32():
            w = jit32(jlat32, jlng32, lv)
            jax.block_until_ready(w)
            return w

        jax32()
        t_j32, words32 = _best_of(jax32, repeats)
        rows.append(("geojax jax (float32)*", num_points, t_j32, s2_jax.join_words(words32)))

        ref_rates = {}
        ref_ids = {}
        for name, fn in refs.items():
            t_r, rid = _best_of(lambda fn=fn: fn(lat_l[:n_ref], lng_l[:n_ref], lv), 1)
            ref_rates[name] = n_ref / t_r
            ref_ids[name] = rid
            rows.append((name, n_ref, t_r, rid))
        truth = ref_ids.get("s2geometry")
        base_rate = ref_rates.get("s2geometry")
        for name, n, t, got in rows:
            rate = n / t
            ratio = f"{rate / base_rate:,.1f}×" if base_rate else "n/a"
            if truth is None:
                same = "no reference"
            else:
                m = min(len(truth), len(got))
                agree = float(np.mean(got[:m] == truth[:m]))
                same = "yes (100%)" if agree == 1.0 else f"NO ({agree:.4%})"
            print(f"{lv:>5}  {name:<22}{n:>10,}{rate:>14,.0f}{ratio:>15}  {same}")
        print()
    print("* float32 is jax's default without jax_enable_x64; exact only away from cell edges "
          "(see geojax/geo/s2_jax.py).")


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--level", type=int, default=13)
    parser.add_argument("--sweep", default="0,5,10,20,25,30")
    parser.add_argument("--ref_points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run(args.points, args.level, [int(x) for x in args.sweep.split(",") if x], args.ref_points, args.repeats)


if __name__ == "__main__":
    main()
