"""One pre-norm transformer block, forward + backward: geojax (JAX) against PyTorch, one process.

    python benchmarks/transformer_block.py                    # ViT-S/16 block at 224 px, batch 16
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,reduce \
        python benchmarks/transformer_block.py

The JAX side is ``geojax.models.vit.EncoderBlock`` (LayerNorm,
``nn.MultiHeadDotProductAttention``, LayerNorm, exact-GELU MLP), timed as it is (``jax``) and
with ``flax.linen.dot_product_attention`` as its attention function (``jax flax attention``):
``jax.value_and_grad`` of ``sum(block(x) * g)`` with respect to the parameters and ``x``, jitted.
The PyTorch side is the block of
``benchmarks/train_throughput.py``'s twin (``nn.MultiheadAttention`` with
``need_weights=False``, i.e. ``scaled_dot_product_attention``), the same loss and
``backward()``. Each repetition times ``--inner`` calls of each side back to back; the table
gives the median and best wall time per call and the median process CPU time (all threads).
``geojax.runtime.configure_cpu()`` is applied first (``XLA_FLAGS`` set by the caller are kept,
an XLA:CPU flag given there wins).
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from attention_ops import time_contestants  # this folder (the script's sys.path[0])
from geojax import runtime

SHAPES = {  # name: (batch, tokens, width, heads)
    "vit224": (16, 197, 384, 6),    # ViT-S/16 at 224 px, batch 16 (geodecoder224's encoder)
    "vit64": (128, 65, 64, 2),      # geodecoder_vit's 64 px encoder
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="vit224", choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=2)
    args = parser.parse_args()
    runtime.configure_cpu()
    # pylint: disable=import-outside-toplevel
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import torch

    from geojax.models.vit import LN_EPSILON, EncoderBlock

    torch.set_num_threads(os.cpu_count())
    batch, tokens, width, heads = SHAPES[args.shape]
    rng = np.random.default_rng(0)
    xn = rng.standard_normal((batch, tokens, width)).astype(np.float32)
    gn = rng.standard_normal((batch, tokens, width)).astype(np.float32)

    block = EncoderBlock(num_heads=heads, mlp_dim=4 * width)
    x, g = jnp.asarray(xn), jnp.asarray(gn)
    params = jax.jit(lambda: block.init(jax.random.key(0), x, train=True))()

    def use_flax_attention(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.MultiHeadDotProductAttention) and \
                context.method_name == "__call__":
            object.__setattr__(context.module, "attention_fn", nn.dot_product_attention)
        return next_fun(*args, **kwargs)

    def make_step(flax_attention: bool):
        def loss(p, x, g):
            if flax_attention:
                with nn.intercept_methods(use_flax_attention):
                    return jnp.sum(block.apply(p, x, train=True) * g)
            return jnp.sum(block.apply(p, x, train=True) * g)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    jax_step, jax_flax_step = make_step(False), make_step(True)

    tblock = torch.nn.ModuleDict(dict(
        ln1=torch.nn.LayerNorm(width, eps=LN_EPSILON),
        ln2=torch.nn.LayerNorm(width, eps=LN_EPSILON),
        attn=torch.nn.MultiheadAttention(width, heads, batch_first=True),
        mlp=torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                torch.nn.Linear(4 * width, width)))).train()
    tx = torch.from_numpy(xn).requires_grad_()
    tg = torch.from_numpy(gn)

    def torch_step():
        y = tblock["ln1"](tx)
        h = tx + tblock["attn"](y, y, y, need_weights=False)[0]
        out = h + tblock["mlp"](tblock["ln2"](h))
        tblock.zero_grad(set_to_none=True)
        tx.grad = None
        (out * tg).sum().backward()

    contestants = {"jax": lambda: jax.block_until_ready(jax_step(params, x, g)),
                   "jax flax attention": lambda: jax.block_until_ready(
                       jax_flax_step(params, x, g)),
                   "torch": torch_step}
    times, cpu = time_contestants(contestants, args.repeats, args.inner, warmup=2)
    print(f"{args.shape} (batch, tokens, width, heads) = {SHAPES[args.shape]}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; load {os.getloadavg()[0]:.2f}")
    for name, t in times.items():
        print(f"  {name:18s} median {statistics.median(t):8.1f} ms   best {min(t):8.1f} ms   "
              f"CPU time {statistics.median(cpu[name]):8.1f} ms")
    ratio = statistics.median(times["torch"]) / statistics.median(times["jax"])
    print(f"  JAX speed / PyTorch speed (medians): {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
