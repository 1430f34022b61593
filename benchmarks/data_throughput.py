"""Input pipeline throughput: images/s per worker, to compare with the train step.

    python benchmarks/data_throughput.py                       # 640x480 JPEGs, 224 crops
    python benchmarks/data_throughput.py --images 512 --workers 0,2,4,8 --batch 128
    python benchmarks/data_throughput.py --only geoworld             # (c) alone

(a) per-image host work in one process, one thread, on synthetic JPEGs that the
    script writes to a temporary directory (smooth gradients, shapes and noise,
    so that they compress like photos): decode alone, decode + eval resize(256)
    + centre crop(224), decode + 003 train augmentation (resize 256, rotation,
    random crop 224, flip, colour jitter), and the same without rotation;
(b) the full grain pipeline (``geojax.data.pipeline.make_dataset``) over an
    in-memory source of those JPEG bytes, train mode, with labels from one
    adaptive S2 partition, for several ``worker_count`` values (0 = in the main
    process, with grain's reader threads).

(c) the full pipeline over GeoWorld (``geojax.data.geoworld``, rendered from
    the index, 64 px by default), read record by record (``read_chunk_size=0``)
    and in batched reads (``_getitems``, the default for GeoWorld), train
    (003 augmentation) and eval (centre crop), side by side.

The table gives images/s in total and per worker (per process for (a); for
(b) the total divided by ``max(worker_count, 1)``), and the milliseconds per
image.  Run it on the training machine: the number to compare with is the
train step's images/s per host.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from geojax import runtime
from geojax.data import augment, pipeline
from geojax.data.geoworld import GeoWorld
from geojax.data.sources import decode_image
from geojax.partitions.s2_adaptive import build_s2_partition


def _synthetic_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)[None, None] + rng.uniform(-0.3, 0.3, 3)[None, None] * (
        xx[..., None] * rng.uniform(0.2, 1) + yy[..., None] * rng.uniform(0.2, 1))
    base += rng.normal(0, 12, base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.uniform() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


def write_jpegs(directory: str, n: int, width: int, height: int, quality: int = 90) -> list[bytes]:
    """Writes ``n`` synthetic JPEGs into ``directory`` and returns their bytes as read back."""
    rng = np.random.default_rng(0)
    payloads = []
    for i in range(n):
        path = os.path.join(directory, f"{i:06d}.jpg")
        _synthetic_photo(rng, width, height).save(path, format="JPEG", quality=quality)
        with open(path, "rb") as f:
            payloads.append(f.read())
    return payloads


def _rate(fn, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def bench_host_ops(payloads: list[bytes], image_size: int, resize: int, repeats: int):
    rng = np.random.default_rng(0)
    train = augment.TrainAugment(image_size=image_size, resize=resize)
    no_rot = augment.TrainAugment(image_size=image_size, resize=resize, rotate=None)
    rows = [
        ("decode", lambda b: decode_image(b)),
        (f"decode + eval resize {resize} + centre crop {image_size}",
         lambda b: augment.eval_crops(decode_image(b), image_size=image_size, resize=resize)),
        (f"decode + eval ten-crop {image_size}",
         lambda b: augment.eval_crops(decode_image(b), image_size=image_size, resize=resize,
                                      crops="ten")),
        (f"decode + train augment {resize}->{image_size} (003)",
         lambda b: train(decode_image(b), rng)),
        ("decode + train augment, no rotation", lambda b: no_rot(decode_image(b), rng)),
    ]
    return [(name, _rate(fn, payloads, repeats)) for name, fn in rows]


def bench_pipeline(payloads: list[bytes], image_size: int, batch: int, workers: int,
                   num_batches: int, warmup: int) -> float:
    rng = np.random.default_rng(1)
    lat, lng = rng.uniform(-60, 60, len(payloads)), rng.uniform(-180, 180, len(payloads))
    partition = build_s2_partition(lat, lng, t_max=max(10, len(payloads) // 20), t_min=2)
    records = [dict(image_bytes=b, lat=float(a), lng=float(o), id=str(i))
               for i, (b, a, o) in enumerate(zip(payloads, lat, lng))]
    ds = pipeline.make_dataset(pipeline.InMemorySource(records), partitions={"s2": partition},
                               train=True, global_batch_size=batch, image_size=image_size, seed=0,
                               process_index=0, process_count=1, worker_count=workers,
                               worker_buffer_size=2)
    return _images_per_second(ds, batch, num_batches, warmup)


def _images_per_second(ds, batch: int, num_batches: int, warmup: int) -> float:
    """Images/s of ``num_batches`` batches of ``ds`` after ``warmup`` batches."""
    it = iter(ds)
    try:
        for _ in range(warmup):
            next(it)
        t = time.perf_counter()
        for _ in range(num_batches):
            next(it)
        elapsed = time.perf_counter() - t
    finally:
        it.close()
    return num_batches * batch / elapsed


def bench_geoworld(image_size: int, batch: int, chunk: int, workers: int, train: bool,
                   num_batches: int, warmup: int) -> float:
    world = GeoWorld("train", size=50_000, seed=0, image_size=image_size)
    ds = pipeline.make_dataset(world, train=train, global_batch_size=batch, image_size=image_size,
                               seed=0, process_index=0, process_count=1, worker_count=workers,
                               read_chunk_size=chunk)
    return _images_per_second(ds, batch, num_batches, warmup)


def main() -> None:
    runtime.configure_cpu()  # the CPU tuning python -m geojax.main applies, before JAX starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="synthetic JPEGs to write")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pipeline run")
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker_count values (default 0,1,2,... up to CPUs)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=("all", "jpeg", "geoworld"), default="all")
    parser.add_argument("--geoworld_size", type=int, default=64, help="GeoWorld image side")
    parser.add_argument("--geoworld_workers", default="0,2")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    workers = ([int(w) for w in args.workers.split(",")] if args.workers else
               sorted({0, 1, 2, min(4, cpus), min(8, cpus), cpus} - {c for c in [cpus] if c > 16}))

    if args.only != "geoworld":
        bench_jpeg(args, workers, cpus)
    if args.only != "jpeg":
        size = args.geoworld_size
        print(f"\n(c) GeoWorld {size}x{size}, full pipeline, batch {args.batch} "
              f"(images/s; read_chunk_size 0 = record by record)")
        print(f"{'mode':>6} {'worker_count':>12} {'per record':>11} "
              f"{'batched (' + str(pipeline.DEFAULT_READ_CHUNK_SIZE) + ')':>14} {'speed-up':>9}")
        for train in (True, False):
            for w in (int(x) for x in args.geoworld_workers.split(",")):
                rates = [bench_geoworld(size, args.batch, chunk, w, train, args.batches,
                                        args.warmup)
                         for chunk in (0, pipeline.DEFAULT_READ_CHUNK_SIZE)]
                print(f"{'train' if train else 'eval':>6} {w:>12} {rates[0]:>11.0f} "
                      f"{rates[1]:>14.0f} {rates[1] / rates[0]:>8.1f}x")


def bench_jpeg(args: argparse.Namespace, workers: list[int], cpus: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        payloads = write_jpegs(directory, args.images, args.width, args.height)
    mean_kb = np.mean([len(p) for p in payloads]) / 1024
    print(f"{args.images} synthetic JPEGs {args.width}x{args.height}, mean {mean_kb:.0f} KiB; "
          f"{cpus} CPUs\n")

    print("(a) host work per image, one process, one thread")
    print(f"{'operation':<48} {'images/s':>10} {'ms/image':>10}")
    for name, rate in bench_host_ops(payloads, args.image_size, args.resize, args.repeats):
        print(f"{name:<48} {rate:>10.1f} {1000 / rate:>10.2f}")

    print(f"\n(b) full pipeline (train, batch {args.batch}, labels from one S2 partition)")
    print(f"{'worker_count':>12} {'images/s':>10} {'per worker':>11} {'ms/image/worker':>16}")
    for w in workers:
        rate = bench_pipeline(payloads, args.image_size, args.batch, w, args.batches, args.warmup)
        per_worker = rate / max(w, 1)
        print(f"{w:>12} {rate:>10.1f} {per_worker:>11.1f} {1000 / per_worker:>16.2f}")


if __name__ == "__main__":
    main()
