"""Decoding at reduced scale (JPEG DCT scaling, PIL's draft mode) for the train view:
``decode_pil``, ``augment.dct_factor`` and ``TrainAugment.decode_and_augment`` against the full
decode + ``TrainAugment`` — identical where no reduction applies, within a stated tolerance
where it does — and the pipeline's ``Prepare`` using it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geojax.data import augment, records
from geojax.data.sources import images
from geojax.data.sources.images import ImageDecodeError, decode_image, decode_pil

# Where the view comes from a JPEG decoded at 1/2 .. 1/8 scale, its difference from the view of
# the full decode: mean absolute difference per image at most 1.5 grey levels (measured 0.3-0.75
# on these photos), 99th percentile at most 6 (measured 3-4).
MEAN_TOLERANCE, P99_TOLERANCE = 1.5, 6.0


def _photo(seed: int, width: int, height: int, fmt: str = "JPEG") -> bytes:
    """Photo-like bytes: a smooth random colour field, diagonal edges and sensor noise."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    edges = ((np.add.outer(np.arange(height), np.arange(width)) // 23) % 2 * 40)[..., None]
    image = np.clip(base + edges + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _same_generator_state(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state


def test_decode_pil_reduces_jpegs_only():
    jpeg, png = _photo(0, 203, 150), _photo(0, 203, 150, "PNG")
    full = decode_image(jpeg)
    image, factor = decode_pil(jpeg)
    assert factor == 1 and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), full)
    seen = []
    for f in (1, 2, 4, 8):
        image, factor = decode_pil(jpeg, reduce=lambda w, h, f=f: seen.append((w, h)) or f)
        assert factor == f and image.mode == "RGB"
        assert image.size == (-(-203 // f), -(-150 // f))  # ceil(size / f)
        # Each pixel is close to the mean of the f x f block of the full decode it covers.
        blocks = full[: 150 // f * f, : 203 // f * f].reshape(150 // f, f, 203 // f, f, 3).mean((1, 3))
        got = np.asarray(image, np.float64)[: 150 // f, : 203 // f]
        assert np.abs(got - blocks).mean() < 2.0
    assert seen == [(203, 150)] * 4  # called once, with the header's size
    image, factor = decode_pil(png, reduce=lambda w, h: 4)  # not a JPEG: full decode
    assert factor == 1
    np.testing.assert_array_equal(np.asarray(image), decode_image(png))
    with pytest.raises(ValueError, match="must be one of"):
        decode_pil(jpeg, reduce=lambda w, h: 3)
    with pytest.raises(ImageDecodeError, match="img-9"):
        decode_pil(jpeg[: len(jpeg) // 2], record_id="img-9", reduce=lambda w, h: 2)
    grey = io.BytesIO()
    Image.new("L", (64, 48), 77).save(grey, "JPEG")
    image, factor = decode_pil(grey.getvalue(), reduce=lambda w, h: 2)
    assert factor == 2 and image.mode == "RGB" and image.size == (32, 24)
    assert images.DCT_FACTORS == (8, 4, 2, 1)


def test_dct_factor():
    assert augment.dct_factor((0, 0, 500, 375), (224, 224)) == 1
    assert augment.dct_factor((0, 0, 447, 900), (224, 224)) == 1  # under 2x in one direction
    assert augment.dct_factor((10, 20, 458, 468), (224, 224)) == 2
    assert augment.dct_factor((0, 0, 1024, 768), (341, 256)) == 2
    assert augment.dct_factor((0, 0, 1000, 900), (224, 224)) == 4
    assert augment.dct_factor((0, 0, 4000, 3000), (341, 256)) == 8


@pytest.mark.parametrize("crop", ["random_resized", "resize_random"])
def test_identical_where_no_reduction_applies(crop):
    """500x375 JPEGs (no view region reaches twice 224 px in height) and PNGs of any size."""
    aug = augment.TrainAugment(crop=crop)
    for seed, photo in enumerate([_photo(1, 500, 375), _photo(2, 375, 500),
                                  _photo(3, 1024, 768, "PNG")] * 4):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        want = aug(decode_image(photo), rng_a)
        got = aug.decode_and_augment(photo, rng_b)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
        np.testing.assert_array_equal(got, want)
        assert _same_generator_state(rng_a, rng_b)


@pytest.mark.parametrize("crop", ["random_resized", "resize_random"])
def test_reduced_decode_stays_close_to_the_full_decode(crop):
    aug = augment.TrainAugment(crop=crop)
    reduced = 0
    for seed in range(6):
        width, height = (2048, 1536) if seed == 0 else (1024, 768)
        photo = _photo(seed, width, height)
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        want = aug(decode_image(photo), rng_a).astype(np.int64)
        got = aug.decode_and_augment(photo, rng_b)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
        assert _same_generator_state(rng_a, rng_b)
        geometry = aug._geometry(width, height, np.random.default_rng(seed))  # pylint: disable=protected-access
        reduced += augment.dct_factor(geometry.box, geometry.size) > 1
        diff = np.abs(got.astype(np.int64) - want)
        assert diff.mean() <= MEAN_TOLERANCE and np.percentile(diff, 99) <= P99_TOLERANCE, seed
    assert reduced >= 4  # most of these views are decoded at reduced scale


def test_pipeline_prepare_uses_the_reduced_decode():
    aug = augment.TrainAugment(crop="resize_random")
    prepare = records.Prepare(train=True, augment=aug, image_size=224, resize=256, crops="center")
    photo = _photo(5, 1024, 768)
    example = prepare({"image_bytes": photo, "lat": 1.0, "lng": 2.0, "id": "x"}, np.random.default_rng(3))
    np.testing.assert_array_equal(example["image"], aug.decode_and_augment(photo, np.random.default_rng(3)))
    bad = prepare({"image_bytes": photo[:500], "lat": 1.0, "lng": 2.0, "id": "x"}, np.random.default_rng(3))
    assert isinstance(bad, records.Bad) and bad.reason == "records with undecodable image_bytes"
    evaluation = records.Prepare(train=False, augment=None, image_size=224, resize=256, crops="center")
    example = evaluation({"image_bytes": photo, "lat": 1.0, "lng": 2.0, "id": "x"}, np.random.default_rng(3))
    np.testing.assert_array_equal(example["image"], augment.eval_crops(decode_image(photo)))


# ------------------------------------------------- the fast-decode extra (simplejpeg arrays)
def _grey_jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    rgba = np.random.default_rng(8).integers(0, 256, (40, 48, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def test_decode_jpeg_array_has_decode_pils_pixels_and_factor():
    pytest.importorskip("simplejpeg", reason="the fast-decode extra is not installed")
    for data in (_photo(0, 500, 375), _photo(1, 1023, 767), _grey_jpeg(203, 101)):
        for wanted in images.DCT_FACTORS:
            array, factor = images.decode_jpeg_array(data, reduce=lambda w, h, f=wanted: f)
            img, want_factor = decode_pil(data, reduce=lambda w, h, f=wanted: f)
            assert factor == want_factor
            assert array.dtype == np.uint8 and array.flags.c_contiguous
            np.testing.assert_array_equal(array, np.asarray(img))
    # Where it does not apply, None: the caller decodes with PIL (which names broken data).
    png = _photo(2, 64, 48, "PNG")
    assert images.decode_jpeg_array(png) is None
    assert images.decode_jpeg_array(_cmyk_jpeg()) is None  # TurboJPEG's CMYK -> RGB is not PIL's
    broken = _photo(3, 64, 48)[:300]
    assert images.decode_jpeg_array(broken) is None
    with pytest.raises(ImageDecodeError, match="cannot be decoded"):
        decode_pil(broken)
    with pytest.raises(ValueError, match="must be one of"):
        images.decode_jpeg_array(_photo(4, 64, 48), reduce=lambda w, h: 3)


@pytest.mark.parametrize("crop", ["random_resized", "resize_random"])
def test_array_path_gives_the_pil_paths_views(crop, monkeypatch):
    pytest.importorskip("simplejpeg", reason="the fast-decode extra is not installed")
    pytest.importorskip("cykooz_resizer", reason="the fast-resize extra is not installed")
    photos = [_photo(10, 500, 375), _photo(11, 1024, 768), _grey_jpeg(403, 300), _cmyk_jpeg(),
              _photo(12, 300, 260, "PNG")]
    aug = augment.TrainAugment(crop=crop, image_size=64 if crop == "random_resized" else 224,
                               resizer="fast_image_resize")
    calls = []
    real = images.decode_jpeg_array
    monkeypatch.setattr(augment, "decode_jpeg_array",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = []
    for seed, data in enumerate(photos * 2):
        rng = np.random.default_rng(seed)
        fast.append((aug.decode_and_augment(data, rng), rng))
    # RandomResizedCrop views take the array path; whole-image resizes (003's recipe) PIL's.
    assert len(calls) == (2 * len(photos) if crop == "random_resized" else 0)
    monkeypatch.setattr(images, "simplejpeg", None)  # as if the extra were not installed
    for seed, data in enumerate(photos * 2):
        rng = np.random.default_rng(seed)
        np.testing.assert_array_equal(aug.decode_and_augment(data, rng), fast[seed][0])
        assert _same_generator_state(rng, fast[seed][1])
    # The PIL resizer never takes the array path.
    calls.clear()
    monkeypatch.undo()
    monkeypatch.setattr(augment, "decode_jpeg_array",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    augment.TrainAugment(crop=crop, resizer="pil").decode_and_augment(photos[0],
                                                                      np.random.default_rng(0))
    assert not calls
