"""Inference overheads against the backbone's forward pass (004 §4.2, DESIGN.md).

004 reports that five classification heads cost 2 % of the forward pass and combinatorial
partitioning (NormalizedSum over the fine partitions + Eq. 4) 0.004 %. This measures, side by
side in one run, with jit on this machine's CPU:

* the backbone forward pass (ResNet-50 at 224×224 by default; ``--backbone small_cnn
  --image_size 64`` for the GeoWorld default model), batch ``--batch``;
* the five geoclass-set heads on its features (Table 1's class counts, scaled to the data);
* combinatorial scoring and prediction over the index of five geoclass sets built on
  ``--points`` MP-16-like coordinates (``benchmarks/cplanet_build.py``'s sampler; a level-14
  graph as in 004 §5.2).

    python benchmarks/inference_overhead.py                       # 4.72M points, ResNet-50
    python benchmarks/inference_overhead.py --paper_n             # Table 1's N as published
    python benchmarks/inference_overhead.py --points 400000 --backbone small_cnn --image_size 64

Reported: milliseconds per batch (median of ``--repeats``) and each overhead as a percentage
of the backbone's forward pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplanet_build import mp16_like_points  # noqa: E402  pylint: disable=wrong-import-position

from geojax import runtime  # noqa: E402
from geojax.inference import predictors  # noqa: E402
from geojax.models import heads as heads_lib, registry  # noqa: E402
from geojax.partitions import combinatorial, cplanet  # noqa: E402


def _median_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=4_720_000)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--paper_n", action="store_true",
                        help="Table 1's class counts as published (default: scaled to --points)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    lat, lng, _ = mp16_like_points(args.points)
    sets = cplanet.build_table1_sets(lat, lng, base_level=14, scale=not args.paper_n)
    index = combinatorial.CombinatorialIndex.build(sets, lat, lng, base_level=14)
    print(f"five geoclass sets on {args.points} points ({[p.num_classes for p in sets]} classes), "
          f"{index.num_fine_partitions} fine partitions; built in {time.perf_counter() - t0:.0f} s")

    backbone = registry.get_backbone(args.backbone)
    heads = heads_lib.MultiPartitionHeads({p.name: p.num_classes for p in sets})
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(args.batch, args.image_size, args.image_size, 3)),
                         jnp.float32)
    bb_vars = backbone.init(jax.random.key(0), images[:1], train=False)
    features = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(bb_vars, images)
    head_vars = heads.init(jax.random.key(1), features, train=False)
    logits = jax.jit(lambda v, f: heads.apply(v, f, train=False))(head_vars, features)
    combo = predictors.Combinatorial.from_index(index)

    forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
    head_fn = jax.jit(lambda v, f: heads.apply(v, f, train=False))
    combo_fn = jax.jit(combo)
    ms_forward = _median_ms(forward, bb_vars, images, repeats=args.repeats)
    ms_heads = _median_ms(head_fn, head_vars, features, repeats=args.repeats)
    ms_combo = _median_ms(combo_fn, logits, repeats=args.repeats)
    print(f"\n{args.backbone} at {args.image_size}x{args.image_size}, batch {args.batch}, "
          f"{jax.devices()[0].platform}:")
    print(f"{'':<42}{'ms / batch':>12}{'% of forward':>14}")
    print(f"{'backbone forward pass':<42}{ms_forward:>12.2f}{100.0:>14.3f}")
    print(f"{'five geoclass-set heads':<42}{ms_heads:>12.3f}{100 * ms_heads / ms_forward:>14.3f}")
    print(f"{'combinatorial NormalizedSum + Eq. 4':<42}{ms_combo:>12.3f}"
          f"{100 * ms_combo / ms_forward:>14.3f}")


if __name__ == "__main__":
    main()
