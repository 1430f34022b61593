"""GeoWorld rendering throughput: images/s of ``render_batch`` by image size and batch size.

    python benchmarks/geoworld_render.py                       # 64 and 224 px, batch 1 and 256
    python benchmarks/geoworld_render.py --sizes 64,128,224 --batches 1,32,256 --seconds 3

Renders distinct training photos (a fresh index range per call, so nothing is cached)
on one core: numpy only, single-threaded. Each cell is the best of ``--repeats`` timed
runs of at least ``--seconds`` each. Also times the construction of the split (locations,
users, timestamps for every photo), which happens once per process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geojax import runtime
from geojax.data import geoworld
from geojax.geo.gazetteer import Gazetteer


def _rate(world: geoworld.GeoWorld, batch: int, seconds: float, repeats: int) -> float:
    """Best images/s over ``repeats`` runs of ``render_batch`` on consecutive batches."""
    world.render_batch(np.arange(batch))  # warm-up (noise tile, caches)
    best, start = 0.0, batch
    for _ in range(repeats):
        done, t0 = 0, time.perf_counter()
        while True:
            world.render_batch(np.arange(start, start + batch) % len(world))
            start += batch
            done += batch
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        best = max(best, done / elapsed)
    return best


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train", choices=geoworld.SPLITS)
    parser.add_argument("--size", type=int, default=None,
                        help="photos in the split (default: the split's default size)")
    parser.add_argument("--sizes", default="64,224", help="image sizes, comma-separated")
    parser.add_argument("--batches", default="1,256", help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    gazetteer = Gazetteer.load()
    t0 = time.perf_counter()
    world = geoworld.GeoWorld(args.split, args.size, gazetteer=gazetteer)
    build_s = time.perf_counter() - t0
    print(f"{world!r}: built in {build_s:.2f} s "
          f"({len(world) / build_s:,.0f} photos/s of metadata)\n")

    header = f"{'image size':>10} | " + " | ".join(f"{f'batch {b}':>12}" for b in batches)
    print(header)
    print("-" * len(header))
    for size in sizes:
        sized = geoworld.GeoWorld(args.split, args.size, image_size=size, gazetteer=gazetteer)
        rates = [_rate(sized, b, args.seconds, args.repeats) for b in batches]
        print(f"{size:>10} | " + " | ".join(f"{r:>8,.0f} /s" for r in rates))
    print("\nimages/s on one core (numpy, single thread); best of "
          f"{args.repeats} runs of >= {args.seconds:g} s each")


if __name__ == "__main__":
    main()
