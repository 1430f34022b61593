"""Partition building at MP-16 scale: geojax vs a per-point s2sphere reference, and CPlaNet sets.

    python benchmarks/partition_build.py                       # 4.72M points, all of it
    python benchmarks/partition_build.py --ref_points 100000   # smaller reference run

1. 003's seven adaptive S2 hierarchies (Table 8 thresholds, t_min = 50) on
   4,723,695 MP-16-like coordinates from ``geojax.data.places`` (GeoNames
   places weighted like Flickr photos, a few km of spread).
2. The same algorithm written the straightforward way — one s2sphere CellId
   per point, a Python dict of counts per level — on ``--ref_points`` of those
   points (its cost is linear in the points), next to geojax on the same
   points: the speed-up and whether cells and counts are identical.
3. CPlaNet's five Table 1 geoclass sets on a level-14 graph of all points, and
   combinatorial scoring time per image for the five sets.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from geojax import runtime
from geojax.data import places
from geojax.partitions import combinatorial, cplanet, s2_adaptive
from geojax.partitions.s2_cells import SortedLeaves

MP16 = s2_adaptive.MP16_NUM_IMAGES


def reference_hierarchy(lat, lng, t_max_list, t_min):
    """Per-point reference: s2sphere ids, dict counting, level by level."""
    import s2sphere  # pylint: disable=import-outside-toplevel

    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for a, b in zip(lat, lng)]
    out = []
    for t_max in t_max_list:
        kept = {}
        active = list(range(len(leaves)))
        for level in range(0, 31):
            groups = collections.defaultdict(list)
            for k in active:
                groups[leaves[k].parent(level).id()].append(k)
            active = []
            for cell, members in groups.items():
                if len(members) > t_max and level < 30:
                    active.extend(members)
                elif len(members) >= t_min:
                    kept[cell] = len(members)
            if not active:
                break
        out.append(kept)
    return out


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=MP16)
    parser.add_argument("--ref_points", type=int, default=200_000)
    parser.add_argument("--skip_cplanet", action="store_true")
    args = parser.parse_args()

    t = time.perf_counter()
    sample = places.sample_mp16_like(args.points, 0)
    lat, lng = sample["lat"], sample["lng"]
    print(f"{args.points:,} MP-16-like coordinates sampled in {time.perf_counter() - t:.1f}s\n")

    # 1. geojax, all points, all seven hierarchies.
    t = time.perf_counter()
    points = SortedLeaves(lat, lng)
    t_prep = time.perf_counter() - t
    parts = s2_adaptive.build_s2_hierarchy(points=points)
    t_all = time.perf_counter() - t
    print(f"geojax: 7 hierarchies of 003 Table 8 on {args.points:,} points in {t_all:.2f}s "
          f"(leaf ids + sort + xyz {t_prep:.2f}s)")
    print(f"  {'t_max':>6} {'classes':>8} {'paper (MP-16)':>14}")
    for p, t_max, paper in zip(parts, s2_adaptive.TABLE8_T_MAX, s2_adaptive.TABLE8_NUM_CLASSES):
        print(f"  {t_max:>6} {p.num_classes:>8} {paper:>14}")

    # 2. Side by side with the per-point reference on a subsample.
    n_ref = min(args.ref_points, args.points)
    scale = n_ref / MP16
    t_max_list, t_min = s2_adaptive.scaled_t_values(n_ref)
    r_lat, r_lng = lat[:n_ref], lng[:n_ref]
    t = time.perf_counter()
    ours = s2_adaptive.build_s2_hierarchy(r_lat, r_lng, t_max=t_max_list, t_min=t_min)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_hierarchy(r_lat.tolist(), r_lng.tolist(), t_max_list, t_min)
    t_ref = time.perf_counter() - t
    same = all(dict(zip(p.cell_ids.tolist(), p.counts[p.cell_class].tolist())) == r for p, r in zip(ours, ref))
    print(f"\nper-point reference (s2sphere) vs geojax, {n_ref:,} points, thresholds scaled ×{scale:.3f} "
          f"(t_max {t_max_list}, t_min {t_min}):")
    print(f"  reference {t_ref:8.2f}s   geojax {t_ours:6.2f}s   speed-up {t_ref / t_ours:6.1f}×   "
          f"identical cells and counts: {'yes' if same else 'NO'}")

    if args.skip_cplanet:
        return
    # 3. CPlaNet Table 1 sets at level 14 and combinatorial scoring.
    t = time.perf_counter()
    sets = cplanet.build_table1_sets(lat, lng, base_level=14, scale=args.points != MP16)
    t_sets = time.perf_counter() - t
    print(f"\nCPlaNet: five Table 1 geoclass sets, level-14 graph, {args.points:,} points: {t_sets:.1f}s")
    for s in sets:
        print(f"  {s.name}: {s.num_classes} classes, {s.cell_ids.size} S2 cells")
    t = time.perf_counter()
    index = combinatorial.CombinatorialIndex.build(sets, lat, lng, base_level=14)
    print(f"  combinatorial index: {index.num_fine_partitions:,} fine partitions "
          f"(004: 107,593 on MP-16) in {time.perf_counter() - t:.1f}s")
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    batch = 64
    rng = np.random.default_rng(0)
    probs = [jnp.asarray(rng.dirichlet(np.ones(s.num_classes), size=batch), jnp.float32) for s in sets]
    arrays = jax.tree.map(jnp.asarray, index.arrays())
    fn = jax.jit(combinatorial.combinatorial_predict)
    jax.block_until_ready(fn(probs, arrays))
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        jax.block_until_ready(fn(probs, arrays))
    per_image = (time.perf_counter() - t) / (reps * batch)
    print(f"  combinatorial scoring + Eq. 4 prediction, five sets: {per_image * 1e6:.1f} µs per image "
          f"(jit, CPU, batch {batch})")


if __name__ == "__main__":
    main()
