"""The GeoDecoder's dense products, forward and both gradients: XLA:CPU (JAX) against PyTorch.

    python benchmarks/matmul_shapes.py                       # every shape below, 7 repetitions
    python benchmarks/matmul_shapes.py --shapes 14336x32x64 --repeats 15
    GEOJAX_XLA_CPU_DEFAULTS=0 python benchmarks/matmul_shapes.py      # XLA's own settings

A Dense layer ``y = x · w + b`` with ``x`` of ``M × K`` and ``w`` of ``K × N`` costs, per train
step, the forward product ``x · w``, the input gradient ``dy · wᵀ``, the kernel gradient
``xᵀ · dy`` (contracting the ``M`` rows) and the bias gradient ``Σ_rows dy``. Each is timed
alone, jitted on the JAX side (``geojax.runtime.configure_cpu()`` first, as every geojax entry
point), against ``torch.matmul`` / ``sum`` with ``torch.set_num_threads(os.cpu_count())``, in
turns (``attention_ops.time_contestants``). The table gives the median wall time per call and
PyTorch's time divided by JAX's (above 1: JAX is faster).

Shapes (``M × K × N``):

- ``14336x32x64``, ``14336x64x32``: the FFN of the GeoWorld decoder (``configs/geodecoder.py``,
  ``benchmarks/train_throughput.py --models geodecoder``): 128 images × 7 hierarchies × 16
  scenes = 14,336 queries of width 32, FFN width 64;
- ``14336x32x32``: one of its attention projections (query, key, value, output);
- ``3152x384x1536``, ``3152x1536x384``, ``3152x384x1152``: ViT-S/16's FFN and fused QKV
  width at 224 px, batch 16 (197 tokens each) — ``--models geodecoder224``'s encoder.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from attention_ops import time_contestants  # this folder (the script's sys.path[0])
from geojax import runtime

SHAPES = ("14336x32x64", "14336x64x32", "14336x32x32",
          "3152x384x1536", "3152x1536x384", "3152x384x1152")
PRODUCTS = ("x·w", "dy·wᵀ", "xᵀ·dy", "Σ dy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="comma-separated MxKxN (default: the GeoDecoder's shapes)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    args = parser.parse_args()
    runtime.configure_cpu()
    # pylint: disable=import-outside-toplevel
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(os.cpu_count())
    jax_ops = {"x·w": jax.jit(lambda x, w, dy: x @ w),
               "dy·wᵀ": jax.jit(lambda x, w, dy: dy @ w.T),
               "xᵀ·dy": jax.jit(lambda x, w, dy: x.T @ dy),
               "Σ dy": jax.jit(lambda x, w, dy: jnp.sum(dy, axis=0))}
    torch_ops = {"x·w": lambda x, w, dy: x @ w, "dy·wᵀ": lambda x, w, dy: dy @ w.T,
                 "xᵀ·dy": lambda x, w, dy: x.T @ dy, "Σ dy": lambda x, w, dy: dy.sum(0)}
    rng = np.random.default_rng(0)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load {os.getloadavg()[0]:.2f}")
    print("| M × K × N | product | JAX ms | PyTorch ms | PyTorch / JAX |")
    print("|---|---|---:|---:|---:|")
    for shape in args.shapes.split(","):
        m, k, n = (int(v) for v in shape.split("x"))
        x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n), (m, n)))
        jx, jw, jdy = (jnp.asarray(a) for a in (x, w, dy))
        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        for product in PRODUCTS:
            jf, tf = jax_ops[product], torch_ops[product]
            contestants = {"jax": lambda jf=jf: jax.block_until_ready(jf(jx, jw, jdy)),
                           "torch": lambda tf=tf: tf(tx, tw, tdy)}
            times, _ = time_contestants(contestants, args.repeats, args.inner, warmup=3)
            jms, tms = statistics.median(times["jax"]), statistics.median(times["torch"])
            print(f"| {m} × {k} × {n} | {product} | {jms:.3f} | {tms:.3f} | {tms / jms:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
