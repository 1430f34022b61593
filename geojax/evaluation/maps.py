"""Maps drawn offline with matplotlib: partitions and predictions on an equirectangular grid.

No basemap is downloaded: partitions are rasterised by assigning a
longitude/latitude grid to classes (works for every scheme, handles the
antimeridian, and stays fast for classes made of millions of cells), and a
light scatter of the given points shows where the land and the data are.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax import fileio


def _pyplot():
    # matplotlib loads only when a map is drawn (about a second to import; headless Agg backend).
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _save(plt: Any, fig: Any, path: str | os.PathLike) -> str:
    """Writes ``fig`` as PNG to ``path`` atomically (the old file or the new one, never half)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = os.fspath(path)
    fileio.atomic_write(path, buf.getvalue())
    return path


def class_raster(partition, *, width: int = 1440, height: int = 720) -> np.ndarray:
    """(height, width) class id of each pixel centre (−1 where no class); row 0 is north."""
    lng = -180 + (np.arange(width) + 0.5) * (360 / width)
    lat = 90 - (np.arange(height) + 0.5) * (180 / height)
    glat, glng = np.meshgrid(lat, lng, indexing="ij")
    return partition.assign(glat.ravel(), glng.ravel()).reshape(height, width)


def _colour_image(classes: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0.25, 0.95, size=(int(classes.max()) + 2, 3))
    img = palette[np.maximum(classes, 0)]
    img[classes < 0] = 1.0  # white: no class
    # Darken class borders so neighbouring classes of similar colour separate.
    edge = np.zeros(classes.shape, bool)
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    edge[1:, :] |= classes[1:, :] != classes[:-1, :]
    img[edge] *= 0.55
    return img


def plot_partitions(partitions: Sequence[Any], path: str | os.PathLike, *, points: tuple | None = None,
                    width: int = 1440, height: int = 720, max_points: int = 20000, seed: int = 0) -> str:
    """Writes a PNG with one map per partition; returns the path.

    Args:
      partitions: objects with ``assign(lat, lng)``, ``name`` and ``num_classes``.
      points: optional ``(lat, lng)`` drawn as a light scatter (e.g. training data).
    """
    plt = _pyplot()
    n = len(partitions)
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.2 * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    if points is not None:
        p_lat, p_lng = (np.asarray(a).ravel() for a in points)
        if p_lat.size > max_points:
            pick = rng.choice(p_lat.size, max_points, replace=False)
            p_lat, p_lng = p_lat[pick], p_lng[pick]
    for ax, part in zip(axes.ravel(), partitions):
        ax.imshow(_colour_image(class_raster(part, width=width, height=height), seed),
                  extent=(-180, 180, -90, 90), interpolation="nearest", origin="upper")
        if points is not None:
            ax.scatter(p_lng, p_lat, s=0.2, c="k", alpha=0.25, linewidths=0)
        ax.set_title(f"{part.name}: {part.num_classes} classes", fontsize=10)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xticks(range(-180, 181, 60))
        ax.set_yticks(range(-90, 91, 30))
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return _save(plt, fig, path)


def plot_predictions(pred_lat: Any, pred_lng: Any, true_lat: Any, true_lng: Any, path: str | os.PathLike, *,
                     title: str = "", max_lines: int = 400, seed: int = 0) -> str:
    """Writes a PNG of predictions (red) joined to their true locations (blue); images without
    a prediction (NaN) are left out."""
    plt = _pyplot()
    p_lat, p_lng, t_lat, t_lng = (np.asarray(a, np.float64).ravel() for a in (pred_lat, pred_lng, true_lat, true_lng))
    made = np.isfinite(p_lat) & np.isfinite(p_lng)
    p_lat, p_lng, t_lat, t_lng = p_lat[made], p_lng[made], t_lat[made], t_lng[made]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.scatter(t_lng, t_lat, s=3, c="tab:blue", label="truth")
    ax.scatter(p_lng, p_lat, s=3, c="tab:red", label="prediction")
    pick = np.random.default_rng(seed).permutation(p_lat.size)[:max_lines]
    for k in pick:
        if abs(p_lng[k] - t_lng[k]) <= 180:  # skip segments that would cross the whole map
            ax.plot([t_lng[k], p_lng[k]], [t_lat[k], p_lat[k]], lw=0.3, c="0.5", alpha=0.5)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.legend(loc="lower left", markerscale=4)
    ax.set_title(title)
    return _save(plt, fig, path)


def plot_locations(lat: Any, lng: Any, path: str | os.PathLike, *, labels: Sequence[str] = (),
                   candidates: tuple | None = None, background: tuple | None = None,
                   title: str = "", max_background: int = 30000, seed: int = 0) -> str:
    """Writes a PNG (1100 × 550 pixels) of predicted locations (red, labelled with ``labels``)
    on the world; ``candidates``: optional ``(lat, lng)`` of other candidates (orange, smaller);
    ``background``: optional ``(lat, lng)`` drawn as a light grey scatter — the GeoNames
    places of ``geojax.geo.gazetteer`` make an offline world map. NaN points are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    if background is not None:
        b_lat, b_lng = (np.asarray(a, np.float64).ravel() for a in background)
        if b_lat.size > max_background:
            pick = np.random.default_rng(seed).choice(b_lat.size, max_background, replace=False)
            b_lat, b_lng = b_lat[pick], b_lng[pick]
        ax.scatter(b_lng, b_lat, s=0.3, c="0.75", linewidths=0)
    if candidates is not None:
        c_lat, c_lng = (np.asarray(a, np.float64).ravel() for a in candidates)
        ax.scatter(c_lng, c_lat, s=12, c="tab:orange", alpha=0.7, linewidths=0, label="candidates")
    p_lat, p_lng = (np.asarray(a, np.float64).ravel() for a in (lat, lng))
    ax.scatter(p_lng, p_lat, s=40, c="tab:red", marker="*", label="prediction")
    at: dict[tuple[float, float], list[str]] = {}  # labels of points drawn at the same place
    for text, y, x in zip(labels, p_lat, p_lng):
        if np.isfinite(y) and np.isfinite(x):
            at.setdefault((float(x), float(y)), []).append(str(text))
    for (x, y), texts in at.items():
        ax.annotate(", ".join(texts), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.legend(loc="lower left", markerscale=1.5, fontsize=8)
    ax.set_title(title)
    return _save(plt, fig, path)
