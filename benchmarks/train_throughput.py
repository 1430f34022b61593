"""Train-step throughput (images/s), geojax (JAX) vs the same model in PyTorch, in one run.

    python benchmarks/train_throughput.py                          # both models, 5 repetitions
    python benchmarks/train_throughput.py --models small_cnn --repeats 9
    python benchmarks/train_throughput.py --models resnet50 --jax-variants plain,fast

Models (one softmax head each, SGD with momentum 0.9, uint8 → float normalisation and softmax
cross-entropy inside the step on both sides):

- ``resnet50``: ResNet-50 v1.5 at 224x224, batch 32, 1000 classes.
- ``small_cnn``: GeoWorld's default backbone (``SmallCNN``, widths (32, 64, 128, 256)) at
  64x64, batch 128, 3000 classes (the size of the GeoWorld PlaNet partition).

The JAX side times geojax's real train step (``geojax.training.train.make_train_step``, jitted
with the state donated) on ``GeoModel(get_backbone(name), MultiPartitionHeads(...))`` and the
optimizer of ``geojax.training.optim.make_optimizer``. The PyTorch side is the same
architecture written below (same layers, strides, paddings, batch-norm momentum/epsilon,
zero-initialised residual scales, space-to-depth channel order), with ``torch.optim.SGD``
(momentum 0.9), ``torch.set_num_threads(os.cpu_count())``, and both memory formats
(``channels_last`` and contiguous NCHW): the ratio is taken against the faster one.

Each repetition runs ``--steps`` steps of every contestant back to back (JAX variants, then
torch formats), so that load from other jobs on the machine hits all of them alike; the table
reports the median over repetitions and the ratio of medians, and the same for the best
repetition of each (the least disturbed by other jobs). ``--jax-variants`` selects
ResNet implementations of the same function (``fast``: the package default, block convolutions
as matrix products + strided-slice max pool; ``plain``: ``lax`` convolutions + ``nn.max_pool``;
``matmul_conv``, ``slice_pool``: one rewrite each). PyTorch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from geojax.models import heads as heads_lib
from geojax.models import registry
from geojax.training import optim
from geojax.training.train import IMAGE_MEAN, IMAGE_STD, TrainState, make_train_step

MODELS = {
    # name: (backbone, backbone kwargs, image size, batch, classes)
    "resnet50": ("resnet50", {}, 224, 32, 1000),
    "small_cnn": ("small_cnn", {"widths": (32, 64, 128, 256)}, 64, 128, 3000),
}

# ResNet implementations of the same function (see geojax.models.resnet.ResNet).
RESNET_VARIANTS = {
    "fast": {},
    "plain": {"conv_impl": "conv", "max_pool_impl": "reduce_window"},
    "matmul_conv": {"conv_impl": "matmul", "max_pool_impl": "reduce_window"},
    "slice_pool": {"conv_impl": "conv", "max_pool_impl": "slices"},
}

HEAD = "planet"


# ------------------------------------------------------------------------------------------ JAX
def jax_contestant(model_name: str, variant: str, seed: int = 0) -> Callable[[], float]:
    """A callable that runs one jitted geojax train step and returns its wall time (s)."""
    backbone_name, kwargs, size, batch, classes = MODELS[model_name]
    kwargs = dict(kwargs)
    if backbone_name.startswith("resnet"):
        kwargs.update(RESNET_VARIANTS[variant])
    model = heads_lib.GeoModel(registry.get_backbone(backbone_name, **kwargs),
                               heads_lib.MultiPartitionHeads({HEAD: classes}))
    opt_cfg = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.01,
                                             sgd=dict(momentum=0.9, nesterov=False)))

    def init() -> tuple[TrainState, Any, Any]:
        variables = model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)), train=False)
        return variables

    variables = jax.jit(init)()
    params = variables["params"]
    tx, schedule = optim.make_optimizer(opt_cfg, params, steps_per_epoch=None, total_steps=10**6)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))
    step = jax.jit(make_train_step(model, tx, schedule, (HEAD,), seed=seed), donate_argnums=0)

    rng = np.random.default_rng(seed)
    data = jax.device_put({
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "valid": np.ones((batch,), bool),
        f"label_{HEAD}": rng.integers(0, classes, (batch,), dtype=np.int32),
    })
    holder = {"state": state}

    def run() -> float:
        start = time.perf_counter()
        holder["state"], metrics = step(holder["state"], data)
        jax.block_until_ready(metrics["loss"])
        return time.perf_counter() - start

    return run


# -------------------------------------------------------------------------------------- PyTorch
def torch_models():
    """The PyTorch twins of geojax's ResNet-50 v1.5 and SmallCNN (imported lazily)."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    def bn(channels: int, zero: bool = False) -> nn.BatchNorm2d:
        # geojax: flax momentum 0.9 == torch momentum 0.1; eps 1e-5.
        layer = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        if zero:
            nn.init.zeros_(layer.weight)
        return layer

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = 4 * width
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = bn(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # v1.5: stride here
            self.bn2 = bn(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = bn(cout, zero=True)  # zero_init_residual=True, geojax's default
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.proj is None else self.proj(x)))

    class ResNet50(nn.Module):
        def __init__(self, classes: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for stage, count in enumerate((3, 4, 6, 3)):
                for index in range(count):
                    width = 64 * 2**stage
                    blocks.append(Bottleneck(cin, width, 2 if stage > 0 and index == 0 else 1))
                    cin = 4 * width
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(2048, classes)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    class SmallCNN(nn.Module):
        def __init__(self, classes: int, widths=(32, 64, 128, 256)):
            super().__init__()
            layers, cin = [], 12
            for width in widths:
                layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), bn(width), nn.ReLU()]
                cin = width
            self.stages = nn.ModuleList(nn.Sequential(*layers[i:i + 3])
                                        for i in range(0, len(layers), 3))
            self.head = nn.Linear(cin, classes)

        def forward(self, x):
            for stage in self.stages:
                x = stage(x)
                if min(x.shape[2:]) >= 2:
                    x = torch.nn.functional.max_pool2d(x, 2)
            return self.head(x.mean(dim=(2, 3)))

    return ResNet50, SmallCNN


def torch_contestant(model_name: str, memory_format: str, seed: int = 0) -> Callable[[], float]:
    """A callable that runs one PyTorch train step of the twin model and returns its time."""
    import torch  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    _, _, size, batch, classes = MODELS[model_name]
    resnet50, small_cnn = torch_models()
    model = resnet50(classes) if model_name == "resnet50" else small_cnn(classes)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean = torch.tensor(IMAGE_MEAN)
    std = torch.tensor(IMAGE_STD)

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, classes, (batch,), dtype=np.int64))

    def step() -> None:
        x = (images.float() - mean) / std  # (B, H, W, 3), as geojax's normalize_images
        if model_name == "small_cnn":  # geojax's space_to_depth channel order
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, h // 2, w // 2, 4 * c)
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=fmt)  # NCHW view
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run() -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    return run


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,small_cnn")
    parser.add_argument("--jax-variants", default="fast",
                        help=f"ResNet variants, comma-separated: {', '.join(RESNET_VARIANTS)}")
    parser.add_argument("--torch-formats", default="channels_last,contiguous")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per contestant per repetition (0: 1 for resnet50, 5 else)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(os.cpu_count())
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    rows = []
    for model_name in args.models.split(","):
        _, _, size, batch, classes = MODELS[model_name]
        variants = args.jax_variants.split(",") if model_name.startswith("resnet") else ["fast"]
        contestants: dict[str, Callable[[], float]] = {}
        for variant in variants:
            start = time.perf_counter()
            run = jax_contestant(model_name, variant)
            for _ in range(args.warmup):
                run()
            contestants[f"jax {variant}"] = run
            print(f"{model_name}: jax {variant} ready (init + compile + warmup "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)
        for fmt in args.torch_formats.split(","):
            run = torch_contestant(model_name, fmt)
            for _ in range(args.warmup):
                run()
            contestants[f"torch {fmt}"] = run
        steps = args.steps or (1 if model_name == "resnet50" else 5)
        times: dict[str, list[float]] = {name: [] for name in contestants}
        for rep in range(args.repeats):
            for name, run in contestants.items():
                times[name].append(sum(run() for _ in range(steps)) / steps)
            print(f"{model_name} rep {rep + 1}/{args.repeats}: " + ", ".join(
                f"{name} {batch / times[name][-1]:.1f}" for name in contestants) + " img/s",
                flush=True)
        rate = {name: batch / statistics.median(t) for name, t in times.items()}
        peak = {name: batch / min(t) for name, t in times.items()}
        best_torch = max((n for n in rate if n.startswith("torch")), key=rate.get)
        peak_torch = max((n for n in peak if n.startswith("torch")), key=peak.get)
        for name in contestants:
            if name.startswith("jax"):
                rows.append((f"{model_name} ({name[4:]})", size, batch, classes,
                             rate[name], rate[best_torch], best_torch[6:],
                             peak[name], peak[peak_torch], peak_torch[6:]))
        for name in contestants:
            if name.startswith("torch"):
                print(f"{model_name}: {name} median {rate[name]:.2f}, best {peak[name]:.2f} img/s")

    # Median over repetitions, and the best repetition (least disturbed by other jobs): a
    # 2-thread OpenMP runtime slows down far more than XLA's thread pool when the cores are
    # shared, so on a busy machine the medians favour JAX.
    print("\n| model | image | batch | classes | JAX img/s | PyTorch img/s | JAX / PyTorch "
          "| best rep: JAX | PyTorch | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (label, size, batch, classes, jax_rate, torch_rate, torch_fmt, jax_peak, torch_peak,
         peak_fmt) in rows:
        print(f"| {label} | {size} | {batch} | {classes} | {jax_rate:.2f} | {torch_rate:.2f} "
              f"({torch_fmt}) | **{jax_rate / torch_rate:.2f}×** | {jax_peak:.2f} | "
              f"{torch_peak:.2f} ({peak_fmt}) | **{jax_peak / torch_peak:.2f}×** |")


if __name__ == "__main__":
    main()
