"""geojax.evaluation.maps: accuracy curves, image grids and 004 Fig. 4's refinement maps — the
plotted numbers against the figures they come from, and the PNGs' sizes and contents."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geojax.data import geoworld
from geojax.evaluation import maps, metrics
from geojax.geo import sphere
from geojax.partitions import combinatorial, s2_adaptive
from geojax.partitions.s2_cells import SortedLeaves


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _colours(img: np.ndarray) -> int:
    return len(np.unique(img.reshape(-1, 3), axis=0))


def _figures(rng, n=300):
    t_lat, t_lng = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
    p_lat = np.clip(t_lat + rng.normal(0, 5, n), -90, 90)
    return metrics.evaluate(p_lat, sphere.wrap_lng(t_lng + rng.normal(0, 5, n)), t_lat, t_lng)


def test_accuracy_percent_reads_the_figures(rng):
    rows = [_figures(rng), _figures(rng)]
    got = maps.accuracy_percent(rows, (1, 25, 200, 750, 2500))
    want = [[100 * r[f"acc@{t}km"] for t in (1, 25, 200, 750, 2500)] for r in rows]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"row 0 has no \['acc@3km'\]"):
        maps.accuracy_percent(rows, (3,))


def test_accuracy_plots(tmp_path, rng):
    rows = {"a": _figures(rng), "b": _figures(rng)}
    img = _png(maps.plot_accuracy_by_threshold(rows, tmp_path / "t.png", title="oracle"))
    assert img.shape == (495, 880, 3) and _colours(img) > 50
    img = _png(maps.plot_accuracy_sweep([4.0, 1.0], list(rows.values()), tmp_path / "s.png",
                                        xlabel="σ"))
    assert img.shape == (495, 880, 3) and _colours(img) > 50
    with pytest.raises(ValueError, match="same length"):
        maps.plot_accuracy_sweep([1.0], list(rows.values()), tmp_path / "x.png", xlabel="σ")
    with pytest.raises(ValueError, match="rows is empty"):
        maps.plot_accuracy_by_threshold({}, tmp_path / "x.png")


def test_kde_sweep_draws_the_rows_of_its_sigmas(tmp_path, rng):
    cfg = {"name_prefix": "[L] ", "vo2017_sigmas": (1.0,), "latlng_sigmas": (0.5, 4.0),
           "sigmas_km": (25.0,)}
    table = {"[L] kNN σ=0.5° (lat/lng mean shift)": _figures(rng),
             "[L] kNN σ=4° (lat/lng mean shift)": _figures(rng),
             "[L] kNN σ=1° (vo2017)": _figures(rng), "[L] kNN σ=25 km (spherical)": _figures(rng)}
    got = maps.plot_kde_sweep(table, cfg, tmp_path / "k.png", mode="latlng", title="t")
    want = maps.plot_accuracy_sweep([0.5, 4.0], [table["[L] kNN σ=0.5° (lat/lng mean shift)"],
                                                 table["[L] kNN σ=4° (lat/lng mean shift)"]],
                                    tmp_path / "w.png", xlabel="kernel width σ (degrees)", title="t")
    np.testing.assert_array_equal(_png(got), _png(want))
    with pytest.raises(ValueError, match="no rows"):
        maps.plot_kde_sweep({}, cfg, tmp_path / "x.png", mode="spherical")
    with pytest.raises(ValueError, match="no kNN rows of mode 'latlng'"):
        maps.plot_kde_sweep(table, {"sigmas_km": (25.0,)}, tmp_path / "x.png")


def test_image_grid_and_examples(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    img = _png(maps.plot_images(images, tmp_path / "g.png", titles=[str(i) for i in range(8)], cols=4))
    assert img.shape == (484, 880, 3) and _colours(img) > 200
    source = geoworld.GeoWorld("im2gps3k", 6, seed=0, image_size=32)
    img = _png(maps.plot_examples(source, tmp_path / "e.png", indices=range(6), cols=3))
    assert img.shape == (484, 660, 3) and _colours(img) > 200
    with pytest.raises(ValueError, match="non-empty"):
        maps.plot_images(np.zeros((0, 4, 4, 3), np.uint8), tmp_path / "x.png")


def test_progressive_refinement_map(tmp_path, rng):
    c_lat, c_lng = rng.uniform(30, 60, 8), rng.uniform(-10, 40, 8)
    k = rng.integers(0, 8, 3000)
    lat, lng = c_lat[k] + rng.normal(0, 2, k.size), c_lng[k] + rng.normal(0, 2, k.size)
    points = SortedLeaves(lat, lng)
    parts = [s2_adaptive.build_s2_partition(t_max=t, t_min=1, name=f"set{t}", points=points, min_level=2)
             for t in (800, 300, 120)]
    index = combinatorial.CombinatorialIndex.build(parts, lat, lng, base_level=10)
    probs = [rng.dirichlet(np.full(p.num_classes, 0.3)) for p in parts]
    regions = combinatorial.progressive_argmax(probs, index)
    path = maps.plot_progressive_refinement(parts, index, regions, tmp_path / "r.png",
                                            truth=(float(lat[0]), float(lng[0])))
    img = _png(path)
    assert img.shape == (352, 1716, 3) and _colours(img) > 50
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 100  # the regions
    with pytest.raises(ValueError, match="regions must be"):
        maps.plot_progressive_refinement(parts, index, regions[:2], tmp_path / "x.png")
