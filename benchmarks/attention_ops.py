"""Attention forward + backward: JAX formulations against PyTorch, side by side in one process.

    python benchmarks/attention_ops.py                       # every shape, every formulation
    XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/attention_ops.py --shapes vit224

Each formulation maps ``q (B, Lq, H, D), k, v (B, Lk, H, D)`` (flax's layout) to the
softmax attention output of the same shape and is timed for the forward pass and the
gradients with respect to ``q, k, v`` (``jax.vjp`` with a fixed cotangent), jitted. The
PyTorch side runs the same computation with ``torch.nn.functional.scaled_dot_product_attention``
on ``(B, H, L, D)`` views (what ``nn.MultiheadAttention`` calls in training when
``need_weights=False``) and with explicit ``torch.bmm``. The contestants alternate, ``--repeats``
times, and the table gives each one's median and best wall time and its median process CPU
time (all threads) in milliseconds. Before JAX starts,
``geojax.runtime.configure_cpu()`` applies geojax's CPU runtime settings (``XLA_FLAGS`` set by
the caller are kept).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np

from geojax import runtime

# name: (B, Lq, Lk, H, D)
SHAPES = {
    "vit224": (16, 197, 197, 6, 64),          # ViT-S/16 self-attention at 224 px, batch 16
    "cross224": (16, 112, 197, 6, 64),        # geodecoder224's cross-attention
    "dep224": (112, 16, 16, 6, 64),           # geodecoder224's hierarchy-dependent self-attn
    "cross_geoworld": (128, 112, 16, 1, 32),  # GeoWorld decoder's cross-attention (SmallCNN)
    "cross_vit64": (128, 112, 65, 1, 32),     # the same with the 64 px ViT encoder
    "vit64": (128, 65, 65, 2, 32),            # the 64 px ViT encoder's self-attention
}


def time_contestants(contestants: dict[str, Callable[[], object]], repeats: int, inner: int,
                     warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each contestant ``warmup`` times, then ``repeats`` rounds in turns of ``inner`` calls:
    ``(wall ms per call, CPU ms per call)`` per round, by name."""
    for fn in contestants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    cpu: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, fn in contestants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / inner * 1e3)
    return times, cpu


def jax_formulations() -> dict[str, Callable]:
    # pylint: disable=import-outside-toplevel
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from geojax.models import attention

    def flax_default(q, k, v):
        return nn.dot_product_attention(q, k, v, force_fp32_for_softmax=True)

    def jax_nn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")

    def heads_first(q, k, v):
        qt, kt, vt = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # (B, H, L, D)
        qt = qt / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        w = jax.nn.softmax(jnp.matmul(qt, jnp.swapaxes(kt, -1, -2)), axis=-1)
        return jnp.swapaxes(jnp.matmul(w, vt), 1, 2)

    def merged(q, k, v):
        b, lq, h, d = q.shape
        lk = k.shape[1]
        qt = jnp.swapaxes(q, 1, 2).reshape(b * h, lq, d) / jnp.sqrt(d).astype(q.dtype)
        kt = jnp.swapaxes(k, 1, 2).reshape(b * h, lk, d)
        vt = jnp.swapaxes(v, 1, 2).reshape(b * h, lk, d)
        s = jax.lax.dot_general(qt, kt, (((2,), (2,)), ((0,), (0,))))
        w = jax.nn.softmax(s, axis=-1)
        o = jax.lax.dot_general(w, vt, (((2,), (1,)), ((0,), (0,))))
        return jnp.swapaxes(o.reshape(b, h, lq, d), 1, 2)

    def geojax_attention(q, k, v):
        return attention.dot_product_attention(q, k, v, force_fp32_for_softmax=True)

    return {"flax_default": flax_default, "geojax": geojax_attention, "jax_nn_xla": jax_nn,
            "heads_first": heads_first, "merged_bh": merged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--formulations", default="")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=3, help="calls per timed sample")
    args = parser.parse_args()
    runtime.configure_cpu()
    # pylint: disable=import-outside-toplevel
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(os.cpu_count())
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}", flush=True)
    forms = jax_formulations()
    if args.formulations:
        forms = {k: forms[k] for k in args.formulations.split(",")}
    for shape_name in args.shapes.split(","):
        b, lq, lk, h, d = SHAPES[shape_name]
        rng = np.random.default_rng(0)
        qn, kn, vn = (rng.standard_normal((b, n, h, d)).astype(np.float32) for n in (lq, lk, lk))
        gn = rng.standard_normal((b, lq, h, d)).astype(np.float32)
        contestants: dict[str, Callable[[], None]] = {}
        ref = None
        for name, fn in forms.items():
            def fwd_bwd(q, k, v, g, fn=fn):
                out, vjp = jax.vjp(fn, q, k, v)
                return (out, *vjp(g))
            step = jax.jit(fwd_bwd)
            args_j = [jnp.asarray(t) for t in (qn, kn, vn, gn)]
            res = jax.block_until_ready(step(*args_j))
            if ref is None:
                ref = res
            err = max(float(jnp.max(jnp.abs(a - r))) for a, r in zip(res, ref))
            assert err < 1e-4, (name, err)
            contestants[f"jax {name}"] = (lambda s=step, a=args_j: jax.block_until_ready(s(*a)))

        tq, tk, tv = (torch.from_numpy(t).transpose(1, 2).contiguous().requires_grad_()
                      for t in (qn, kn, vn))
        tg = torch.from_numpy(gn).transpose(1, 2).contiguous()

        def torch_sdpa():
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
            torch.autograd.grad(out, (tq, tk, tv), tg)

        def torch_bmm():
            q2 = tq.reshape(b * h, lq, d) / d ** 0.5
            w = torch.softmax(torch.bmm(q2, tk.reshape(b * h, lk, d).transpose(1, 2)), -1)
            out = torch.bmm(w, tv.reshape(b * h, lk, d))
            torch.autograd.grad(out, (tq, tk, tv), tg.reshape(b * h, lq, d))

        contestants["torch sdpa"] = torch_sdpa
        contestants["torch bmm"] = torch_bmm
        times, cpu = time_contestants(contestants, args.repeats, args.inner)
        print(f"\n{shape_name} (B, Lq, Lk, H, D) = {(b, lq, lk, h, d)}; load "
              f"{os.getloadavg()[0]:.2f}")
        for name, t in times.items():
            print(f"  {name:20s} median {statistics.median(t):8.2f} ms   best {min(t):8.2f} ms"
                  f"   CPU time {statistics.median(cpu[name]):8.2f} ms", flush=True)


if __name__ == "__main__":
    main()
