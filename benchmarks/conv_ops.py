"""Per-operation times of the convolutions in a train step, geojax (XLA:CPU) vs PyTorch (oneDNN).

    python benchmarks/conv_ops.py                       # small_cnn and resnet50, 5 repetitions
    python benchmarks/conv_ops.py --models small_cnn --repeats 9

Where ``benchmarks/train_throughput.py`` times whole train steps, this script times every
convolution of the two models on its own, in its three forms: the forward pass (``fwd``), the
gradient with respect to the input (``dx``; not needed for the first layer, whose input is the
data) and with respect to the kernel (``dw``). The per-step totals weight each operation by how
often the model runs it, so they say how much of a step's time is convolution work on each
side, and which part of it differs.

The JAX side runs geojax's own layer (``geojax.models.resnet.Conv``: ``impl="auto"``, 1x1
convolutions as matrix products and larger ones as ``lax`` convolutions, as the ResNet
default; ``impl="conv"`` for ``small_cnn``'s ``nn.Conv`` 3x3 layers, the same ``lax`` call),
jitted, with the XLA flag and malloc settings of ``geojax.runtime.configure_cpu``. The
PyTorch side runs ``torch.nn.functional.conv2d`` and ``torch.ops.aten.convolution_backward``
(what autograd calls) on ``channels_last`` tensors with 2 threads, with the same malloc
settings. Each side runs in its own worker process; every repetition times each operation on
both sides in turn (``--calls`` calls each, after one untimed call) and the table shows the
median over the repetitions. PyTorch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

from train_throughput import Worker, worker_env

from geojax import runtime


# (model, batch, input size, in channels, out channels, kernel, stride, times per step,
#  input gradient needed).
OPS = [
    # small_cnn at 64x64: space-to-depth to 32x32x12, then four 3x3 conv stages with pooling.
    ("small_cnn", 128, 32, 12, 32, 3, 1, 1, False),
    ("small_cnn", 128, 16, 32, 64, 3, 1, 1, True),
    ("small_cnn", 128, 8, 64, 128, 3, 1, 1, True),
    ("small_cnn", 128, 4, 128, 256, 3, 1, 1, True),
    # ResNet-50 v1.5 at 224x224: the stem, then the 3x3 and 1x1 convolutions of the stages.
    ("resnet50", 32, 224, 3, 64, 7, 2, 1, False),
    ("resnet50", 32, 56, 64, 64, 3, 1, 3, True),
    ("resnet50", 32, 56, 128, 128, 3, 2, 1, True),
    ("resnet50", 32, 28, 128, 128, 3, 1, 3, True),
    ("resnet50", 32, 28, 256, 256, 3, 2, 1, True),
    ("resnet50", 32, 14, 256, 256, 3, 1, 5, True),
    ("resnet50", 32, 14, 512, 512, 3, 2, 1, True),
    ("resnet50", 32, 7, 512, 512, 3, 1, 2, True),
    ("resnet50", 32, 56, 64, 64, 1, 1, 1, True),
    ("resnet50", 32, 56, 64, 256, 1, 1, 4, True),
    ("resnet50", 32, 56, 256, 64, 1, 1, 2, True),
    ("resnet50", 32, 56, 256, 128, 1, 1, 1, True),
    ("resnet50", 32, 56, 256, 512, 1, 2, 1, True),
    ("resnet50", 32, 28, 128, 512, 1, 1, 4, True),
    ("resnet50", 32, 28, 512, 128, 1, 1, 3, True),
    ("resnet50", 32, 28, 512, 256, 1, 1, 1, True),
    ("resnet50", 32, 28, 512, 1024, 1, 2, 1, True),
    ("resnet50", 32, 14, 256, 1024, 1, 1, 6, True),
    ("resnet50", 32, 14, 1024, 256, 1, 1, 5, True),
    ("resnet50", 32, 14, 1024, 512, 1, 1, 1, True),
    ("resnet50", 32, 14, 1024, 2048, 1, 2, 1, True),
    ("resnet50", 32, 7, 512, 2048, 1, 1, 3, True),
    ("resnet50", 32, 7, 2048, 512, 1, 1, 2, True),
]
PARTS = ("fwd", "dx", "dw")


def jax_ops(op: tuple) -> dict[str, Callable[[], None]]:
    """The three forms of one convolution as geojax runs it, each a no-argument callable."""
    # pylint: disable=import-outside-toplevel
    import jax

    from geojax.models import resnet

    model, batch, size, cin, cout, k, stride, _, _ = op
    layer = resnet.Conv(cout, k, stride, impl="conv" if model == "small_cnn" else "auto")
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, cin))
    kernel = jax.random.normal(keys[1], (k, k, cin, cout))
    out = (size - 1) // stride + 1
    dy = jax.random.normal(keys[2], (batch, out, out, cout))

    def conv(x, kernel):
        return layer.apply({"params": {"kernel": kernel}}, x)

    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, kernel, dy: jax.vjp(lambda x: conv(x, kernel), x)[1](dy)[0])
    dw = jax.jit(lambda x, kernel, dy: jax.vjp(lambda w: conv(x, w), kernel)[1](dy)[0])
    return {"fwd": lambda: fwd(x, kernel).block_until_ready(),
            "dx": lambda: dx(x, kernel, dy).block_until_ready(),
            "dw": lambda: dw(x, kernel, dy).block_until_ready()}


def torch_ops(op: tuple) -> dict[str, Callable[[], None]]:
    """The three forms of one convolution in PyTorch (``channels_last``), as autograd runs
    them."""
    import torch  # pylint: disable=import-outside-toplevel

    _, batch, size, cin, cout, k, stride, _, _ = op
    fmt = torch.channels_last
    x = torch.randn(batch, cin, size, size).contiguous(memory_format=fmt)
    kernel = torch.randn(cout, cin, k, k).contiguous(memory_format=fmt)
    out = (size - 1) // stride + 1
    dy = torch.randn(batch, cout, out, out).contiguous(memory_format=fmt)
    pad, strides = [k // 2] * 2, [stride] * 2

    def backward(mask: list[bool]) -> Callable[[], None]:
        return lambda: torch.ops.aten.convolution_backward(
            dy, x, kernel, None, strides, pad, [1, 1], False, [0, 0], 1, mask)

    return {"fwd": lambda: torch.nn.functional.conv2d(x, kernel, None, stride, k // 2),
            "dx": backward([True, False, False]),
            "dw": backward([False, True, False])}


def worker(spec: dict[str, str]) -> None:
    """Child process: reads ``<op index> <part> <calls>`` lines, prints the mean time (s)."""
    start = time.perf_counter()
    applied = runtime.configure_cpu()  # both sides: malloc settings; the JAX side: XLA flag
    if not applied["malloc"]:
        raise RuntimeError(f"geojax's malloc settings were not applied: {applied['skipped']}")
    if spec["framework"] == "torch":
        import torch  # pylint: disable=import-outside-toplevel

        torch.set_num_threads(os.cpu_count())
        info = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        build = torch_ops
    else:
        import jax  # pylint: disable=import-outside-toplevel

        info = f"jax {jax.__version__} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        build = jax_ops
    print(f"READY {time.perf_counter() - start:.1f} {info}", flush=True)
    cache: dict[int, dict[str, Callable[[], None]]] = {}
    for line in sys.stdin:
        index, part, calls = line.split()
        index, calls = int(index), int(calls)
        if index not in cache:
            cache.clear()  # one operation's buffers at a time
            cache[index] = build(OPS[index])
        run = cache[index][part]
        run()  # untimed: compilation, or the first call after the other contestant ran
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        print(f"{(time.perf_counter() - t0) / calls!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small_cnn,resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    models = args.models.split(",")
    unknown = set(models) - {op[0] for op in OPS}
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)} (small_cnn, resnet50)")
    # Both sides get geojax's malloc settings; the JAX side also its XLA flag (configure_cpu).
    workers = {f: Worker(f, {"framework": f}, worker_env("geojax", "geojax"), script=__file__)
               for f in ("jax", "torch")}
    try:
        results: dict[int, dict[str, dict[str, float]]] = {}
        for index, op in enumerate(OPS):
            if op[0] not in models:
                continue
            parts = PARTS if op[8] else ("fwd", "dw")
            times: dict[str, dict[str, list[float]]] = {f: {p: [] for p in parts}
                                                        for f in workers}
            for _ in range(args.repeats):
                for part in parts:
                    for name, w in workers.items():
                        times[name][part].append(float(w.request(f"{index} {part} {args.calls}")))
            results[index] = {f: {p: 1e3 * statistics.median(t) for p, t in by_part.items()}
                              for f, by_part in times.items()}
            print(f"{op[0]} {describe(op)}: " + "; ".join(
                f"{f} " + " ".join(f"{p} {ms:.1f}" for p, ms in r.items())
                for f, r in results[index].items()) + " ms", flush=True)
    finally:
        for w in workers.values():
            w.close()
    report(results, models)


def describe(op: tuple) -> str:
    _, batch, size, cin, cout, k, stride, count, _ = op
    return f"{k}x{k}/{stride} {size}² {cin}→{cout} (batch {batch}, ×{count})"


def report(results: dict[int, Any], models: list[str]) -> None:
    """Markdown tables: per operation, and the per-step totals of each model."""
    print("\n| model | convolution | JAX fwd / dx / dw (ms) | PyTorch fwd / dx / dw (ms) |")
    print("|---|---|---|---|")
    totals = {m: {f: dict.fromkeys(PARTS, 0.0) for f in ("jax", "torch")} for m in models}

    def cell(r: dict[str, float]) -> str:
        return " / ".join(f"{r[p]:.1f}" if p in r else "–" for p in PARTS)

    for index, r in results.items():
        op = OPS[index]
        print(f"| {op[0]} | {describe(op)} | {cell(r['jax'])} | {cell(r['torch'])} |")
        for f in ("jax", "torch"):
            for p, ms in r[f].items():
                totals[op[0]][f][p] += op[7] * ms
    print("\n| model | per step: JAX fwd + dx + dw = total (ms) | PyTorch (ms) "
          "| JAX / PyTorch time |")
    print("|---|---|---|---|")
    for m in models:
        jax_t, torch_t = totals[m]["jax"], totals[m]["torch"]
        jsum, tsum = sum(jax_t.values()), sum(torch_t.values())
        print(f"| {m} | {' + '.join(f'{jax_t[p]:.0f}' for p in PARTS)} = {jsum:.0f} | "
              f"{' + '.join(f'{torch_t[p]:.0f}' for p in PARTS)} = {tsum:.0f} | "
              f"{jsum / tsum:.2f} |")


if __name__ == "__main__":
    main()
