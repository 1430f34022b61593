"""Tests for geojax.data.augment: shapes, dtypes, determinism and exact crops."""

import concurrent.futures

import numpy as np
import pytest
from PIL import Image

from geojax.data import augment


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("crop", ["resize_random", "random_resized"])
def test_train_augment_shape_dtype_and_determinism(crop):
    image = _image(300, 400)
    aug = augment.TrainAugment(image_size=224, crop=crop)
    out = aug(image, np.random.default_rng(7))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    again = aug(image, np.random.default_rng(7))
    np.testing.assert_array_equal(out, again)
    other = aug(image, np.random.default_rng(8))
    assert not np.array_equal(out, other)


def test_train_augment_normalized_output():
    image = _image(64, 80)
    uint8 = augment.TrainAugment(image_size=32, resize=40)(image, np.random.default_rng(1))
    floats = augment.TrainAugment(image_size=32, resize=40, normalize_output=True)(
        image, np.random.default_rng(1))
    assert floats.dtype == np.float32 and floats.shape == (32, 32, 3)
    mean, std = np.float32(augment.IMAGENET_MEAN), np.float32(augment.IMAGENET_STD)
    expected = (uint8.astype(np.float32) - mean) / std
    np.testing.assert_allclose(floats, expected, rtol=1e-6, atol=1e-5)


def test_train_augment_without_random_ops_is_a_crop_of_the_resized_image():
    image = _image(256, 300)  # shorter side already 256: the resize is the identity
    aug = augment.TrainAugment(image_size=224, resize=256, flip_prob=0.0, brightness=0.0,
                               contrast=0.0, saturation=0.0, hue=0.0, rotate=None)
    rng = np.random.default_rng(3)
    out = aug(image, rng)
    rng = np.random.default_rng(3)
    top, left = int(rng.integers(0, 256 - 224 + 1)), int(rng.integers(0, 300 - 224 + 1))
    np.testing.assert_array_equal(out, image[top:top + 224, left:left + 224])


def test_flip_probability_one_flips():
    image = _image(40, 40)
    base = dict(image_size=40, resize=40, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                rotate=None)
    plain = augment.TrainAugment(flip_prob=0.0, **base)(image, np.random.default_rng(0))
    flipped = augment.TrainAugment(flip_prob=1.0, **base)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(plain, image)
    np.testing.assert_array_equal(flipped, image[:, ::-1])


def test_color_jitter_identity_and_brightness_range():
    image = _image(16, 16)
    same = augment.color_jitter(image, np.random.default_rng(0), brightness=0, contrast=0,
                                saturation=0, hue=0)
    np.testing.assert_array_equal(same, image)
    grey = np.full((8, 8, 3), 100, np.uint8)
    for seed in range(20):
        out = augment.color_jitter(grey, np.random.default_rng(seed), brightness=0.4, contrast=0,
                                   saturation=0, hue=0)
        assert 60 <= out.min() and out.max() <= 140
    # A hue shift leaves a grey image grey, in either colour space.
    for space in ("yiq", "hsv"):
        out = augment.color_jitter(grey, np.random.default_rng(0), brightness=0, contrast=0,
                                   saturation=0, hue=0.5, hue_space=space)
        np.testing.assert_array_equal(out, grey)


@pytest.mark.parametrize("rotate", [augment._adjust_hue_yiq_pil, augment._adjust_hue_pil])
def test_hue_shift_direction(rotate):
    # A third of a turn takes red towards green (HSV hue order red → green → blue).
    from PIL import Image

    red = Image.fromarray(np.full((4, 4, 3), (200, 0, 0), np.uint8))
    r, g, b = np.asarray(rotate(red, 1 / 3))[0, 0].astype(int)
    assert g > r and g > b


def test_fused_rotate_crop_equals_rotate_then_crop():
    from PIL import Image

    img = Image.fromarray(_image(256, 341))
    for angle in (7.3, -12.0, 1.0):
        reference = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        reference = np.asarray(reference.crop((30, 17, 254, 241)))
        fused = np.asarray(augment._rotate_crop_pil(img, angle, 30, 17, 224))
        np.testing.assert_array_equal(fused, reference)


def test_rotation_changes_the_image_deterministically():
    image = _image(64, 64)
    aug = augment.TrainAugment(image_size=64, resize=64, flip_prob=0.0, brightness=0.0,
                               contrast=0.0, saturation=0.0, hue=0.0, rotate=(10.0, 15.0))
    out = aug(image, np.random.default_rng(0))
    assert not np.array_equal(out, image)
    assert (out[0, 0] == 0).all()  # a rotated corner is filled with black
    np.testing.assert_array_equal(out, aug(image, np.random.default_rng(0)))


def test_random_resized_crop_shape_and_determinism():
    image = _image(120, 200)
    a = augment.random_resized_crop(image, 48, np.random.default_rng(5), scale=(0.2, 1.0))
    b = augment.random_resized_crop(image, 48, np.random.default_rng(5), scale=(0.2, 1.0))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # Full-area, aspect-preserving crop of a square image is the whole image resized.
    sq = _image(48, 48)
    np.testing.assert_array_equal(
        augment.random_resized_crop(sq, 48, np.random.default_rng(0), scale=(1.0, 1.0),
                                    ratio=(1.0, 1.0)), sq)


@pytest.mark.parametrize("crops,shape", [("center", (224, 224, 3)), ("five", (5, 224, 224, 3)),
                                         ("ten", (10, 224, 224, 3))])
def test_eval_crops_shapes(crops, shape):
    out = augment.eval_crops(_image(300, 500), image_size=224, resize=256, crops=crops)
    assert out.shape == shape and out.dtype == np.uint8
    floats = augment.eval_crops(_image(300, 500), image_size=224, resize=256, crops=crops,
                                normalize_output=True)
    assert floats.shape == shape and floats.dtype == np.float32


def test_resize_shorter_matches_torchvision_sizes():
    assert augment.resize_shorter(_image(300, 400), 256).shape == (256, 341, 3)
    assert augment.resize_shorter(_image(400, 300), 256).shape == (341, 256, 3)
    assert augment.resize_shorter(_image(300, 400), 256, square=True).shape == (256, 256, 3)
    image = _image(256, 260)
    np.testing.assert_array_equal(augment.resize_shorter(image, 256), image)


def test_center_crop_equals_hand_computed_slice():
    # Shorter side already 256, so the resize is the identity; offsets round((256-224)/2) = 16,
    # round((300-224)/2) = 38.
    image = _image(256, 300)
    out = augment.eval_crops(image, image_size=224, resize=256, crops="center")
    np.testing.assert_array_equal(out, image[16:240, 38:262])
    np.testing.assert_array_equal(augment.center_crop(_image(5, 7), 3), _image(5, 7)[1:4, 2:5])


def test_five_and_ten_crop_contents():
    image = _image(10, 12)
    five = augment.five_crop(image, 4)
    expected = [image[0:4, 0:4], image[0:4, 8:12], image[6:10, 0:4], image[6:10, 8:12],
                image[3:7, 4:8]]
    for got, want in zip(five, expected):
        np.testing.assert_array_equal(got, want)
    ten = augment.ten_crop(image, 4)
    assert ten.shape == (10, 4, 4, 3)
    np.testing.assert_array_equal(ten[:5], five)
    np.testing.assert_array_equal(ten[5:], five[:, :, ::-1])


def test_input_normalisation_and_errors():
    grey = np.zeros((8, 9), np.uint8)
    assert augment.as_rgb_uint8(grey).shape == (8, 9, 3)
    rgba = np.zeros((8, 9, 4), np.uint8)
    assert augment.as_rgb_uint8(rgba).shape == (8, 9, 3)
    with pytest.raises(ValueError, match="uint8"):
        augment.as_rgb_uint8(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        augment.as_rgb_uint8(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="crop"):
        augment.center_crop(_image(10, 10), 12)
    with pytest.raises(ValueError, match="crops"):
        augment.eval_crops(_image(10, 10), image_size=8, resize=10, crops="seven")
    with pytest.raises(ValueError, match="crop"):
        augment.TrainAugment(crop="nope")


# ------------------------------------------------------------- the resize's two implementations
def _photo_array(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour field with sharp diagonal edges and sensor noise."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    edges = ((np.add.outer(np.arange(h), np.arange(w)) // 17) % 2 * 60)[..., None]
    return np.clip(base + edges + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


# (box, size): RandomResizedCrop views of a 500x375 photo (downscale, upscale, one of each),
# a fractional box (a view mapped into a half-scale JPEG decode), the whole image (Resize(256)).
RESIZE_CASES = [((71, 40, 421, 320), (224, 224)), ((200, 150, 330, 271), (224, 224)),
                ((0, 10, 400, 150), (224, 224)), ((35.5, 20.25, 210.0, 160.5), (224, 224)),
                ((0, 0, 500, 375), (341, 256)), ((3, 5, 9, 8), (1, 7))]


@pytest.mark.parametrize("box,size", RESIZE_CASES)
def test_fast_resizer_is_pils_filter_within_one_grey_level(box, size):
    pytest.importorskip("cykooz_resizer", reason="the fast-resize extra is not installed")
    for image in (_photo_array(375, 500), _image(375, 500)):
        img = Image.fromarray(image)
        # The reference: cut out the whole pixels enclosing the box, then PIL's resize of the
        # box within them (for an integer box, torchvision's resized_crop).
        outer = (int(box[0]), int(box[1]), -int(-box[2] // 1), -int(-box[3] // 1))
        inner = (box[0] - outer[0], box[1] - outer[1], box[2] - outer[0], box[3] - outer[1])
        want = np.asarray(img.crop(outer).resize(size, Image.Resampling.BILINEAR, box=inner),
                          np.int16)
        got = augment.resize_bilinear(img, size, box, resizer="fast_image_resize")
        assert got.mode == "RGB" and got.size == size
        diff = np.abs(np.asarray(got, np.int16) - want)
        assert diff.max() <= 1, (box, size, diff.max())
        assert diff.mean() < 0.5
        pil = augment.resize_bilinear(img, size, box, resizer="pil")
        np.testing.assert_array_equal(np.asarray(pil), want)
    whole = augment.resize_bilinear(img, (341, 256), resizer="fast_image_resize")
    want = np.asarray(img.resize((341, 256), Image.Resampling.BILINEAR), np.int16)
    assert np.abs(np.asarray(whole, np.int16) - want).max() <= 1


def test_train_views_of_both_resizers_agree():
    pytest.importorskip("cykooz_resizer", reason="the fast-resize extra is not installed")
    image = _photo_array(375, 500, seed=3)
    geometric = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    for crop in ("random_resized", "resize_random"):
        fast = augment.TrainAugment(crop=crop, resizer="fast_image_resize", **geometric)
        pil = augment.TrainAugment(crop=crop, resizer="pil", **geometric)
        assert augment.TrainAugment(crop=crop).resizer is None  # default: fast when installed
        for seed in range(6):
            a, b = fast(image, np.random.default_rng(seed)), pil(image, np.random.default_rng(seed))
            # Rotation's bilinear sampling of the resized image can move a difference of 1 to 2.
            assert np.abs(a.astype(np.int16) - b).max() <= (1 if crop == "random_resized" else 2)


def test_resizer_threads_and_fallback(monkeypatch):
    image = Image.fromarray(_photo_array(120, 160))
    boxes = [(i, 2 * i, 100 + i, 90 + i) for i in range(8)]
    want = [augment.resize_bilinear(image, (64, 64), b) for b in boxes]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # one Resizer per thread
        got = list(pool.map(lambda b: augment.resize_bilinear(image, (64, 64), b), boxes * 4))
    for i, g in enumerate(got):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(want[i % 8]))
    with pytest.raises(ValueError, match="resizer must be one of"):
        augment.TrainAugment(resizer="opencv")
    monkeypatch.setattr(augment, "cykooz_resizer", None)  # as if the extra were not installed
    assert augment.default_resizer() == "pil"
    with pytest.raises(ImportError, match=r"pip install 'geojax\[fast-resize\]'"):
        augment.TrainAugment(resizer="fast_image_resize")
    np.testing.assert_array_equal(  # the fallback is PIL's crop + resize, bit for bit
        np.asarray(augment.resize_bilinear(image, (64, 64), boxes[3])),
        np.asarray(image.crop(boxes[3]).resize((64, 64), Image.Resampling.BILINEAR)))
    aug = augment.TrainAugment(crop="random_resized")
    np.testing.assert_array_equal(aug(np.asarray(image), np.random.default_rng(1)),
                                  augment.TrainAugment(crop="random_resized", resizer="pil")(
                                      np.asarray(image), np.random.default_rng(1)))


@pytest.mark.parametrize("resizer", augment.RESIZERS)
def test_resized_view_sees_only_its_box(resizer):
    if resizer == "fast_image_resize":
        pytest.importorskip("cykooz_resizer", reason="the fast-resize extra is not installed")
    image = _photo_array(150, 200, seed=5)
    box = (40, 30, 170, 128)
    other = image.copy()
    other[:, :40] = 255 - other[:, :40]  # change every pixel outside the box
    other[128:] = 0
    views = [np.asarray(augment.resize_bilinear(Image.fromarray(a), (64, 64), box, resizer=resizer))
             for a in (image, other)]
    np.testing.assert_array_equal(views[0], views[1])
    np.testing.assert_array_equal(  # and the box cut out first is the same view
        views[0], augment.resize_bilinear(Image.fromarray(image[30:128, 40:170]), (64, 64),
                                          resizer=resizer))
