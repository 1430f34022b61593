"""Cost of the predicted-country column of the evaluation table (``country_acc``).

Side by side in one run, on one split of ``--size`` Im2GPS-like true locations
(``geojax.data.places.sample_im2gps_like``) and ``--rows`` predictors (predictions scattered
around the truth, a tenth missing):

* ``metrics.evaluate`` — the figures every predictor row had before the column (acc@km,
  median, mean, GeoScore);
* ``PredictorRows.evaluate`` — the same rows with ``country_acc``
  (``geojax.evaluation.statistics.country_accuracy``: nearest GeoNames place by k-d tree,
  the truth's countries looked up once per split);
* ``country_accuracy`` alone, per row, with the truth's countries given.

Reported: median seconds over ``--repeats`` rounds (the gazetteer loaded and its k-d tree
built before timing, as they are once per process in a run), and the one-off cost of
``Gazetteer.load()`` from its on-disk cache plus the k-d tree build.

    python benchmarks/country_accuracy.py                 # 3,000 images, 5 rows
    python benchmarks/country_accuracy.py --size 20000 --rows 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geojax.data import places
from geojax.evaluation import evaluators, metrics, statistics
from geojax.geo import sphere
from geojax.geo.gazetteer import Gazetteer, _load_memoised


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    _load_memoised.cache_clear()
    t0 = time.perf_counter()
    gazetteer = Gazetteer.load()
    _ = gazetteer._kdtree  # pylint: disable=protected-access
    load_s = time.perf_counter() - t0

    truth = places.sample_im2gps_like(args.size, 0)
    lat, lng = truth["lat"], truth["lng"]
    rng = np.random.default_rng(1)
    predictions = {}
    for r in range(args.rows):
        dist = rng.exponential(300.0 * (r + 1), args.size)
        p_lat, p_lng = sphere.destination(lat, lng, rng.uniform(0, 360, args.size), dist)
        pred = np.stack([p_lat, p_lng], -1)
        pred[rng.random(args.size) < 0.1] = np.nan
        predictions[f"row{r}"] = pred
    split = evaluators.EvalSplit("bench", lat, lng)

    def plain():
        for pred in predictions.values():
            metrics.evaluate(pred[:, 0], pred[:, 1], lat, lng)

    def with_country():  # a fresh evaluator each round: the truth's lookup is counted too
        evaluators.PredictorRows(list(predictions), gazetteer=gazetteer).evaluate(split, predictions)

    true_country = statistics.countries(lat, lng, gazetteer)

    def country_only():
        for pred in predictions.values():
            statistics.country_accuracy(pred[:, 0], pred[:, 1], lat, lng, gazetteer,
                                        true_country=true_country)

    t_plain = _median_time(plain, args.repeats)
    t_rows = _median_time(with_country, args.repeats)
    t_country = _median_time(country_only, args.repeats)
    print(f"split of {args.size} images, {args.rows} predictor rows, {gazetteer}")
    print(f"  Gazetteer.load() from cache + k-d tree (once per process): {load_s:.3f} s")
    print(f"  metrics.evaluate, all rows:                {t_plain * 1e3:8.1f} ms")
    print(f"  PredictorRows.evaluate (+ country_acc):    {t_rows * 1e3:8.1f} ms "
          f"(+{(t_rows - t_plain) * 1e3:.1f} ms, {t_rows / t_plain:.2f}x)")
    print(f"  country_accuracy alone, per row:           {t_country / args.rows * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
