"""Train-step throughput (images/s), geojax (JAX) vs the same model in PyTorch, in one run.

    python benchmarks/train_throughput.py                          # both models, 5 repetitions
    python benchmarks/train_throughput.py --models small_cnn --repeats 9
    python benchmarks/train_throughput.py --models resnet50 --jax-variants plain,fast
    python benchmarks/train_throughput.py --models geodecoder,geodecoder_vit,geodecoder224 \\
        --xla-settings geojax
    python benchmarks/train_throughput.py --models geodecoder_vit --decoder-depth 2 \\
        --xla-settings geojax         # the same without 6 of the 8 decoder layers

Models (one softmax head each, SGD with momentum 0.9, uint8 → float normalisation and softmax
cross-entropy inside the step on both sides):

- ``resnet50``: ResNet-50 v1.5 at 224x224, batch 32, 1000 classes.
- ``small_cnn``: GeoWorld's default backbone (``SmallCNN``, widths (32, 64, 128, 256)) at
  64x64, batch 128, 3000 classes (the size of the GeoWorld PlaNet partition).
- ``geodecoder``: 003's GeoDecoder as ``configs/geodecoder.py``'s GeoWorld default: 64x64,
  batch 128, ``SmallCNN`` as encoder (its last 4x4 map before pooling: 16 tokens of width 256,
  projected to the decoder's width), 7 hierarchies x 16 scenes of queries of width 32 (one
  head, FFN width 64), 8 decoder layers (the last 2 hierarchy-dependent), the seven GeoWorld
  hierarchies' class counts (63,029 classes); loss = the seven cross-entropies + the scene
  cross-entropy.
- ``geodecoder_vit``: the same with ``:encoder=vit``'s encoder, a ViT with 8-pixel patches
  (64 tokens + the class token, width 64, 2 blocks).
- ``geodecoder224``: 224x224, batch 16: ViT-S/16 encoder, queries of width 384 (6 heads, FFN
  width 1536), 003 Table 8's class counts (684 … 21,673).

The JAX side times geojax's real train step (``geojax.training.train.make_train_step``, jitted
with the state donated) on ``GeoModel(get_backbone(name), MultiPartitionHeads(...))`` (or
``GeoDecoder(<encoder>(tokens=True, ...), HierarchyHeads(...))``) and the optimizer of
``geojax.training.optim.make_optimizer``. The PyTorch side is the same architecture written
below (same layers, strides, paddings, batch-norm momentum/epsilon, zero-initialised residual
scales, space-to-depth channel order; for the GeoDecoder the same pre-norm blocks with
``nn.MultiheadAttention``, exact GELU, LayerNorm epsilon 1e-6, per-hierarchy FFNs as batched
``einsum``, the same scene selection and losses), with ``torch.optim.SGD``
(momentum 0.9), ``torch.set_num_threads(os.cpu_count())``, and both memory formats
(``channels_last`` and contiguous NCHW): the ratio is taken against the faster one.

Every contestant runs in **its own worker process** (this script with ``--worker``), as it
would in real use. The workers are started and warmed up one at a time; then each repetition
runs every contestant in turn, ``--settle`` untimed steps and then ``--steps`` timed ones, so
that load from other jobs on the machine hits all of them alike. The untimed step matters: the
first step of a contestant after another one has run is slower (a JAX ResNet-50 step right
after PyTorch steps took 11.2-11.4 s instead of 9.4-9.6 s, with the two in one process or in
two, and after a 2 s pause too). The table reports the median over repetitions and the ratio
of medians, and the same for the best repetition of each (the least disturbed by other jobs).

``--jax-variants`` selects ResNet implementations of the same function (``fast``: the package
default, 1x1 block convolutions as matrix products, 3x3 ones as ``lax`` convolutions, and the
strided-slice max pool; ``all_matmul``: every block convolution as a matrix product, 3x3 ones
over im2col patches; ``plain``: ``lax`` convolutions + ``nn.max_pool``; ``matmul_conv``,
``slice_pool``: one rewrite each).
Every worker starts with ``geojax.runtime.configure_cpu()``, as ``python -m geojax.main`` does;
the settings below choose, through its opt-out variables, what it applies. ``--xla-settings``
runs each JAX variant with geojax's XLA:CPU flag (``geojax``) and/or with XLA's own defaults
(``xla``: ``GEOJAX_XLA_CPU_DEFAULTS=0``). ``--malloc`` runs every contestant, JAX and PyTorch
alike, with geojax's glibc malloc settings (``geojax``) and/or with glibc's defaults
(``glibc``: ``GEOJAX_MALLOC_DEFAULTS=0``); a JAX row is compared with the PyTorch workers of the
same malloc setting. PyTorch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

from geojax import runtime

# XLA_FLAGS as the user gave them (this process never applies geojax's flag; its workers do).
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")

MODELS = {
    # name: (backbone, backbone kwargs, image size, batch, classes)
    "resnet50": ("resnet50", {}, 224, 32, 1000),
    "small_cnn": ("small_cnn", {"widths": (32, 64, 128, 256)}, 64, 128, 3000),
}

# ResNet implementations of the same function (see geojax.models.resnet.ResNet).
VARIANTS = {
    "fast": {},
    "all_matmul": {"conv_impl": "matmul"},
    "plain": {"conv_impl": "conv", "max_pool_impl": "reduce_window"},
    "matmul_conv": {"conv_impl": "matmul", "max_pool_impl": "reduce_window"},
    "slice_pool": {"conv_impl": "conv", "max_pool_impl": "slices"},
}

HEAD = "planet"

# 003's GeoDecoder: name → (image size, batch, (encoder, its kwargs), decoder, classes per
# hierarchy, scenes).
GEOWORLD_HIERARCHY_CLASSES = (585, 1474, 2959, 6855, 12562, 15993, 22601)  # 400k GeoWorld photos
PAPER_HIERARCHY_CLASSES = (684, 1744, 3298, 7202, 12893, 16150, 21673)  # 003 Table 8
GEOWORLD_DECODER = dict(width=32, depth=8, dependent_layers=2, num_heads=1, mlp_ratio=2.0)
GEODECODERS = {
    "geodecoder": (64, 128, ("small_cnn", dict(widths=(32, 64, 128, 256))), GEOWORLD_DECODER,
                   GEOWORLD_HIERARCHY_CLASSES, 16),
    "geodecoder_vit": (64, 128, ("vit_s16", dict(patch_size=8, width=64, depth=2, num_heads=2)),
                       GEOWORLD_DECODER, GEOWORLD_HIERARCHY_CLASSES, 16),
    "geodecoder224": (224, 16, ("vit_s16", dict(patch_size=16, width=384, depth=12, num_heads=6)),
                      dict(width=384, depth=8, dependent_layers=2, num_heads=6, mlp_ratio=4.0),
                      PAPER_HIERARCHY_CLASSES, 16),
}


def set_decoder_depth(model_name: str, depth: int) -> None:
    """``--decoder-depth``: the GeoDecoder ``model_name`` with ``depth`` decoder layers on both
    sides (the last ``min(depth, 2)`` hierarchy-dependent); comparing two depths isolates the
    cost of the hierarchy-independent layers."""
    if model_name not in GEODECODERS:
        raise ValueError(f"--decoder-depth applies to the GeoDecoder models, not {model_name}")
    entry = GEODECODERS[model_name]
    decoder = dict(entry[3], depth=depth, dependent_layers=min(depth, entry[3]["dependent_layers"]))
    GEODECODERS[model_name] = entry[:3] + (decoder,) + entry[4:]


def model_shape(model_name: str) -> tuple[int, int, str]:
    """(image size, batch, what the classes column shows) of a benchmarked model."""
    if model_name in GEODECODERS:
        size, batch, _, _, classes, scenes = GEODECODERS[model_name]
        return size, batch, f"{len(classes)}x{scenes} queries, {sum(classes)}"
    _, _, size, batch, classes = MODELS[model_name]
    return size, batch, str(classes)


# ------------------------------------------------------------------------------------------ JAX
def variants_for(model_name: str, requested: list[str]) -> list[str]:
    """The requested variants that apply to a model (only ResNet has several)."""
    return requested if model_name.startswith("resnet") else ["fast"]  # GeoDecoder: no variants


def jax_contestant(model_name: str, variant: str, seed: int = 0) -> Callable[[], float]:
    """A callable that runs one jitted geojax train step and returns its wall time (s)."""
    # pylint: disable=import-outside-toplevel
    import jax
    import jax.numpy as jnp
    import ml_collections

    from geojax.models import geodecoder as geodecoder_lib
    from geojax.models import heads as heads_lib
    from geojax.models import registry
    from geojax.training import optim
    from geojax.training.steps import SceneTraining
    from geojax.training.train import TrainState, make_train_step

    rng = np.random.default_rng(seed)
    scenes = None
    if model_name in GEODECODERS:
        size, batch, encoder, decoder, counts, num_scenes = GEODECODERS[model_name]
        head_classes = {f"hierarchy{k + 1}": c for k, c in enumerate(counts)}
        model = geodecoder_lib.GeoDecoder(
            registry.get_backbone(encoder[0], tokens=True, **encoder[1]),
            heads_lib.HierarchyHeads(head_classes), num_scenes=num_scenes, **decoder)
        scenes = SceneTraining("scene", num_scenes, 1.0, False)
        extra = {"scene": rng.integers(0, num_scenes, (batch,), dtype=np.int32)}
    else:
        backbone_name, kwargs, size, batch, classes = MODELS[model_name]
        kwargs = {**kwargs, **VARIANTS[variant]}
        head_classes = {HEAD: classes}
        model = heads_lib.GeoModel(registry.get_backbone(backbone_name, **kwargs),
                                   heads_lib.MultiPartitionHeads(head_classes))
        extra = {}
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
    step = jax.jit(make_train_step(model, tx, schedule, tuple(head_classes), seed=seed,
                                   scenes=scenes), donate_argnums=0)

    data = jax.device_put({
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "valid": np.ones((batch,), bool),
        **{f"label_{h}": rng.integers(0, c, (batch,), dtype=np.int32)
           for h, c in head_classes.items()},
        **extra,
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
        """``classes=None``: no head, the last stage's map before pooling as ``(B, h*w, C)``
        tokens (geojax's ``SmallCNN(tokens=True)``)."""

        def __init__(self, classes: int | None, widths=(32, 64, 128, 256)):
            super().__init__()
            layers, cin = [], 12
            for width in widths:
                layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), bn(width), nn.ReLU()]
                cin = width
            self.stages = nn.ModuleList(nn.Sequential(*layers[i:i + 3])
                                        for i in range(0, len(layers), 3))
            self.head = None if classes is None else nn.Linear(cin, classes)

        def forward(self, x):
            for index, stage in enumerate(self.stages):
                x = stage(x)
                if self.head is None and index == len(self.stages) - 1:
                    return x.flatten(2).transpose(1, 2)
                if min(x.shape[2:]) >= 2:
                    x = torch.nn.functional.max_pool2d(x, 2)
            return self.head(x.mean(dim=(2, 3)))

    return ResNet50, SmallCNN


def torch_geodecoder(model_name: str):
    """The PyTorch twin of ``GeoDecoder(<encoder>(tokens=True, ...), HierarchyHeads(...))`` for
    ``GEODECODERS[model_name]``: ``forward(x) -> (per-hierarchy logits, scene logits)``."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    size, _, (encoder_name, enc), dec, counts, num_scenes = GEODECODERS[model_name]
    eps = 1e-6  # geojax.models.vit.LN_EPSILON

    def mlp(width: int, hidden: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    class Block(nn.Module):  # ViT pre-LN block
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.mlp = mlp(width, 4 * width)

        def forward(self, x):
            y = self.ln1(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class ViT(nn.Module):  # every token after the final LayerNorm
        def __init__(self, patch_size: int, width: int, depth: int, num_heads: int):
            super().__init__()
            self.embed = nn.Conv2d(3, width, patch_size, patch_size)
            self.cls = nn.Parameter(torch.zeros(1, 1, width))
            self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + (size // patch_size) ** 2, width))
            self.blocks = nn.Sequential(*[Block(width, num_heads) for _ in range(depth)])
            self.ln = nn.LayerNorm(width, eps=eps)

        def forward(self, x):
            x = self.embed(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.ln(self.blocks(x))

    class DecoderLayer(nn.Module):  # Eq. 1-3, or Eq. 4-6 when dependent
        def __init__(self, width: int, heads: int, hidden: int, hierarchies: int,
                     dependent: bool):
            super().__init__()
            self.dependent = dependent
            self.ln_self, self.ln_cross, self.ln_tokens, self.ln_mlp = (
                nn.LayerNorm(width, eps=eps) for _ in range(4))
            self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
            if dependent:  # one FFN per hierarchy
                self.w1 = nn.Parameter(0.02 * torch.randn(hierarchies, width, hidden))
                self.b1 = nn.Parameter(torch.zeros(hierarchies, 1, hidden))
                self.w2 = nn.Parameter(0.02 * torch.randn(hierarchies, hidden, width))
                self.b2 = nn.Parameter(torch.zeros(hierarchies, 1, width))
            else:
                self.mlp = mlp(width, hidden)

        def forward(self, q, tokens):
            b, h, s, d = q.shape
            y = self.ln_self(q).reshape(b * h, s, d) if self.dependent else \
                self.ln_self(q).reshape(b, h * s, d)
            x = q + self.self_attn(y, y, y, need_weights=False)[0].reshape(b, h, s, d)
            y = self.ln_cross(x).reshape(b, h * s, d)
            kv = self.ln_tokens(tokens)
            x = x + self.cross_attn(y, kv, kv, need_weights=False)[0].reshape(b, h, s, d)
            y = self.ln_mlp(x)
            if self.dependent:
                y = torch.nn.functional.gelu(torch.einsum("bhsd,hdm->bhsm", y, self.w1) + self.b1)
                y = torch.einsum("bhsm,hmd->bhsd", y, self.w2) + self.b2
            else:
                y = self.mlp(y)
            return x + y

    class GeoDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            width, hierarchies = dec["width"], len(counts)
            if encoder_name == "small_cnn":
                self.encoder = torch_models()[1](None, **enc)
                tokens_width = enc["widths"][-1]
            else:
                self.encoder = ViT(**enc)
                tokens_width = enc["width"]
            self.proj = nn.Linear(tokens_width, width) if tokens_width != width else None
            self.queries = nn.Parameter(0.02 * torch.randn(hierarchies, num_scenes, width))
            hidden = int(round(dec["mlp_ratio"] * width))
            first_dependent = dec["depth"] - dec["dependent_layers"]
            self.layers = nn.ModuleList(
                DecoderLayer(width, dec["num_heads"], hidden, hierarchies, k >= first_dependent)
                for k in range(dec["depth"]))
            self.final_ln = nn.LayerNorm(width, eps=eps)
            self.heads = nn.ModuleList(nn.Linear(width, c) for c in counts)

        def forward(self, x):
            tokens = self.encoder(x)
            if self.proj is not None:
                tokens = self.proj(tokens)
            q = self.queries.expand(x.shape[0], -1, -1, -1)
            for layer in self.layers:
                q = layer(q, tokens)
            scene_logits = q[..., 0].mean(1)  # channel 0, mean over the hierarchies
            choice = scene_logits.argmax(-1)
            chosen = self.final_ln(q)[torch.arange(x.shape[0]), :, choice]  # (B, H, D)
            return [head(chosen[:, k]) for k, head in enumerate(self.heads)], scene_logits

    return GeoDecoder()


def torch_contestant(model_name: str, memory_format: str, seed: int = 0) -> Callable[[], float]:
    """A callable that runs one PyTorch train step of the twin model and returns its time."""
    import torch  # pylint: disable=import-outside-toplevel

    # pylint: disable-next=import-outside-toplevel
    from geojax.training.train import IMAGE_MEAN, IMAGE_STD

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if model_name in GEODECODERS:
        size, batch, _, _, counts, num_scenes = GEODECODERS[model_name]
        model = torch_geodecoder(model_name)
        labels = [torch.from_numpy(rng.integers(0, c, (batch,), dtype=np.int64)) for c in counts]
        scene = torch.from_numpy(rng.integers(0, num_scenes, (batch,), dtype=np.int64))
    else:
        _, _, size, batch, classes = MODELS[model_name]
        resnet50, small_cnn = torch_models()
        model = resnet50(classes) if model_name == "resnet50" else small_cnn(classes)
        labels = torch.from_numpy(rng.integers(0, classes, (batch,), dtype=np.int64))
    space_to_depth = model_name == "small_cnn" or (
        model_name in GEODECODERS and GEODECODERS[model_name][2][0] == "small_cnn")
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean = torch.tensor(IMAGE_MEAN)
    std = torch.tensor(IMAGE_STD)
    images = torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    cross_entropy = torch.nn.functional.cross_entropy

    def step() -> None:
        x = (images.float() - mean) / std  # (B, H, W, 3), as geojax's normalize_images
        if space_to_depth:  # geojax's SmallCNN input: space_to_depth, its channel order
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, h // 2, w // 2, 4 * c)
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=fmt)  # NCHW view
        if model_name in GEODECODERS:  # 003 §3.4: the hierarchies' CEs + the scene CE
            logits, scene_logits = model(x)
            loss = sum(cross_entropy(lg, lb) for lg, lb in zip(logits, labels))
            loss = loss + cross_entropy(scene_logits, scene)
        else:
            loss = cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run() -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    return run


# -------------------------------------------------------------------------------------- workers
def worker(spec: dict[str, Any]) -> None:
    """Runs in a child process: build the contestant, warm up, then time steps on request.

    Protocol on stdin / stdout, one line each: the worker prints ``READY <seconds> <info>``; then
    for every line ``N S`` it reads it runs ``S`` untimed steps, then ``N`` steps, and prints
    their mean time in seconds; it exits at end of input.
    """
    start = time.perf_counter()
    # What worker_env chose: PyTorch gets the malloc settings too (its CPU allocator is glibc's).
    applied = runtime.configure_cpu()
    if spec.get("decoder_depth"):
        set_decoder_depth(spec["model"], spec["decoder_depth"])
    if spec["malloc"] == "geojax" and not applied["malloc"]:
        raise RuntimeError(f"geojax's malloc settings were not applied: {applied['skipped']}")
    if spec["framework"] == "jax":
        import jax  # pylint: disable=import-outside-toplevel

        run = jax_contestant(spec["model"], spec["variant"])
        info = (f"jax {jax.__version__} ({jax.devices()[0].platform}) "
                f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    else:
        import torch  # pylint: disable=import-outside-toplevel

        torch.set_num_threads(os.cpu_count())
        run = torch_contestant(spec["model"], spec["format"])
        info = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    for _ in range(spec["warmup"]):
        run()
    print(f"READY {time.perf_counter() - start:.1f} {info}", flush=True)
    for line in sys.stdin:
        steps, settle = map(int, line.split())
        for _ in range(settle):
            run()
        print(f"{sum(run() for _ in range(steps)) / steps!r}", flush=True)


class Worker:
    """A contestant in its own process: ``script --worker <spec as JSON>`` (this script's
    :func:`worker` by default), which prints ``READY <seconds> <info>`` once it is set up and
    then answers each request line with one line."""

    def __init__(self, name: str, spec: dict[str, Any], env: dict[str, str],
                 script: str = __file__):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"worker {name} failed to start (exit code {self.proc.wait()})")
        _, seconds, self.info = line.rstrip("\n").split(" ", 2)
        print(f"{name}: ready (init + compile + warmup {seconds} s; {self.info})", flush=True)

    def request(self, line: str) -> str:
        """Sends one request line; returns the worker's answer line."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def time_steps(self, steps: int, settle: int) -> float:
        return float(self.request(f"{steps} {settle}"))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # the worker died (its error is already on stderr)
            pass
        self.proc.wait()


def worker_env(xla_setting: str, malloc_setting: str) -> dict[str, str]:
    """The environment of a worker: geojax's XLA:CPU flags (``geojax``) or XLA's own (``xla``);
    geojax's malloc settings (``geojax``) or glibc's defaults (``glibc``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEOJAX_XLA_CPU_DEFAULTS", "GEOJAX_MALLOC_DEFAULTS")}
    env["XLA_FLAGS"] = USER_XLA_FLAGS
    if xla_setting == "xla":
        env["GEOJAX_XLA_CPU_DEFAULTS"] = "0"
    elif xla_setting != "geojax":
        raise ValueError(f"--xla-settings: unknown setting {xla_setting!r} (geojax, xla)")
    if malloc_setting == "glibc":
        env["GEOJAX_MALLOC_DEFAULTS"] = "0"
    elif malloc_setting != "geojax":
        raise ValueError(f"--malloc: unknown setting {malloc_setting!r} (geojax, glibc)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,small_cnn")
    parser.add_argument("--jax-variants", default="fast",
                        help=f"model variants, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--xla-settings", default="geojax,xla",
                        help="XLA:CPU flags of the JAX workers: geojax (what "
                             "geojax.runtime.configure_cpu sets), xla (XLA's defaults)")
    parser.add_argument("--malloc", default="geojax",
                        help="glibc malloc settings of all workers: geojax (what "
                             "geojax.runtime.configure_cpu sets), glibc (glibc's defaults)")
    parser.add_argument("--torch-formats", default="channels_last,contiguous")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per contestant per repetition (0: 1 for resnet50, 5 else)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--settle", type=int, default=1,
                        help="untimed steps of a contestant before its timed ones, each repetition")
    parser.add_argument("--decoder-depth", type=int, default=0,
                        help="GeoDecoder models: this many decoder layers instead of 8 (the last "
                             "2 hierarchy-dependent), on both sides")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    print(f"{os.cpu_count()} CPUs; user XLA_FLAGS={USER_XLA_FLAGS!r}", flush=True)
    rows = []
    for model_name in args.models.split(","):
        if args.decoder_depth:
            set_decoder_depth(model_name, args.decoder_depth)
        size, batch, classes = model_shape(model_name)
        steps = args.steps or (1 if model_name in ("resnet50", "geodecoder224") else 5)
        times: dict[str, list[float]] = {}
        # One group of workers per malloc setting, one group at a time: with geojax's settings a
        # process keeps its peak heap, and six ResNet-50 workers do not fit in 24 GiB.
        for mem in args.malloc.split(","):
            workers: list[Worker] = []
            try:
                for variant in variants_for(model_name, args.jax_variants.split(",")):
                    for setting in args.xla_settings.split(","):
                        spec = dict(framework="jax", model=model_name, variant=variant,
                                    warmup=args.warmup, malloc=mem,
                                    decoder_depth=args.decoder_depth)
                        workers.append(Worker(f"jax {variant} / {setting} flags / {mem} malloc",
                                              spec, worker_env(setting, mem)))
                for fmt in args.torch_formats.split(","):
                    spec = dict(framework="torch", model=model_name, format=fmt,
                                warmup=args.warmup, malloc=mem, decoder_depth=args.decoder_depth)
                    workers.append(Worker(f"torch {fmt} / {mem} malloc", spec,
                                          worker_env("geojax", mem)))
                for w in workers:
                    times[w.name] = []
                for rep in range(args.repeats):
                    for w in workers:
                        times[w.name].append(w.time_steps(steps, args.settle))
                    print(f"{model_name} rep {rep + 1}/{args.repeats}: " + ", ".join(
                        f"{w.name} {batch / times[w.name][-1]:.1f}" for w in workers)
                        + " img/s", flush=True)
            finally:
                for w in workers:
                    w.close()
        rate = {name: batch / statistics.median(t) for name, t in times.items()}
        peak = {name: batch / min(t) for name, t in times.items()}
        for name in times:
            if name.startswith("jax"):
                # The fastest PyTorch memory format under the same malloc setting.
                rivals = [n for n in times
                          if n.startswith("torch") and n.endswith(name.rsplit(" / ", 1)[1])]
                best_torch, peak_torch = max(rivals, key=rate.get), max(rivals, key=peak.get)
                depth = f", depth {args.decoder_depth}" if args.decoder_depth else ""
                rows.append((f"{model_name}{depth} ({name[4:]})", size, batch, classes,
                             rate[name], rate[best_torch], best_torch[6:].split(" / ")[0],
                             peak[name], peak[peak_torch], peak_torch[6:].split(" / ")[0]))
            else:
                print(f"{model_name}: {name} median {rate[name]:.2f}, best {peak[name]:.2f} img/s")

    print("\n| model (variant / XLA flags / malloc) | image | batch | classes | JAX img/s "
          "| PyTorch img/s | JAX / PyTorch | best rep: JAX | PyTorch | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (label, size, batch, classes, jax_rate, torch_rate, torch_fmt, jax_peak, torch_peak,
         peak_fmt) in rows:
        print(f"| {label} | {size} | {batch} | {classes} | {jax_rate:.2f} | {torch_rate:.2f} "
              f"({torch_fmt}) | **{jax_rate / torch_rate:.2f}×** | {jax_peak:.2f} | "
              f"{torch_peak:.2f} ({peak_fmt}) | **{jax_peak / torch_peak:.2f}×** |")


if __name__ == "__main__":
    main()
