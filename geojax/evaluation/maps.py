"""Maps and figures drawn offline with matplotlib: partitions, predictions, answers of
``--mode=predict``, 004 Fig. 4's progressive refinement, accuracy curves, and 002 Fig. 1's
longitude by posting hour.

No basemap is downloaded: partitions are rasterised by assigning a
longitude/latitude grid to classes (works for every scheme, handles the
antimeridian, and stays fast for classes made of millions of cells), and a
light scatter of the given points shows where the land and the data are.
Every function writes one PNG atomically, of a fixed size in pixels (its figure size in
inches × 110 dpi), and returns its path; the CLI's outputs and the notebooks in ``colabs/``
draw through these same functions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geojax import fileio
from geojax.data import metadata_features
from geojax.evaluation import metrics
from geojax.geo import s2
from geojax.geo.gazetteer import Gazetteer
from geojax.inference import predictors as predictors_lib
from geojax.partitions import combinatorial


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


def plot_images(images: Any, path: str | os.PathLike, *, titles: Sequence[str] = (), cols: int = 6,
                title: str = "") -> str:
    """Writes a PNG grid of uint8 images ``(n, H, W, 3)``, ``cols`` a row (``2·cols × 2.2·rows``
    inches), each titled with ``titles[i]`` when given."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (n, H, W, 3) array, got shape {images.shape}.")
    plt = _pyplot()
    n = images.shape[0]
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], interpolation="nearest")
            if k < len(titles):
                ax.set_title(str(titles[k]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def accuracy_percent(rows: Sequence[Any], thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM
                     ) -> np.ndarray:
    """``(len(rows), len(thresholds_km))``: the ``acc@<r>km`` figures of each row, in % (what
    :func:`plot_accuracy_by_threshold` and :func:`plot_accuracy_sweep` draw)."""
    keys = [metrics.accuracy_key(t) for t in metrics.normalize_thresholds(thresholds_km)]
    out = np.empty((len(rows), len(keys)))
    for i, figures in enumerate(rows):
        missing = [k for k in keys if k not in figures]
        if missing:
            raise ValueError(f"row {i} has no {missing} (it has {sorted(figures)}); evaluate it at "
                             "those thresholds or pass thresholds_km it has.")
        out[i] = [100.0 * float(figures[k]) for k in keys]
    return out


def _accuracy_axes(plt: Any, title: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    return fig, ax


def plot_accuracy_by_threshold(rows: Mapping[str, Any], path: str | os.PathLike, *,
                               thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM,
                               title: str = "") -> str:
    """Writes a PNG (880 × 495 pixels) of accuracy (%) against the distance threshold (log
    scale), one line per row of a results table (``{method: figures}``, e.g. the oracle rows
    of ``--mode=partition``)."""
    names = list(rows)
    if not names:
        raise ValueError("rows is empty: give at least one {method: figures} row.")
    thresholds = [float(t) for t in metrics.normalize_thresholds(thresholds_km)]
    acc = accuracy_percent([rows[n] for n in names], thresholds)
    plt = _pyplot()
    fig, ax = _accuracy_axes(plt, title)
    for name, y in zip(names, acc):
        ax.plot(thresholds, y, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(thresholds, [metrics.format_km(t) + " km" for t in thresholds])
    ax.set_xlabel("distance threshold")
    ax.legend(fontsize=7, loc="upper left")
    return _save(plt, fig, path)


def plot_accuracy_sweep(values: Sequence[float], rows: Sequence[Any], path: str | os.PathLike, *,
                        xlabel: str, thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM,
                        log_x: bool = True, title: str = "") -> str:
    """Writes a PNG (880 × 495 pixels) of accuracy (%) at each threshold (one line each)
    against a swept parameter: ``rows[i]`` are the figures at ``values[i]`` (e.g. 001's kernel
    density at each σ: fine thresholds peak at small σ, coarse ones at large σ)."""
    if len(values) != len(rows) or not rows:
        raise ValueError(f"values ({len(values)}) and rows ({len(rows)}) must be non-empty and "
                         "of the same length.")
    thresholds = metrics.normalize_thresholds(thresholds_km)
    acc = accuracy_percent(rows, thresholds)
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="stable")
    plt = _pyplot()
    fig, ax = _accuracy_axes(plt, title)
    for j, t in enumerate(thresholds):
        ax.plot(x[order], acc[order, j], marker="o", label=f"{metrics.format_km(t)} km")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, title="within", title_fontsize=8, loc="upper left")
    return _save(plt, fig, path)


def _region_extent(lat: np.ndarray, lng: np.ndarray, pad_deg: float) -> tuple[float, float, float, float]:
    """(lng0, lng1, lat0, lat1) around the points, padded; the whole world when they spread
    over more than half the longitudes (or cross the antimeridian)."""
    lat0, lat1 = max(-90.0, lat.min() - pad_deg), min(90.0, lat.max() + pad_deg)
    lng0, lng1 = lng.min() - pad_deg, lng.max() + pad_deg
    if lng1 - lng0 > 180 or lng0 < -180 or lng1 > 180:
        lng0, lng1 = -180.0, 180.0
    if lat1 - lat0 < 1e-6 or lng1 - lng0 < 1e-6:
        lat0, lat1, lng0, lng1 = -90.0, 90.0, -180.0, 180.0
    return lng0, lng1, lat0, lat1


def plot_progressive_refinement(partitions: Sequence[Any], index: Any, regions: Any,
                                path: str | os.PathLike, *, truth: tuple[float, float] | None = None,
                                width: int = 480, height: int = 240, pad_deg: float = 8.0,
                                seed: int = 0) -> str:
    """Writes 004 Fig. 4 for one image: one map per number of geoclass sets ``n = 1 … N``
    (``3 cols``, ``5.2 × 3.2`` inches each), the classes of set ``n`` in light colours and the
    arg-max region of :func:`geojax.partitions.combinatorial.progressive_argmax` (row
    ``n − 1`` of ``regions``) in red, with its Eq. 4 prediction (black cross) and ``truth``
    (blue star). All panels share one extent: every region's base cells, the predictions and
    the truth, padded by ``pad_deg`` (the whole world when they spread over more than half
    the longitudes); ``width × height`` grid points are classified once.
    """
    regions = np.asarray(regions, bool)
    n_sets = len(partitions)
    if regions.shape != (n_sets, index.num_fine_partitions):
        raise ValueError(f"regions must be ({n_sets}, {index.num_fine_partitions}) "
                         f"(progressive_argmax), got {regions.shape}.")
    predictions = np.array([combinatorial.region_prediction(index, r) for r in regions])
    c_lat, c_lng = s2.cell_center_latlng(index.cell_ids[regions.any(axis=0)[index.cell_fine]])
    c_lat, c_lng = np.append(c_lat, predictions[:, 0]), np.append(c_lng, predictions[:, 1])
    if truth is not None:
        c_lat, c_lng = np.append(c_lat, truth[0]), np.append(c_lng, truth[1])
    lng0, lng1, lat0, lat1 = _region_extent(c_lat, c_lng, pad_deg)
    g_lng = lng0 + (np.arange(width) + 0.5) * ((lng1 - lng0) / width)
    g_lat = lat1 - (np.arange(height) + 0.5) * ((lat1 - lat0) / height)
    glat, glng = np.meshgrid(g_lat, g_lng, indexing="ij")
    tuples = combinatorial.class_tuples(partitions, glat.ravel(), glng.ravel())
    plt = _pyplot()
    cols = min(3, n_sets)
    rows = (n_sets + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for n, ax in zip(range(1, n_sets + 1), axes.ravel()):
        img = 0.55 + 0.45 * _colour_image(tuples[:, n - 1].reshape(height, width), seed + n)
        inside = combinatorial.region_members(tuples, index, regions[n - 1], n).reshape(height, width)
        img[inside] = (0.85, 0.1, 0.1)
        ax.imshow(img, extent=(lng0, lng1, lat0, lat1), interpolation="nearest", origin="upper",
                  aspect="auto")
        p_lat, p_lng = predictions[n - 1]
        ax.plot([p_lng], [p_lat], "kx", ms=8, mew=2, label="Eq. 4")
        if truth is not None:
            ax.plot([truth[1]], [truth[0]], "*", c="tab:blue", ms=11, label="truth")
        cells = int(regions[n - 1][index.cell_fine].sum())
        ax.set_title(f"{n} set{'s' if n > 1 else ''}: {int(regions[n - 1].sum())} fine "
                     f"partition(s), {cells} cells", fontsize=9)
        ax.set_xlim(lng0, lng1)
        ax.set_ylim(lat0, lat1)
        ax.legend(loc="lower left", fontsize=7)
    for ax in axes.ravel()[n_sets:]:
        ax.axis("off")
    return _save(plt, fig, path)


def plot_kde_sweep(table: Mapping[str, Any], retrieval_config: Mapping[str, Any],
                   path: str | os.PathLike, *, mode: str = "latlng",
                   thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM, title: str = "") -> str:
    """:func:`plot_accuracy_sweep` of 001's kernel density against σ: the kNN rows of mode
    ``mode`` (``"vo2017"``, ``"latlng"``: σ in degrees; ``"spherical"``: σ in km) that
    ``retrieval_config`` (``config.retrieval``) gives, read from ``table`` (one split of a
    results table, ``{row name: figures}``)."""
    picks = [(sigma, name) for name, sigma, m in predictors_lib.knn_rows(retrieval_config)
             if m == mode]
    if not picks:
        raise ValueError(f"config.retrieval gives no kNN rows of mode {mode!r}; set its "
                         f"{'sigmas_km' if mode == 'spherical' else mode + '_sigmas'}.")
    missing = [name for _, name in picks if name not in table]
    if missing:
        raise ValueError(f"the table has no rows {missing}; it has {list(table)}. Evaluate with "
                         "the same config.retrieval.")
    unit = "km" if mode == "spherical" else "degrees"
    return plot_accuracy_sweep([s for s, _ in picks], [table[n] for _, n in picks], path,
                               xlabel=f"kernel width σ ({unit})", thresholds_km=thresholds_km,
                               title=title or f"kNN kernel density ({mode}): accuracy against σ")


def plot_examples(source: Any, path: str | os.PathLike, *, indices: Sequence[int] = range(12),
                  cols: int = 6, places: Any = None, title: str = "") -> str:
    """:func:`plot_images` of the records ``indices`` of an image source (``source[i]``: a
    dict with ``image``, ``lat``, ``lng``, e.g. a GeoWorld split), each titled with its
    coordinates and nearest GeoNames place (``places``: a loaded
    ``geojax.geo.gazetteer.Gazetteer``; loaded when not given)."""
    records = [source[int(i)] for i in indices]
    if not records:
        raise ValueError("indices is empty: give at least one record index.")
    places = places if places is not None else Gazetteer.load()
    lat = np.array([float(r["lat"]) for r in records])
    lng = np.array([float(r["lng"]) for r in records])
    nearest = places.nearest_place(lat, lng)
    titles = [f"{a:.2f}, {b:.2f}\n{places.name(int(p))}, "
              f"{places.country_codes[int(places.country[p])]}"
              for a, b, p in zip(lat, lng, nearest)]
    return plot_images(np.stack([np.asarray(r["image"]) for r in records]), path, titles=titles,
                       cols=cols, title=title)


def longitude_by_hour(timestamp: Any, lng: Any, *, user: Any = None, utc_offset_hours: float = 0.0,
                      seed: int = 0) -> list[np.ndarray]:
    """002 Fig. 1's data: 24 float64 arrays, the longitudes of the photos posted in each hour
    0–23 (``metadata_features.calendar`` of the Unix seconds ``timestamp`` on the clock
    ``utc_offset_hours`` ahead of UTC; 002: UTC), in photo order. With ``user`` (one id per
    photo), only one photo per user, drawn uniformly with ``seed``, as 002 draws one image per
    user "to decouple any user effects from time of day"."""
    lng = np.asarray(lng, np.float64).reshape(-1)
    timestamp = np.asarray(timestamp).reshape(-1)
    if timestamp.size != lng.size:
        raise ValueError(f"timestamp ({timestamp.size}) and lng ({lng.size}) must have one value "
                         "per photo.")
    rows = np.arange(lng.size)
    if user is not None:
        user = np.asarray(user).reshape(-1)
        if user.size != lng.size:
            raise ValueError(f"user ({user.size}) must have one value per photo ({lng.size}).")
        order = np.random.default_rng(seed).permutation(lng.size)
        _, first = np.unique(user[order], return_index=True)  # a random photo of each user
        rows = np.sort(order[first])
    hour = metadata_features.calendar(timestamp[rows], utc_offset_hours)[0]
    return [lng[rows[hour == h]] for h in range(24)]


def plot_longitude_by_hour(timestamp: Any, lng: Any, path: str | os.PathLike, *, user: Any = None,
                           utc_offset_hours: float = 0.0, seed: int = 0, title: str = "") -> str:
    """Writes a PNG (880 × 495 pixels) of 002 Fig. 1: box plots of the photos' true longitude
    for each posting hour (:func:`longitude_by_hour`; boxes: quartiles and median, whiskers:
    1.5 × the interquartile range, outliers not drawn); an hour without photos is left
    empty. Where the local posting hour follows one prior everywhere (GeoWorld), the
    longitudes' distribution changes with the UTC hour, as 002 Fig. 1 shows for YFCC100M."""
    groups = longitude_by_hour(timestamp, lng, user=user, utc_offset_hours=utc_offset_hours,
                               seed=seed)
    hours = [h for h in range(24) if groups[h].size]
    if not hours:
        raise ValueError("no photos: give at least one timestamp and longitude.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot([groups[h] for h in hours], positions=hours, widths=0.6, showfliers=False,
               patch_artist=True, boxprops=dict(facecolor="#9ecae1", edgecolor="#3182bd"),
               medianprops=dict(color="#de2d26"))
    ax.set_xlim(-0.5, 23.5)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_ylim(-180, 180)
    ax.set_yticks(range(-180, 181, 60))
    ax.grid(True, alpha=0.3)
    clock = "UTC" if not utc_offset_hours else f"UTC{utc_offset_hours:+g} h"
    ax.set_xlabel(f"hour of posting ({clock})")
    ax.set_ylabel("true longitude (degrees)")
    n = sum(groups[h].size for h in hours)
    ax.set_title(title or f"Longitude by posting hour ({n} photos"
                 + (", one per user)" if user is not None else ")"), fontsize=10)
    return _save(plt, fig, path)


def plot_confusion(confusion: Any, names: Sequence[str], path: str | os.PathLike, *,
                   xlabel: str = "predicted", ylabel: str = "label", title: str = "") -> str:
    """Writes a PNG (880 × 770 pixels) of a confusion matrix (``(K, K)`` counts, rows the
    label, columns the prediction, e.g. ``experiment.scene_selection``'s): each row as shares
    of its images (an empty row stays blank), the counts written in the cells that have any,
    the classes named by ``names``."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(names):
        raise ValueError(f"confusion must be (K, K) with K = len(names) = {len(names)}, got shape "
                         f"{counts.shape}.")
    totals = counts.sum(1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row's images")
    k = len(names)
    small = 6 if k > 8 else 8
    ax.set_xticks(range(k), [str(n) for n in names], rotation=60, ha="right", fontsize=small)
    ax.set_yticks(range(k), [str(n) for n in names], fontsize=small)
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=small,
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    n = int(counts.sum())
    ax.set_title(title or f"{n} images, {int(np.trace(counts))} on the diagonal", fontsize=10)
    return _save(plt, fig, path)
