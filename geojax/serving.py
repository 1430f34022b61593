"""Load an exported geojax predictor and ask it where photos were taken — without the trainer.

``python -m geojax.main --mode=export`` (``geojax.inference.export``) writes a folder::

    manifest.json         what the export is: image size, crop, predictor, top-k, heads,
                          platforms, versions, and the SHA-256 of every other file (written last)
    serving.jaxexport     the serving function, serialized by ``jax.export`` (StableHLO) with a
                          symbolic batch dimension: (variables, uint8 images (b, S, S, 3)) →
                          {"lat", "lng": (b,), "topk_lat", "topk_lng", "topk_score",
                          "topk_id" (the candidates' class ids): (b, k)}
    params/               the model's variables (``params``, ``batch_stats``), an Orbax checkpoint

Use::

    from geojax import serving
    model = serving.load("workdir/cplanet/export")
    out = model.predict_bytes([open("photo.jpg", "rb").read()])   # out["lat"], out["topk_lat"], ...
    out = model.predict_images(uint8_batch)                        # (B, S, S, 3), already cropped

This module needs only jax, orbax (and its etils.epath), numpy and PIL: it imports no other
geojax module (the layer test checks it), so a serving process never loads the training code
or a config. An export on an object store (``gs://...``) is copied to a local temporary folder
and loaded from there.
:meth:`ExportedPredictor.preprocess` decodes and crops exactly like the evaluation pipeline
(``geojax.data.sources.images.decode_image`` then ``geojax.data.augment.eval_crops`` with a
centre crop); ``tests/test_predict_export.py`` checks the two agree bit for bit.

An export whose manifest is missing (an interrupted export), whose files do not match their
checksums, or whose format this module does not read, is refused with :class:`ExportError`
naming the folder and the problem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from PIL import Image, ImageFile

FORMAT = "geojax-export"
VERSION = 1
MANIFEST = "manifest.json"
SERVING_FILE = "serving.jaxexport"
PARAMS_DIR = "params"


class ExportError(ValueError):
    """The folder is not a complete, intact geojax export this version can load."""


def file_digests(root: str | os.PathLike) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``root`` (sorted; ``/`` separators),
    the manifest itself excepted."""
    root = os.fspath(root)
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            out[rel] = digest.hexdigest()
    return out


# ---------------------------------------------------------------------------- preprocessing
def decode(image_bytes: bytes, *, name: str = "image") -> np.ndarray:
    """Encoded bytes → uint8 ``(H, W, 3)`` RGB, as ``geojax.data.sources.images.decode_image``:
    a full decode (truncated files are errors: PIL's ``LOAD_TRUNCATED_IMAGES`` is set to
    False), no EXIF rotation. Raises ``ValueError`` naming ``name`` and PIL's reason."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if not image_bytes:
        raise ValueError(f"{name}: no bytes (empty file or record).")
    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))  # PIL names its file
        raise ValueError(f"{name} ({len(image_bytes)} bytes) cannot be decoded: {reason}") from e
    return np.array(rgb, dtype=np.uint8)


def center_view(image: np.ndarray, image_size: int, resize: int) -> np.ndarray:
    """The evaluation view of a decoded RGB image: shorter side resized to ``resize`` (PIL
    bilinear, the longer side ``int(resize * long / short)``), then the central
    ``(image_size, image_size, 3)`` crop at offsets ``round((side - image_size) / 2)``."""
    img = Image.fromarray(np.ascontiguousarray(image, np.uint8))
    w, h = img.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    if size != (w, h):
        img = img.resize(size, Image.Resampling.BILINEAR)
    arr = np.array(img, dtype=np.uint8)
    if arr.shape[0] < image_size or arr.shape[1] < image_size:
        raise ValueError(f"cannot take a {image_size}x{image_size} crop of a "
                         f"{arr.shape[0]}x{arr.shape[1]} image.")
    top = int(round((arr.shape[0] - image_size) / 2.0))
    left = int(round((arr.shape[1] - image_size) / 2.0))
    return arr[top:top + image_size, left:left + image_size].copy()


# ---------------------------------------------------------------------------- loading
def _refuse(path: str, problem: str) -> ExportError:
    return ExportError(f"{path} is not a loadable geojax export: {problem}. Export the run "
                       "again with --mode=export.")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the export at ``path``, checked (format, version, every file's
    checksum); raises :class:`ExportError` otherwise."""
    path = os.fspath(path)
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise _refuse(path, "no such folder")
    if not os.path.isfile(manifest_path):
        raise _refuse(path, f"it has no {MANIFEST} (written last: the export was interrupted, "
                            "or this folder is not an export)")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise _refuse(path, f"{MANIFEST} cannot be read ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, f"{MANIFEST} is not a geojax export manifest")
    if manifest.get("version") != VERSION:
        raise _refuse(path, f"export format version {manifest.get('version')!r}; this geojax "
                            f"reads version {VERSION}")
    expected = manifest.get("files")
    if not isinstance(expected, dict) or SERVING_FILE not in expected:
        raise _refuse(path, f"{MANIFEST} lists no files")
    found = file_digests(path)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise _refuse(path, f"{len(missing)} file(s) of the manifest are missing, e.g. {missing[0]}")
    changed = sorted(f for f in expected if found[f] != expected[f])
    if changed:
        raise _refuse(path, f"{len(changed)} file(s) do not match their checksum, e.g. {changed[0]}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise _refuse(path, f"{len(extra)} file(s) are not in the manifest, e.g. {extra[0]}")
    return manifest


def _download(url: str, local: str) -> None:
    """Copies every object under ``url`` to the same relative path under the folder ``local``,
    through ``etils.epath`` (this module uses no other geojax module, so not
    ``geojax.fileio.download_tree``)."""
    base = url.split("://", 1)[1].rstrip("/")
    for folder, _, names in epath.Path(url).walk():
        # fsspec gives the folders without their scheme, gfile with it.
        rel = os.path.relpath(os.fspath(folder).split("://", 1)[-1], base)
        for name in names:
            source = epath.Path(url, name) if rel == "." else epath.Path(url, rel, name)
            target = os.path.join(local, rel, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with source.open("rb") as f, open(target, "wb") as out:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    out.write(chunk)


def _restore_variables(directory: str) -> Any:
    """The variables of the Orbax checkpoint ``directory``, as numpy arrays."""
    with ocp.StandardCheckpointer() as checkpointer:
        return jax.tree.map(np.asarray, checkpointer.restore(directory))


class ExportedPredictor:
    """An exported geojax predictor, loaded (see :func:`load`).

    Attributes: ``manifest`` (the export's manifest), ``predictor`` (the method's name),
    ``image_size`` (``S``), ``resize`` (the shorter side before the centre crop), ``top_k``
    (candidates per image; 0: none), ``platforms`` (those the function was lowered for).
    """

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        if "://" not in path:
            self.path = os.path.abspath(path)
            self._load(self.path)
            return
        # An export on an object store (gs://): copied to a local folder first, then loaded.
        self.path = path
        with tempfile.TemporaryDirectory(prefix="geojax-export-") as here:
            _download(path, here)
            try:
                self._load(here)
            except ExportError as e:
                raise ExportError(str(e).replace(here, path)) from None

    def _load(self, path: str) -> None:
        self.manifest = read_manifest(path)
        m = self.manifest
        self.predictor = str(m["predictor"])
        self.image_size, self.resize = int(m["image_size"]), int(m["resize"])
        self.top_k = int(m["top_k"])
        self.platforms = tuple(m["platforms"])
        try:
            with open(os.path.join(path, SERVING_FILE), "rb") as f:
                self._exported = jax.export.deserialize(bytearray(f.read()))
        except Exception as e:  # pylint: disable=broad-except  # any deserialization failure
            raise _refuse(path, f"{SERVING_FILE} cannot be deserialized ({type(e).__name__}: "
                                f"{e})") from None
        try:
            variables = _restore_variables(os.path.join(path, PARAMS_DIR))
        except Exception as e:  # pylint: disable=broad-except  # any Orbax restore failure
            raise _refuse(path, f"the parameters in {PARAMS_DIR}/ cannot be restored "
                                f"({type(e).__name__}: {e})") from None
        args_tree = jax.tree.structure(((variables, 0), {}))
        if args_tree != self._exported.in_tree:
            raise _refuse(path, f"the parameters in {PARAMS_DIR}/ do not have the structure the "
                                "serving function takes")
        platform = jax.export.default_export_platform()  # "cuda", not the devices' "gpu"
        if platform not in self.platforms:
            raise ExportError(f"{path} was exported for {list(self.platforms)}, not for this "
                              f"process's {platform!r} devices; export again with "
                              f"platforms including {platform!r}.")
        self._variables = jax.device_put(variables)
        self._call = jax.jit(self._exported.call)

    def predict_images(self, images: Any) -> dict[str, np.ndarray]:
        """Predictions for a uint8 ``(B, S, S, 3)`` batch of evaluation views (see
        :meth:`preprocess`): ``lat``, ``lng`` ``(B,)`` in degrees and, with ``top_k`` > 0,
        ``topk_lat``, ``topk_lng``, ``topk_score`` ``(B, k)``, best first, and ``topk_id``
        ``(B, k)`` int32, the candidates' class ids (as in ``--mode=predict``'s ``"class"``)."""
        images = np.asarray(images)
        s = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3) \
                or images.shape[0] < 1:
            raise ValueError(f"expected a uint8 batch of shape (B, {s}, {s}, 3) with B >= 1, got "
                             f"{images.dtype} {images.shape}; use predict_bytes for encoded "
                             "images, or preprocess() for decoded ones.")
        out = self._call(self._variables, images)
        return {k: np.asarray(v) for k, v in out.items()}

    def preprocess(self, image_bytes: bytes, *, name: str = "image") -> np.ndarray:
        """Encoded image bytes → the uint8 ``(S, S, 3)`` evaluation view (decode, resize the
        shorter side, centre crop), bit for bit the evaluation pipeline's. Raises
        ``ValueError`` naming ``name`` when the bytes do not decode."""
        return center_view(decode(image_bytes, name=name), self.image_size, self.resize)

    def predict_bytes(self, encoded: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Predictions for encoded images (JPEG, PNG, ...): :meth:`preprocess` of each, then
        :meth:`predict_images`. An image that does not decode raises ``ValueError`` naming its
        position in ``encoded`` and the reason."""
        if isinstance(encoded, (bytes, bytearray)):
            raise TypeError("predict_bytes takes a sequence of encoded images; wrap one in a list.")
        views = [self.preprocess(b, name=f"image {i}") for i, b in enumerate(encoded)]
        if not views:
            raise ValueError("predict_bytes got no images.")
        return self.predict_images(np.stack(views))

    def __repr__(self) -> str:
        return (f"ExportedPredictor({self.path!r}, predictor={self.predictor!r}, "
                f"image_size={self.image_size}, top_k={self.top_k}, platforms={self.platforms})")


def load(path: str | os.PathLike) -> ExportedPredictor:
    """Loads the export at ``path`` (written by ``--mode=export`` /
    ``geojax.inference.export.export_predictor``); raises :class:`ExportError` when it is
    missing, partial, corrupted or of another format version."""
    return ExportedPredictor(path)

