"""Database feature extraction: the feature store against the forward pass alone (issue 15).

For each ``--models`` entry (``backbone:image_size:images``), on the same GeoWorld records and
the same eval batches (``--batch``), side by side in one run:

* **forward alone** — the jitted backbone on the batches already on the device (uint8 →
  normalised → features), no input pipeline, no host transfer;
* **input pipeline alone** — the eval pipeline (GeoWorld render, centre crop, batching),
  no model;
* **pipeline + forward** — ``train.iter_backbone_features`` (L2-normalised float16 features
  fetched to the host), nothing written;
* **build_store** — ``features.build_store`` end to end: the above, shards of
  ``--shard_rows`` rows written (atomic ``.npy`` + manifest after each) by the background
  writer, and the final check of every checksum;

and the store's shard writer alone on ``--writer_shards`` shards of 2048-d float16 features
(ResNet-50's dimension) at the default shard size: the rate a faster device could feed it.

The compilation is done before the clocks start (the forward and ``iter_backbone_features``
compile once per backbone). Reported: images per second, the best of ``--repeats`` runs
of each path (interleaved, so that other load on the machine slows every path alike), and the
store's rate against the two references.

    python benchmarks/feature_extraction.py             # small_cnn at 64 px, ResNet-50 at 224
    python benchmarks/feature_extraction.py --models small_cnn:64:8192 --batch 256
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from geojax import runtime
from geojax.data import datasets, geoworld, pipeline
from geojax.inference import features
from geojax.training import sharding
from geojax.training import train as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(backbone: str, image_size: int, batch: int):
    """configs/planet.py with another backbone, image size and eval batch."""
    spec = importlib.util.spec_from_file_location("planet", os.path.join(REPO, "configs", "planet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.backbone = backbone
    config.model.backbone_kwargs = {}
    config.data.image_size = image_size
    config.eval.batch_size = batch
    return config


def _weights(config) -> dict:
    """Random ``{"params", "batch_stats"}`` at He scale (shapes from ``jax.eval_shape``)."""
    model = train_lib.build_model(config, {"_": 10}, freeze_backbone=False)
    size = int(config.data.image_size)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               train=False))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return np.ones(leaf.shape, leaf.dtype)
        if len(leaf.shape) >= 2:
            return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]) / 2)
                    ).astype(leaf.dtype)
        return np.full(leaf.shape, 1.0 if "scale" in name else 0.0, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _eval_batches(config, source, batch: int):
    return pipeline.make_dataset(source, train=False, global_batch_size=batch,
                                 image_size=int(config.data.image_size), seed=0, num_epochs=1,
                                 shuffle=False, drop_remainder=False,
                                 max_bad_fraction=datasets.max_bad_fraction(config.data))


def measure(backbone: str, image_size: int, num: int, batch: int, shard_rows: int,
            repeats: int, workdir: str) -> dict[str, float]:
    """Images / s of each path (best of ``repeats`` interleaved runs) and the store's size."""
    config = _config(backbone, image_size, batch)
    mesh = sharding.make_mesh(config.get("mesh"))
    weights = _weights(config)
    source = geoworld.GeoWorld("train", num, 0, image_size=image_size)
    backbone_mod = train_lib.build_model(config, {"_": 10}, freeze_backbone=False).backbone
    variables = jax.device_put({"params": weights["params"]["backbone"],
                                "batch_stats": weights["batch_stats"]["backbone"]},
                               sharding.replicated(mesh))
    forward = jax.jit(lambda v, x: backbone_mod.apply(v, train_lib.normalize_images(x),
                                                      train=False))

    def generator(stop=None):
        return train_lib.iter_backbone_features(config, mesh, weights, source, batch_size=batch,
                                                stop=stop, normalize=True, dtype=np.float16,
                                                desc="[generator]")

    list(generator(stop=batch))  # compiles the generator's (and build_store's) forward
    rates: dict[str, list[float]] = {"pipeline": [], "forward": [], "generator": [], "store": []}
    verify = []
    for r in range(repeats):
        # Input pipeline alone; its batches feed the forward pass alone, on the device.
        t = time.perf_counter()
        host = [b["image"] for b in _eval_batches(config, source, batch)]
        rates["pipeline"].append(num / (time.perf_counter() - t))
        on_device = [jax.device_put(b, sharding.batch_sharding(mesh)) for b in host]
        jax.block_until_ready(forward(variables, on_device[0]))  # compiled on the first repeat
        t = time.perf_counter()
        jax.block_until_ready([forward(variables, b) for b in on_device])
        rates["forward"].append(num / (time.perf_counter() - t))
        del on_device, host
        t = time.perf_counter()
        rows = sum(len(part.rows) for part in generator())
        rates["generator"].append(rows / (time.perf_counter() - t))
        directory = os.path.join(workdir, f"{backbone}-{image_size}-{num}-{r}")
        t = time.perf_counter()
        store = features.build_store(config, mesh, weights, source, directory,
                                     meta={"database": f"geoworld-train-{num}"},
                                     shard_size=shard_rows, dtype="float16", batch_size=batch,
                                     log=lambda _msg: None)
        rates["store"].append(num / (time.perf_counter() - t))
        t = time.perf_counter()
        features.open_store(directory, verify=True)
        verify.append(time.perf_counter() - t)
    out = {key: max(values) for key, values in rates.items()}
    out.update(verify_s=min(verify), dim=store.dim, shards=len(store.shards),
               mib=sum(s.nbytes for s in store.shards) / 2 ** 20)
    return out


def writer_rate(dim: int, rows: int, shards: int, workdir: str) -> float:
    """Rows / s of the store's shard writer alone (``.npy`` bytes, atomic write with fsync,
    sha256, manifest) on random ``dim``-d float16 shards of ``rows`` rows."""
    directory = os.path.join(workdir, "writer")
    os.makedirs(directory)
    manifest = {"format": features.FORMAT, "shards": [None] * shards}
    writer = features._ShardWriter(directory, manifest, True, None)  # pylint: disable=protected-access
    feats = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float16)
    columns = np.zeros(rows, [("lat", "<f8"), ("lng", "<f8"), ("valid", "?"), ("id", "<U24")])
    t = time.perf_counter()
    for k in range(shards):
        writer.submit(k, feats, columns)
    writer.wait()
    writer.close()
    return rows * shards / (time.perf_counter() - t)


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small_cnn:64:8192,resnet50:224:128",
                        help="comma-separated backbone:image_size:images")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shard_rows", type=int, default=1024,
                        help="rows per shard (small, so that a run writes several)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path (best)")
    parser.add_argument("--writer_shards", type=int, default=4,
                        help="shards of 2048-d features for the writer-alone line (0: skip)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for entry in args.models.split(","):
            name, size, num = entry.split(":")
            results.append((name, int(size), int(num),
                            measure(name, int(size), int(num), args.batch, args.shard_rows,
                                    args.repeats, workdir)))
    print(f"\n{jax.device_count()} {jax.devices()[0].platform} device(s), batch {args.batch}, "
          f"shards of {args.shard_rows} rows, float16; images / s, best of {args.repeats}:")
    header = (f"{'backbone':<18}{'images':>7}{'forward alone':>15}{'pipeline alone':>16}"
              f"{'pipeline+fwd':>14}{'build_store':>13}{'store/fwd':>11}{'store/(p+f)':>13}")
    print(header)
    for name, size, num, r in results:
        print(f"{f'{name} @{size}':<18}{num:>7}{r['forward']:>15.1f}{r['pipeline']:>16.1f}"
              f"{r['generator']:>14.1f}{r['store']:>13.1f}{r['store'] / r['forward']:>11.2f}"
              f"{r['store'] / r['generator']:>13.2f}")
    for name, size, num, r in results:
        print(f"{name} @{size}: {r['dim']}-d, {r['shards']} shards, {r['mib']:.1f} MiB; "
              f"open_store(verify=True) {r['verify_s']:.3f} s")
    if args.writer_shards:
        with tempfile.TemporaryDirectory() as workdir:
            rate = writer_rate(2048, features.DEFAULT_SHARD_SIZE, args.writer_shards, workdir)
        print(f"shard writer alone, 2048-d float16 in shards of {features.DEFAULT_SHARD_SIZE} "
              f"rows: {rate:.0f} rows / s ({rate * 2048 * 2 / 2 ** 20:.0f} MiB / s)")


if __name__ == "__main__":
    main()
