"""JPEG decode + train augmentation, images/s per core: geojax against torchvision.

    python benchmarks/decode_throughput.py [--num-images 300] [--sizes 500x375,1024x768]
        [--repeats 5] [--torch-path DIR] [--recipes "decode only,crop+flip,003 recipe"]

One run writes ``--num-images`` photo-like JPEGs per size (GeoWorld renders at 512 px, resized
to the size, with a fine noise texture as camera noise; quality 90) and runs, on the same bytes
and on one core each (``torch.set_num_threads(1)``; PIL decodes and resizes on the calling
thread):

* ``geojax, full decode``: ``decode_image`` then ``TrainAugment(crop="random_resized",
  resizer="pil")`` with only the crop and the flip (RandomResizedCrop to 224 + horizontal flip);
* ``geojax, training decode, PIL resize``: the same augmentation through
  ``TrainAugment.decode_and_augment``, which the pipeline uses for encoded images: DCT-scaled
  JPEG decoding (PIL draft mode) where the crop is at least twice the output size;
* ``geojax, training decode, fast_image_resize``: the same with the resize computed by the
  ``fast-resize`` extra (``cykooz-resizer``: PIL's filter with SIMD; the default when
  installed, row absent otherwise); for crop + flip with the ``fast-decode`` extra too, two
  rows: ``+ simplejpeg`` (the default with both: JPEGs decoded into numpy arrays by simplejpeg
  and the view resized from there, the same pixels) and ``, PIL decode`` (simplejpeg
  switched off; 003's recipe always decodes with PIL);
* ``torchvision``: ``torchvision.io.decode_jpeg`` then ``transforms.v2.RandomResizedCrop(224,
  antialias=True)`` and ``RandomHorizontalFlip()`` on the uint8 tensor;
* ``decode only``: PIL's decode into an RGB image (``decode_pil``) and, with ``fast-decode``,
  simplejpeg's into an array (``decode_jpeg_array``), against ``decode_jpeg``;
* the same rows for 003's full recipe (``configs``' default ``paper_003``: resize 256, random
  rotation 1-15 degrees, random 224 crop, flip, colour jitter), against torchvision's
  ``Resize(256)``, ``RandomRotation(15)``, ``RandomCrop(224)``, ``RandomHorizontalFlip()``,
  ``ColorJitter(0.4, 0.4, 0.4, 0.1)``;
* a pixel check: geojax's RandomResizedCrop views (each resizer) against torchvision's
  ``resized_crop(antialias=True)`` of the same boxes, mean and largest absolute difference.

The pipelines are timed in turns (each repeat runs every pipeline once over all images), and
the best repeat of each is printed, so that other load on the machine slows all of them alike.
Every pipeline runs on the calling thread, so images per second of that thread's CPU time
(``time.thread_time``) is the rate per core, little changed by other processes sharing the
cores (waiting for a core is not counted); the wall-clock rate is printed beside it.
torch and torchvision are benchmark-only dependencies: ``--torch-path`` puts a folder holding
them (e.g. ``pip install --target DIR torch torchvision``) first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import sys
import time
from typing import Callable

import numpy as np
from PIL import Image


def make_photos(num: int, width: int, height: int, quality: int = 90, seed: int = 0) -> list[bytes]:
    """``num`` photo-like JPEGs of ``width x height``: GeoWorld renders (512 px) resized, plus
    Gaussian noise of σ = 6 grey levels as a sensor texture."""
    from geojax.data import geoworld  # pylint: disable=import-outside-toplevel

    world = geoworld.GeoWorld("train", num, seed, image_size=512)
    rng = np.random.default_rng(seed)
    photos = []
    for i in range(num):
        img = Image.fromarray(world[i]["image"]).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(img, np.float32) + rng.normal(0.0, 6.0, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        photos.append(buf.getvalue())
    return photos


def geojax_pipelines() -> dict[str, Callable[[bytes, int], object]]:
    from geojax.data import augment  # pylint: disable=import-outside-toplevel
    from geojax.data.sources import images  # pylint: disable=import-outside-toplevel
    from geojax.data.sources.images import decode_image, decode_pil  # pylint: disable=import-outside-toplevel

    resizers = ["pil"] + (["fast_image_resize"] if augment.cykooz_resizer is not None else [])
    crop_flip = {r: augment.TrainAugment(crop="random_resized", rotate=None, brightness=0.0,
                                         contrast=0.0, saturation=0.0, hue=0.0, resizer=r)
                 for r in resizers}
    # 003 §8.4.2: resize 256, rotate, crop 224, flip, jitter.
    paper = {r: augment.TrainAugment(resizer=r) for r in resizers}
    pipelines = {"decode only / geojax (PIL)": lambda b, i: decode_pil(b)}
    if images.simplejpeg is not None:
        pipelines["decode only / geojax (simplejpeg)"] = lambda b, i: images.decode_jpeg_array(b)
    for recipe, augments in (("crop+flip", crop_flip), ("003 recipe", paper)):
        pipelines[f"{recipe} / geojax, full decode"] = (
            lambda b, i, a=augments["pil"]: a(decode_image(b), np.random.default_rng(i)))
        for r, aug in augments.items():
            name = f"{recipe} / geojax, training decode, {'PIL resize' if r == 'pil' else r}"
            run = (lambda b, i, a=aug: a.decode_and_augment(b, np.random.default_rng(i)))
            if r == "pil" or images.simplejpeg is None or recipe != "crop+flip":
                pipelines[name] = run
            else:  # RandomResizedCrop with both extras: simplejpeg arrays; and PIL's decode
                pipelines[f"{name} + simplejpeg"] = run
                pipelines[f"{name}, PIL decode"] = _without_simplejpeg(run)
    return pipelines


def _without_simplejpeg(run: Callable[[bytes, int], object]) -> Callable[[bytes, int], object]:
    """``run`` with the fast-decode extra switched off (PIL decodes, as without it)."""
    from geojax.data.sources import images  # pylint: disable=import-outside-toplevel

    def without(b: bytes, i: int) -> object:
        saved, images.simplejpeg = images.simplejpeg, None
        try:
            return run(b, i)
        finally:
            images.simplejpeg = saved
    return without


def torchvision_pipelines() -> dict[str, Callable[[bytes, int], object]]:
    import torch  # pylint: disable=import-outside-toplevel
    from torchvision.io import decode_jpeg  # pylint: disable=import-outside-toplevel
    from torchvision.transforms import v2  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(1)
    crop_flip = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])
    paper = v2.Compose([v2.Resize(256, antialias=True), v2.RandomRotation(15), v2.RandomCrop(224),
                        v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)])

    def decode(b: bytes):
        return decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8))

    return {"decode only / torchvision": lambda b, i: decode(b),
            "crop+flip / torchvision": lambda b, i: crop_flip(decode(b)),
            "003 recipe / torchvision": lambda b, i: paper(decode(b))}


RECIPES = ("decode only", "crop+flip", "003 recipe")


def compare_pixels(photos: list[bytes]) -> str:
    """geojax's RandomResizedCrop views (each resizer) against torchvision's
    ``resized_crop(antialias=True)`` of the same boxes: mean and largest absolute difference."""
    import torch  # pylint: disable=import-outside-toplevel
    from torchvision.io import decode_jpeg  # pylint: disable=import-outside-toplevel
    from torchvision.transforms.v2 import functional as F  # pylint: disable=import-outside-toplevel
    from geojax.data import augment  # pylint: disable=import-outside-toplevel
    from geojax.data.sources.images import decode_pil  # pylint: disable=import-outside-toplevel

    resizers = ["pil"] + (["fast_image_resize"] if augment.cykooz_resizer is not None else [])
    diffs = {r: [] for r in resizers}
    for i, photo in enumerate(photos):
        img = decode_pil(photo)[0]
        left, top, w, h = augment._random_resized_box(  # pylint: disable=protected-access
            img.width, img.height, np.random.default_rng(i), (0.08, 1.0), (3 / 4, 4 / 3))
        tv = F.resized_crop(decode_jpeg(torch.frombuffer(bytearray(photo), dtype=torch.uint8)),
                            top, left, h, w, [224, 224], antialias=True)
        tv = tv.permute(1, 2, 0).numpy().astype(np.int16)
        for r in resizers:
            view = augment.resize_bilinear(img, (224, 224), (left, top, left + w, top + h),
                                           resizer=r)
            diffs[r].append(np.abs(np.asarray(view, np.int16) - tv))
    return "; ".join(f"{r}: mean {np.mean(d):.3f}, max {np.max(d)}" for r, d in diffs.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--sizes", default="500x375,1024x768")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-path", default=None,
                        help="folder holding torch and torchvision, put first on sys.path")
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma-separated subset of {', '.join(RECIPES)}")
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",")]
    if not set(recipes) <= set(RECIPES):
        parser.error(f"--recipes must name some of {', '.join(RECIPES)}; got {args.recipes!r}.")
    if args.torch_path:
        sys.path.insert(0, os.path.abspath(args.torch_path))
    pipelines = geojax_pipelines()
    try:
        pipelines.update(torchvision_pipelines())
        import torch, torchvision  # pylint: disable=import-outside-toplevel,multiple-imports
        versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    except ImportError as e:
        versions = f"torchvision unavailable ({e}); geojax rows only"
    pipelines = {name: run for name, run in pipelines.items() if name.split(" / ")[0] in recipes}
    import PIL  # pylint: disable=import-outside-toplevel
    try:
        versions += f", cykooz-resizer {importlib.metadata.version('cykooz-resizer')}"
    except importlib.metadata.PackageNotFoundError:
        versions += ", cykooz-resizer not installed (no fast_image_resize rows)"

    print(f"one core per pipeline; Pillow {PIL.__version__}, {versions}; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        photos = make_photos(args.num_images, width, height)
        kb = np.mean([len(p) for p in photos]) / 1024
        best = {name: 0.0 for name in pipelines}  # images per second of the thread's CPU time
        best_wall = {name: 0.0 for name in pipelines}
        for _ in range(args.repeats):
            for name, run in pipelines.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                for i, photo in enumerate(photos):
                    run(photo, i)
                cpu, wall = time.thread_time() - start_cpu, time.perf_counter() - start
                best[name] = max(best[name], len(photos) / cpu)
                best_wall[name] = max(best_wall[name], len(photos) / wall)
        print(f"\n{args.num_images} JPEGs of {width}x{height}, quality 90, {kb:.0f} KB on average; "
              f"best of {args.repeats} (load average {os.getloadavg()[0]:.1f} at the end); images "
              "per second of CPU time (the ratio) and of wall time")
        for recipe in recipes:
            reference = best.get(f"{recipe} / torchvision")
            wall_reference = best_wall.get(f"{recipe} / torchvision")
            for name, rate in best.items():
                if name.startswith(recipe):
                    ratio = f"  {rate / reference:.2f}x torchvision" if reference else ""
                    wall = (f"  (wall {best_wall[name]:6.1f}/s, {best_wall[name] / wall_reference:.2f}x)"
                            if wall_reference else f"  (wall {best_wall[name]:6.1f}/s)")
                    print(f"  {name:58s} {rate:7.1f} images/s{ratio}{wall}")
        if "crop+flip / torchvision" in pipelines:
            print("  RandomResizedCrop views, |geojax - torchvision| in grey levels on the same "
                  f"boxes: {compare_pixels(photos)}")


if __name__ == "__main__":
    main()
