"""TFDS ArrayRecord datasets against geojax's own ArrayRecord folders: conversion, reads, import.

    python benchmarks/tfds_format.py                    # 2000 640x480 JPEGs
    python benchmarks/tfds_format.py --images 500 --width 320 --height 240

Needs the ``tfds`` extra. On the same synthetic JPEG records (``data_throughput``'s photos,
read from a geojax ArrayRecord folder, as a conversion from an on-disk reader reads) it prints,
side by side for ``convert_to_array_record`` + ``ArrayRecordSource`` and ``convert_to_tfds`` +
``TfdsSource``:

* conversion records/s, with the image check (one full decode per record) and without, in
  one process and in ``--workers`` worker processes (8 shards);
* random-access reads, records/s, in batched reads of 128 shuffled indices;
* the coordinates of a split: from the side file both converters write, and (TFDS only) by
  reading every record, the path of a TFDS dataset that geojax did not write;
* the import time of ``tensorflow_datasets`` in a fresh interpreter, and the bytes on disk.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import data_throughput
from geojax.data.records import InMemorySource
from geojax.data.sources import ArrayRecordSource, convert_to_array_record
from geojax.data.sources import tfds_format


def _records(n: int, width: int, height: int) -> list[dict]:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        jpegs = data_throughput.write_jpegs(d, min(n, 64), width, height)
    return [{"image_bytes": jpegs[i % len(jpegs)], "lat": float(rng.uniform(-80, 80)),
             "lng": float(rng.uniform(-180, 180)), "id": f"img{i:06d}", "user": f"u{i % 97}"}
            for i in range(n)]


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def _read_rate(source, n: int, chunk: int = 128) -> float:
    order = np.random.default_rng(1).permutation(n)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        source.__getitems__(order[start:start + chunk].tolist())
    return n / (time.perf_counter() - t0)


def _size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n = args.images
    quiet = lambda _: None  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as d:
        records = InMemorySource(_records(n, args.width, args.height))
        convert_to_array_record(records, f"{d}/input", check_images=False, log=quiet)
        source = ArrayRecordSource(f"{d}/input")
        for check, workers in ((True, 1), (False, 1), (True, args.workers)):
            tag = f"{check}{workers}"
            ar_s, _ = _timed(convert_to_array_record, source, f"{d}/ar{tag}", num_shards=8,
                             check_images=check, workers=workers, log=quiet)
            tf_s, path = _timed(tfds_format.convert_to_tfds, {"train": source}, f"{d}/tfds{tag}",
                                name="bench", num_shards=8, check_images=check, workers=workers,
                                log=quiet)
            rows.append((f"convert, check_images={check}, workers={workers}", n / ar_s, n / tf_s,
                         "records/s"))
        ar = ArrayRecordSource(f"{d}/arTrue1")
        tf = tfds_format.TfdsSource(f"{d}/tfdsTrue1/bench/1.0.0", "train")
        rows.append(("random reads, batches of 128", _read_rate(ar, n), _read_rate(tf, n),
                     "records/s"))
        ar_s, _ = _timed(ar.coordinates)
        tf_s, _ = _timed(tf.coordinates)
        rows.append(("coordinates from the side file", n / ar_s, n / tf_s, "records/s"))
        read_s, coords = _timed(tf.read_coordinates)
        assert np.array_equal(coords, np.c_[source.lat, source.lng])
        rows.append(("coordinates by reading every record", float("nan"), n / read_s, "records/s"))
        rows.append(("bytes on disk / record", _size(f"{d}/arTrue1") / n,
                     _size(f"{d}/tfdsTrue1") / n, "bytes"))
    imports = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                              "import tensorflow_datasets; print(time.perf_counter() - t)"],
                             capture_output=True, text=True, check=True)
        imports.append(float(out.stdout.split()[-1]))
    print(f"{n} JPEG records of {args.width}x{args.height} "
          f"({rows[-1][1] / 1e3:.0f} kB each):")
    print(f"| {'':44s} | geojax ArrayRecord | TFDS ArrayRecord | unit |")
    print(f"|{'-' * 46}|-------------------:|-----------------:|------|")
    for name, a, b, unit in rows:
        print(f"| {name:44s} | {a:18,.0f} | {b:16,.0f} | {unit} |")
    print(f"import tensorflow_datasets: {min(imports):.2f} s (best of 3, fresh interpreter); "
          f"TensorFlow imported: never")


if __name__ == "__main__":
    main()
