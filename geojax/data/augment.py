"""Image augmentation on the host: train augmentation, eval resize + crops.

Everything here works on one decoded image (uint8 ``(H, W, 3)`` numpy array)
and returns uint8 by default (cheapest to ship to the accelerator; normalise
there with :func:`normalize`), or float32 normalised with ``normalize_output=True``.
Randomness comes only from the ``numpy.random.Generator`` passed in, so an
augmentation is a pure function of (image, generator state): the grain
pipeline hands each record a generator derived from (seed, index), which makes
a resumed run bit-identical to an uninterrupted one.

Resizing, rotation and colour jitter go through PIL (C code, releases the GIL,
so grain's reader threads run it in parallel).  Resizing is PIL's *bilinear*
filter, which is antialiased: when downscaling, its support widens with the
scale factor (like ``torchvision.transforms.Resize(antialias=True)``), so no
aliasing from plain 2x2 interpolation.  With the ``fast-resize`` extra installed
(``cykooz-resizer``: the ``fast_image_resize`` Rust library, AVX2 / SSE4.1 / NEON),
:func:`resize_bilinear` computes the same filter with SIMD, 1.6x (64 px views) to 3.4x
(224 px) faster than PIL's scalar code on one core, every pixel within 1 grey level of PIL's
(fixed-point rounding; ``tests/test_augment.py``), also releasing the GIL;
``resizer="pil"`` keeps PIL's.

Train augmentation (:class:`TrainAugment`) follows Clark et al. (GeoDecoder,
paper 003 §8.4.2):

* Random affine rotation, 1–15 degrees (magnitude uniform in ``rotate``,
  random sign; fill black, bilinear);
* colour jitter, brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1 — the
  torchvision ``ColorJitter`` semantics: factors uniform in
  ``[max(0, 1 - x), 1 + x]`` (hue shift uniform in ``[-h, h]`` of a full turn),
  the four operations in a random order, brightness / contrast / saturation
  with the PIL operators torchvision uses on PIL images
  (``ImageEnhance.Brightness``, ``Contrast``, ``Color``).  The hue shift is, by
  default (``hue_space="yiq"``), a rotation of the chroma plane in YIQ space —
  one 3x3 colour matrix in PIL's C ``convert``, one pass instead of a round
  trip through HSV (``benchmarks/README.md`` compares them); it keeps luma and
  leaves greys grey, and differs from torchvision's HSV shift in detail only.  ``hue_space="hsv"`` gives
  torchvision's exact PIL operation (shift of the H channel in PIL's HSV);
* random horizontal flip, p = 0.5;
* Resize(256) and RandomCrop(224) (``crop="resize_random"``, the paper's
  recipe and the default; the paper writes "Resize (256 256)", which may mean
  a square resize: ``square=True`` gives that reading) — or, with ``crop="random_resized"``, an Inception
  style random resized crop: area fraction uniform in ``scale`` (default
  ``(0.08, 1.0)``), aspect ratio log-uniform in ``ratio`` (default
  ``(3/4, 4/3)``), 10 tries then a centre crop with the ratio clamped
  (torchvision's ``RandomResizedCrop`` algorithm), cut out and resized
  (:func:`resize_bilinear`; the pixels of torchvision's ``RandomResizedCrop`` on the same
  box within 1 grey level, ``benchmarks/decode_throughput.py`` compares them).

From encoded bytes (what the pipeline reads from disk),
:meth:`TrainAugment.decode_and_augment` draws the view's geometry from the header's image
size first, then decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's draft
mode) when the region that becomes the view is at least that factor times the view's size in
both directions (:func:`dct_factor`); otherwise, and for other formats, it gives exactly
``TrainAugment(...)(decode_image(bytes), rng)``.  On 1024x768 photos it decodes 70 % of
RandomResizedCrop views (scale (0.08, 1) to 224) and every 003 view (shorter side to 256) at
half scale; on 500x375 photos none (``benchmarks/decode_throughput.py`` measures both).
With the ``fast-decode`` and ``fast-resize`` extras and the ``fast_image_resize`` resizer,
for RandomResizedCrop views a JPEG (RGB or grey) is decoded into a numpy array by simplejpeg
(:func:`~geojax.data.sources.images.decode_jpeg_array`) and its view cut out and resized
from that array (:func:`resize_bilinear_array`), never entering PIL's 4-byte pixel layout at
full size: the same pixels as through PIL, bit for bit (``tests/test_sources_decode.py``).

For speed the geometric steps run first and the colour steps on the small
crop: resize → rotate + crop → flip → jitter, where rotate + crop is one PIL
affine transform that computes only the S×S output pixels (the same sampling
positions as rotating the whole image and then cropping).  Rotation about the
centre commutes with an isotropic resize, so this matches the paper's
rotate-then-resize geometry; the colour operations are per-pixel and commute
with cropping (contrast uses the crop's mean rather than the full image's).

Eval (:func:`eval_crops`): resize the shorter side to ``resize`` (256 for 224
crops, the longer side ``int(resize * long / short)`` as torchvision does;
``square=True`` resizes to ``resize × resize`` instead), then a centre crop
``(S, S, 3)``, a five-crop ``(5, S, S, 3)`` (top-left, top-right, bottom-left,
bottom-right, centre) or a ten-crop ``(10, S, S, 3)``: the five crops
followed by the horizontal flips of the same five, in the same order
(torchvision's ``TenCrop`` yields the same ten crops, ordered differently:
it five-crops the flipped image, so its 6th crop is the flip of the 2nd).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from geojax.data.sources.images import DCT_FACTORS, decode_jpeg_array, decode_pil

try:  # the fast-resize extra: PIL's resampling filters, computed with SIMD
    import cykooz_resizer
except ImportError:
    cykooz_resizer = None

# ImageNet statistics on the 0–255 scale (0.485/0.456/0.406 and 0.229/0.224/0.225 times 255).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

CROPS = ("center", "five", "ten")

_BILINEAR = Image.Resampling.BILINEAR

RESIZERS = ("pil", "fast_image_resize")
FAST_RESIZE_INSTALL = "pip install 'geojax[fast-resize]' (cykooz-resizer)"
_THREAD = threading.local()  # one fast_image_resize Resizer per thread (each holds a lock)


def default_resizer() -> str:
    """``"fast_image_resize"`` when the ``fast-resize`` extra is installed, else ``"pil"``."""
    return "pil" if cykooz_resizer is None else "fast_image_resize"


def _check_resizer(resizer: str | None) -> str:
    if resizer is None:
        return default_resizer()
    if resizer not in RESIZERS:
        raise ValueError(f"resizer must be one of {RESIZERS} or None, got {resizer!r}.")
    if resizer == "fast_image_resize" and cykooz_resizer is None:
        raise ImportError(f"resizer='fast_image_resize' needs the fast-resize extra: "
                          f"{FAST_RESIZE_INSTALL}; or use resizer='pil'.")
    return resizer


def resize_bilinear(img: Image.Image, size: tuple[int, int],
                    box: Sequence[float] | None = None, *,
                    resizer: str | None = None) -> Image.Image:
    """The region ``box`` (left, top, right, bottom; default the whole image) of ``img``
    resampled to ``size`` (width, height) by PIL's antialiased bilinear (triangle) filter.

    The region is cut out first, as torchvision's ``resized_crop`` does: no pixel outside it
    contributes (``img.resize(size, box=box)`` alone lets the filter reach across the box's
    edges, which changes the view's border rows and columns by up to 30 grey levels). A
    fractional box (a view mapped into a JPEG decoded at reduced scale) is cut at the whole
    pixels enclosing it.

    ``resizer``: ``"pil"`` (PIL's own code), ``"fast_image_resize"`` (the ``fast-resize``
    extra: the same filter with SIMD, every pixel within 1 grey level of PIL's), or ``None``
    for :func:`default_resizer`. Images of modes other than RGB always go through PIL.
    """
    resizer = _check_resizer(resizer)
    if box is not None:
        outer, box = _enclosing_box(box, img.width, img.height)
        if outer != (0, 0) + img.size:
            img = img.crop(outer)
    if resizer == "pil" or img.mode != "RGB":
        return img.resize(size, _BILINEAR, box=box)
    out = Image.new("RGB", tuple(size), None)  # not initialised: every pixel is written
    _fast_resizer().resize_pil(img, out, _fast_options(box))
    return out


def resize_bilinear_array(image: np.ndarray, size: tuple[int, int],
                          box: Sequence[float] | None = None) -> np.ndarray:
    """:func:`resize_bilinear` with the ``fast_image_resize`` resizer on a uint8 ``(H, W, 3)``
    array, returning a ``(height, width, 3)`` array: the same pixels, without a PIL image
    (only the region enclosing ``box`` is copied into the resizer). Needs the
    ``fast-resize`` extra."""
    _check_resizer("fast_image_resize")
    height, width = image.shape[:2]
    if box is not None:
        (left, top, right, bottom), box = _enclosing_box(box, width, height)
        image = image[top:bottom, left:right]
        height, width = image.shape[:2]
    # tobytes copies the (strided) region in C order: one copy, the resizer's input
    src = cykooz_resizer.ImageData(width, height, cykooz_resizer.PixelType.U8x3, image.tobytes())
    dst = cykooz_resizer.ImageData(size[0], size[1], cykooz_resizer.PixelType.U8x3)
    _fast_resizer().resize(src, dst, _fast_options(box))
    return np.frombuffer(dst.get_buffer(), np.uint8).reshape(size[1], size[0], 3)


def _enclosing_box(box: Sequence[float], width: int, height: int
                   ) -> tuple[tuple[int, int, int, int], tuple[float, ...] | None]:
    """The whole-pixel region enclosing ``box`` in a ``width x height`` image, and ``box``
    relative to that region (``None`` when it is the whole region)."""
    left, top, right, bottom = box
    outer = (max(0, math.floor(left)), max(0, math.floor(top)),
             min(width, math.ceil(right)), min(height, math.ceil(bottom)))
    inner = (left - outer[0], top - outer[1], right - outer[0], bottom - outer[1])
    return outer, (None if inner == (0, 0, outer[2] - outer[0], outer[3] - outer[1]) else inner)


def _fast_resizer() -> Any:
    """This thread's fast_image_resize ``Resizer`` (each holds a lock)."""
    fast = getattr(_THREAD, "resizer", None)
    if fast is None:
        fast = _THREAD.resizer = cykooz_resizer.Resizer()
    return fast


def _fast_options(box: Sequence[float] | None) -> Any:
    alg = cykooz_resizer.ResizeAlg.convolution(cykooz_resizer.FilterType.bilinear)
    if box is None:
        return cykooz_resizer.ResizeOptions(resize_alg=alg)
    return cykooz_resizer.ResizeOptions(resize_alg=alg, crop_box=cykooz_resizer.CropBox(
        box[0], box[1], box[2] - box[0], box[3] - box[1]))


# ---------------------------------------------------------------------------- basics
def as_rgb_uint8(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous uint8 ``(H, W, 3)`` array.

    Accepts ``(H, W)`` / ``(H, W, 1)`` grey (replicated), ``(H, W, 4)`` RGBA
    (alpha dropped) and ``(H, W, 3)``; anything else, an empty image or a
    non-uint8 dtype, is a ``ValueError``.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {arr.dtype}.")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image, shape {arr.shape}.")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def normalize(images: Any, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD, dtype: Any = np.float32) -> Any:
    """``(images - mean) / std`` over the last (channel) axis, 0–255 scale statistics.

    Works on numpy and ``jax.numpy`` arrays alike (plain arithmetic), so the
    pipeline can ship uint8 and normalise on the accelerator.
    """
    mean = np.asarray(mean, np.float32)
    inv_std = np.float32(1.0) / np.asarray(std, np.float32)
    return ((images.astype(dtype) - mean.astype(dtype)) * inv_std.astype(dtype)).astype(dtype)


def _finish(pil: Image.Image | np.ndarray, normalize_output: bool) -> np.ndarray:
    arr = np.array(pil, dtype=np.uint8)  # a fresh, writable, contiguous copy
    return normalize(arr) if normalize_output else arr


def _shorter_side_size(w: int, h: int, size: int, square: bool = False) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``size`` (torchvision's rounding)."""
    if square:
        return size, size
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def _resize_shorter_pil(img: Image.Image, size: int, square: bool = False) -> Image.Image:
    """The evaluation resize: always PIL's own code, so that an exported predictor's serving
    view (``geojax.serving``, PIL only, no geojax import) equals the eval pipeline's bit for
    bit (``tests/test_predict_export.py``); one resize per image, not a training cost."""
    new_size = _shorter_side_size(img.width, img.height, size, square)
    if new_size == img.size:
        return img
    return resize_bilinear(img, new_size, resizer="pil")


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """A train view's geometry: ``box`` (left, top, right, bottom) of the source image is
    resized to ``size``, then rotated by ``angle`` and cropped at (``left``, ``top``)."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    angle: float
    left: int
    top: int


def dct_factor(box: Sequence[float], size: Sequence[int]) -> int:
    """The largest JPEG DCT scaling factor ``f`` in (8, 4, 2, 1) with which the region ``box``
    (left, top, right, bottom) of the source still has at least ``size`` (width, height)
    pixels: the view is downscaled by at least ``f`` in both directions, so decoding at
    1/``f`` scale loses no resolution the view keeps. 1 when the region is under twice
    ``size`` in either direction."""
    width, height = box[2] - box[0], box[3] - box[1]
    for f in DCT_FACTORS:
        if width >= f * size[0] and height >= f * size[1]:
            return f
    return 1


def resize_shorter(image: np.ndarray, size: int, *, square: bool = False) -> np.ndarray:
    """Resizes so that the shorter side is ``size`` (PIL bilinear, antialiased).

    The longer side becomes ``int(size * long / short)`` (torchvision's
    ``Resize(size)``); ``square=True`` resizes to ``size × size`` instead.  An
    image already of the target size is returned unchanged (a copy).
    """
    img = Image.fromarray(as_rgb_uint8(image))
    return np.array(_resize_shorter_pil(img, size, square), dtype=np.uint8)


def _crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    if h < size or w < size:
        raise ValueError(f"cannot take a {size}x{size} crop of a {h}x{w} image; resize first.")
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``(size, size, 3)`` crop (offsets ``round((H - size) / 2)``, as torchvision)."""
    arr = as_rgb_uint8(image)
    top, left = _crop_offsets(arr.shape[0], arr.shape[1], size)
    return arr[top:top + size, left:left + size].copy()


def five_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``(5, size, size, 3)``: top-left, top-right, bottom-left, bottom-right, centre."""
    arr = as_rgb_uint8(image)
    h, w = arr.shape[:2]
    top, left = _crop_offsets(h, w, size)
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
    return np.stack([arr[y:y + size, x:x + size] for y, x in corners])


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``(10, size, size, 3)``: :func:`five_crop`, then the horizontal flips of those five crops."""
    five = five_crop(image, size)
    return np.concatenate([five, five[:, :, ::-1]])


def eval_crops(image: np.ndarray, *, image_size: int = 224, resize: int | None = 256,
               crops: str = "center", square: bool = False,
               normalize_output: bool = False) -> np.ndarray:
    """Eval view(s) of one image: resize the shorter side to ``resize``, then crop.

    ``crops``: ``"center"`` → ``(S, S, 3)``; ``"five"`` → ``(5, S, S, 3)``;
    ``"ten"`` → ``(10, S, S, 3)`` (see the module docstring for the order).
    ``resize=None`` crops the image as it is.
    """
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops!r}.")
    arr = as_rgb_uint8(image)
    if resize is not None:
        arr = np.array(_resize_shorter_pil(Image.fromarray(arr), resize, square), dtype=np.uint8)
    if crops == "center":
        out = center_crop(arr, image_size)
    elif crops == "five":
        out = five_crop(arr, image_size)
    else:
        out = ten_crop(arr, image_size)
    return normalize(out) if normalize_output else out


# ---------------------------------------------------------------------------- random ops
def _random_resized_box(w: int, h: int, rng: np.random.Generator, scale: tuple[float, float],
                        ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a random resized crop (torchvision's algorithm)."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return left, top, cw, ch
    # Fallback: a centre crop with the aspect ratio clamped to the range.
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        cw, ch = int(round(h * max(ratio))), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def _adjust_hue_pil(img: Image.Image, hue_factor: float) -> Image.Image:
    """Rotates the hue by ``hue_factor`` of a full turn in PIL's HSV (torchvision's PIL path)."""
    h, s, v = img.convert("HSV").split()
    shift = np.uint8(int(round(hue_factor * 255)) % 256)
    h_arr = np.asarray(h, dtype=np.uint8) + shift  # uint8 addition wraps around the hue circle
    h = Image.fromarray(h_arr, "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


# RGB → YIQ and back; a hue shift of h turns is a rotation of (I, Q) by −2πh.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _adjust_hue_yiq_pil(img: Image.Image, hue_factor: float) -> Image.Image:
    """Rotates the hue by ``hue_factor`` of a full turn in YIQ space (one PIL colour matrix)."""
    theta = -2.0 * math.pi * hue_factor
    c, s = math.cos(theta), math.sin(theta)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ
    matrix = tuple(float(v) for row in m for v in (*row, 0.0))
    return img.convert("RGB", matrix)


def _color_jitter_pil(img: Image.Image, rng: np.random.Generator, brightness: float,
                      contrast: float, saturation: float, hue: float,
                      hue_space: str = "yiq") -> Image.Image:
    # Draw every factor and the order up front, always, so the generator advances the same way.
    factors = [rng.uniform(max(0.0, 1.0 - x), 1.0 + x) for x in (brightness, contrast, saturation)]
    hue_factor = rng.uniform(-hue, hue)
    order = rng.permutation(4)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for op in order:
        if op < 3:
            amount = (brightness, contrast, saturation)[op]
            if amount > 0:
                img = enhancers[op](img).enhance(float(factors[op]))
        elif hue > 0:
            adjust = _adjust_hue_yiq_pil if hue_space == "yiq" else _adjust_hue_pil
            img = adjust(img, float(hue_factor))
    return img


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 hue_space: str = "yiq") -> np.ndarray:
    """torchvision ``ColorJitter`` on one uint8 image (see the module docstring)."""
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}.")
    if hue_space not in ("yiq", "hsv"):
        raise ValueError(f"hue_space must be 'yiq' or 'hsv', got {hue_space!r}.")
    img = Image.fromarray(as_rgb_uint8(image))
    return np.array(_color_jitter_pil(img, rng, brightness, contrast, saturation, hue, hue_space),
                    np.uint8)


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """An Inception-style random crop resized to ``(size, size, 3)`` (:func:`resize_bilinear`)."""
    img = Image.fromarray(as_rgb_uint8(image))
    left, top, cw, ch = _random_resized_box(img.width, img.height, rng, scale, ratio)
    return np.array(resize_bilinear(img, (size, size), (left, top, left + cw, top + ch)), np.uint8)


@dataclasses.dataclass(frozen=True)
class TrainAugment:
    """Train augmentation; the defaults are paper 003 §8.4.2 (see the module docstring).

    Attributes:
      image_size: output side ``S``; the output is ``(S, S, 3)``.
      crop: ``"resize_random"`` (resize the shorter side to ``resize`` — or to
        ``resize × resize`` with ``square`` — then a uniformly placed S×S crop)
        or ``"random_resized"`` (``scale`` / ``ratio`` below).
      resize: the resize before the random crop (256 for 224 crops).
      square: resize to ``resize × resize`` instead of the shorter side.
      scale: area fraction range of ``"random_resized"``.
      ratio: aspect ratio (w / h) range of ``"random_resized"``, sampled log-uniformly.
      flip_prob: horizontal flip probability.
      brightness, contrast, saturation, hue: colour jitter strengths (0 disables one).
      hue_space: ``"yiq"`` (fast chroma rotation) or ``"hsv"`` (torchvision's exact op).
      rotate: ``(min_deg, max_deg)`` magnitude range of the random rotation
        (random sign), or ``None`` for no rotation.
      normalize_output: return float32 normalised with ImageNet mean/std
        (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`) instead of uint8.
      resizer: the resize's implementation (:func:`resize_bilinear`): ``"pil"``,
        ``"fast_image_resize"`` or ``None`` for :func:`default_resizer`.
    """

    image_size: int = 224
    crop: str = "resize_random"
    resize: int = 256
    square: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    hue_space: str = "yiq"
    rotate: tuple[float, float] | None = (1.0, 15.0)
    normalize_output: bool = False
    resizer: str | None = None

    def __post_init__(self):
        if self.crop not in ("resize_random", "random_resized"):
            raise ValueError("crop must be 'resize_random' or 'random_resized', "
                             f"got {self.crop!r}.")
        if self.crop == "resize_random" and self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be at least image_size "
                             f"({self.image_size}).")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}.")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}.")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}.")
        if self.hue_space not in ("yiq", "hsv"):
            raise ValueError(f"hue_space must be 'yiq' or 'hsv', got {self.hue_space!r}.")
        if self.rotate is not None and not (0 <= self.rotate[0] <= self.rotate[1]):
            raise ValueError("rotate must be (min_deg, max_deg) with 0 <= min <= max, "
                             f"got {self.rotate}.")
        _check_resizer(self.resizer)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented view of ``image``; a pure function of (image, ``rng``'s state)."""
        img = Image.fromarray(as_rgb_uint8(image))
        return self._view(img, self._geometry(img.width, img.height, rng), 1, rng)

    def decode_and_augment(self, image_bytes: bytes, rng: np.random.Generator, *,
                           record_id: str | None = None) -> np.ndarray:
        """``self(decode_image(image_bytes), rng)``, decoding a JPEG at 1/2, 1/4 or 1/8 scale
        (libjpeg's DCT scaling, :func:`geojax.data.sources.images.decode_pil`) when the
        region that becomes the view is at least that factor times the view's size.

        The geometry (crop box, resize, angle) is drawn from ``rng`` with the full image's
        size, read from the header, exactly as ``__call__`` draws it; the box is then mapped
        into the reduced image. Where no reduction applies (the region is under twice the
        view's size, or the image is not a JPEG) the result is identical to ``__call__`` on
        the fully decoded image. Where it applies, the view differs from that by the
        difference between DCT scaling + bilinear resampling and bilinear resampling alone
        (mean absolute difference about 1 grey level on photographs, see
        ``tests/test_augment.py``), and ``rng`` advances the same way. With the
        ``fast_image_resize`` resizer and the ``fast-decode`` extra, RandomResizedCrop views
        of RGB and grey JPEGs are decoded and resized as numpy arrays (module docstring): the
        same result, faster.

        Raises:
          ImageDecodeError: as ``decode_image``.
        """
        drawn = []

        def reduce(width: int, height: int) -> int:
            if not drawn:  # drawn once: a fallback to PIL asks again with the same size
                drawn.append(self._geometry(width, height, rng))
            return dct_factor(drawn[0].box, drawn[0].size)

        # The array path for RandomResizedCrop views; whole-image resizes (003's recipe)
        # measured as fast or faster through PIL (benchmarks/decode_throughput.py).
        if self.crop == "random_resized" and \
                (self.resizer or default_resizer()) == "fast_image_resize":
            decoded = decode_jpeg_array(image_bytes, reduce=reduce)
            if decoded is not None:  # the same pixels as decode_pil's, as an array
                return self._view(decoded[0], drawn[0], decoded[1], rng)
        img, factor = decode_pil(image_bytes, record_id=record_id, reduce=reduce)
        return self._view(img, drawn[0], factor, rng)

    def _geometry(self, width: int, height: int, rng: np.random.Generator) -> "_Geometry":
        """The view's geometry for an image of ``width x height``, drawn from ``rng`` (always
        the same draws in the same order for a given size)."""
        s = self.image_size
        if self.crop == "resize_random":
            size = _shorter_side_size(width, height, self.resize, self.square)
            angle = self._angle(rng)
            top = int(rng.integers(0, size[1] - s + 1))
            left = int(rng.integers(0, size[0] - s + 1))
            return _Geometry((0, 0, width, height), size, angle, left, top)
        left, top, cw, ch = _random_resized_box(width, height, rng, self.scale, self.ratio)
        return _Geometry((left, top, left + cw, top + ch), (s, s), self._angle(rng), 0, 0)

    def _view(self, img: Image.Image | np.ndarray, geometry: "_Geometry", factor: int,
              rng: np.random.Generator) -> np.ndarray:
        """Resize ``geometry.box`` (in the coordinates of an image ``factor`` times larger than
        ``img``) to ``geometry.size``, rotate + crop, flip, colour jitter. An array ``img`` (the
        fast-decode path) is resized by :func:`resize_bilinear_array`."""
        box = geometry.box if factor == 1 else tuple(v / factor for v in geometry.box)
        if isinstance(img, np.ndarray):
            size = (img.shape[1], img.shape[0])
            if geometry.size != size or box != (0, 0) + size:
                img = resize_bilinear_array(img, geometry.size, box)
            img = Image.fromarray(img)
        elif geometry.size != img.size or box != (0, 0) + img.size:
            img = resize_bilinear(img, geometry.size, box, resizer=self.resizer)
        img = _rotate_crop_pil(img, geometry.angle, geometry.left, geometry.top, self.image_size)
        if rng.uniform() < self.flip_prob:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = _color_jitter_pil(img, rng, self.brightness, self.contrast, self.saturation, self.hue,
                                self.hue_space)
        return _finish(img, self.normalize_output)

    def _angle(self, rng: np.random.Generator) -> float:
        if self.rotate is None:
            return 0.0
        magnitude = rng.uniform(self.rotate[0], self.rotate[1])
        return float(magnitude if rng.uniform() < 0.5 else -magnitude)


def _rotate_crop_pil(img: Image.Image, angle: float, left: int, top: int, size: int) -> Image.Image:
    """``img.rotate(angle)`` (about the centre, bilinear, black fill) then the size×size crop at
    (left, top), as one affine transform that computes only the output pixels."""
    if angle == 0.0:
        if (left, top) == (0, 0) and img.size == (size, size):
            return img  # a RandomResizedCrop view: already the output
        return img.crop((left, top, left + size, top + size))
    # PIL's rotate: output pixel (x, y) samples the input at (a x + b y + c, d x + e y + f).
    theta = -math.radians(angle)
    a, b = round(math.cos(theta), 15), round(math.sin(theta), 15)
    d, e = round(-math.sin(theta), 15), round(math.cos(theta), 15)
    cx, cy = img.width / 2.0, img.height / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    # Shifting the output window by (left, top) shifts the sampled point by the linear part.
    matrix = (a, b, c + a * left + b * top, d, e, f + d * left + e * top)
    return img.transform((size, size), Image.Transform.AFFINE, matrix, _BILINEAR,
                         fillcolor=(0, 0, 0))
