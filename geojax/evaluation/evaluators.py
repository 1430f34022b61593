"""Evaluators: small objects chosen by ``config.eval.evaluators``, each yielding table rows.

Every evaluator sees one :class:`EvalSplit` (its true coordinates, and its images when the
mode has a model) and the predictions made on it, and returns items for the writer
(:func:`geojax.evaluation.report.write`): rows (:class:`~geojax.evaluation.report.Row`,
``(method, figures)``) or maps.

=================  ==============================================================================
type               rows
=================  ==============================================================================
``"baseline"``     001's constant prediction: every image at the densest training region
``"predictors"``   one row per predictor of ``config.eval.predictors`` (each head's arg-max, 003's
                   hierarchical product, 004's combinatorial partitioning, 001's NN and kNN
                   kernel density, ...): acc@km (004 Eq. 5), median km, GeoScore, the
                   predicted-country accuracy (``country_acc``)
``"oracle"``       each partition's best possible accuracy (002 Table 6): every image at the
                   imagery centroid of its own class
``"map"``          no row: a map of the best predictor (by GeoScore) on the first split
                   (``predictions.png``), or of the partitions (``partitions.png``) without a model
=================  ==============================================================================

:class:`Evaluation` holds them for a run: it is built once per model (predictors, the jitted
predict function and the eval datasets are made once and reused by every periodic
evaluation), and rows that do not depend on the weights (baseline, oracles) are computed once
per split. The same path serves the end of training, ``--mode=eval`` and ``--mode=partition``
(no model: baseline, oracles, partition map).

Predictions are made on the device mesh and replicated (retrieval predictors then search the
database index on the host: ``predictors.run_host``); every record of a split has a row: an
image the pipeline could not read has no prediction (NaN), which the metrics count as missing
and wrong (``n_missing``), so ``n`` is always the size of the split.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from geojax import progress
from geojax.data import datasets, pipeline
from geojax.evaluation import baselines, metrics, oracle, report, statistics
from geojax.geo.gazetteer import Gazetteer
from geojax.inference import predictors as predictors_lib
from geojax.models import heads as heads_lib
from geojax.partitions import base
from geojax.training import sharding
from geojax.training.steps import TrainState

EVALUATORS = ("baseline", "predictors", "oracle", "map")
Item = report.Row | report.PredictionMap | report.PartitionMap


@dataclasses.dataclass(frozen=True, eq=False)
class EvalSplit:
    """One evaluation split: true ``lat``, ``lng`` (float64, record order) and, when a model is
    evaluated, its ``source`` of images (record ``i`` has coordinates ``lat[i]``, ``lng[i]``)."""

    name: str
    lat: np.ndarray
    lng: np.ndarray
    source: Any = None

    @property
    def true(self) -> np.ndarray:
        return np.stack([self.lat, self.lng], -1)


Predictions = Mapping[str, np.ndarray]  # method → (N, 2) predicted lat, lng (NaN: none)


class Evaluator(Protocol):
    """``evaluate(split, predictions) -> items`` (rows or maps)."""

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]: ...


class ConstantBaseline:
    """001's constant "densest region" prediction (``baselines.constant_baseline``)."""

    name = "constant (densest cell)"

    def __init__(self, train: tuple[np.ndarray, np.ndarray]):
        self.train = train

    @functools.lru_cache(maxsize=None)
    def _figures(self, split: EvalSplit) -> dict[str, Any]:
        return baselines.constant_baseline(*self.train, split.lat, split.lng).figures

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]:
        del predictions
        return [report.Row(self.name, self._figures(split))]


class PartitionOracles:
    """Each partition's oracle accuracy (002 Table 6), named ``"<prefix><name>"``."""

    def __init__(self, partitions: Sequence[Any], *, prefix: str = "oracle: ",
                 with_classes: bool = False):
        self.partitions = list(partitions)
        self.prefix, self.with_classes = prefix, with_classes

    @functools.lru_cache(maxsize=None)
    def _rows(self, split: EvalSplit) -> tuple[Item, ...]:
        rows = []
        for p in self.partitions:
            name = f"{self.prefix}{p.name}" + (f" ({p.num_classes} cl.)" if self.with_classes else "")
            rows.append(report.Row(name, oracle.oracle_accuracy(p, split.lat, split.lng)))
        return tuple(rows)

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]:
        del predictions
        return list(self._rows(split))


class PredictorRows:
    """One row per predictor: ``metrics.evaluate`` of its predictions on the split, plus
    ``country_acc``, the share of images predicted in the right country
    (``statistics.country_accuracy``: the country of the nearest GeoNames place of each point;
    the truth's countries are looked up once per split, the predictions' once per row)."""

    def __init__(self, names: Sequence[str], *, gazetteer: Gazetteer | None = None):
        self.names = list(names)
        self._gazetteer = gazetteer

    @functools.cached_property
    def gazetteer(self) -> Gazetteer:
        return Gazetteer.load() if self._gazetteer is None else self._gazetteer

    @functools.lru_cache(maxsize=None)
    def _true_country(self, split: EvalSplit) -> np.ndarray:
        return statistics.countries(split.lat, split.lng, self.gazetteer)

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]:
        true = split.true
        rows = []
        for name in self.names:
            pred = predictions[name]
            figures = metrics.evaluate(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1])
            figures["country_acc"] = statistics.country_accuracy(
                pred[:, 0], pred[:, 1], split.lat, split.lng, self.gazetteer,
                true_country=self._true_country(split))
            rows.append(report.Row(name, figures))
        return rows


class BestPredictionMap:
    """A map of the predictor with the highest GeoScore on the first split it sees."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.split: str | None = None

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]:
        if not self.names or self.split not in (None, split.name):
            return []
        self.split = split.name
        true = split.true
        score = {n: metrics.evaluate(predictions[n][:, 0], predictions[n][:, 1], true[:, 0],
                                     true[:, 1])["geoscore"] for n in self.names}
        best = max(self.names, key=lambda n: score[n])  # first of equals, in row order
        return [report.PredictionMap(split.name, best, predictions[best], true)]


class PartitionMapEvaluator:
    """A map of the partitions' classes with the training points (``partitions.png``)."""

    def __init__(self, partitions: Sequence[Any], train: tuple[np.ndarray, np.ndarray]):
        self.partitions, self.train = list(partitions), train
        self.done = False

    def evaluate(self, split: EvalSplit, predictions: Predictions) -> list[Item]:
        del split, predictions
        if self.done:
            return []
        self.done = True
        return [report.PartitionMap(self.partitions, self.train)]


# ---------------------------------------------------------------------------- the model side
class ModelPredictions:
    """Runs a model and its predictors over eval splits on the mesh: ``predict(state, split)``
    → ``{predictor name: (N, 2)}``. The jitted function and each split's dataset are built
    once and reused."""

    def __init__(self, model: heads_lib.GeoModel, predictors: Sequence[predictors_lib.Predictor],
                 mesh: jax.sharding.Mesh, *, batch_size: int, image_size: int,
                 crops: str = "center",
                 max_bad_fraction: float = pipeline.DEFAULT_MAX_BAD_FRACTION):
        self.predictors = list(predictors)
        self.mesh, self.batch_size, self.image_size, self.crops = mesh, batch_size, image_size, crops
        self.max_bad_fraction = max_bad_fraction
        self._predict = jax.jit(predictors_lib.make_predict_fn(model, self.predictors),
                                out_shardings=sharding.replicated(mesh))
        self._replicate = jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))
        self._batch_sharding = sharding.batch_sharding(mesh)
        self._datasets: dict[int, Any] = {}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.predictors]

    def _dataset(self, split: EvalSplit) -> Any:
        key = id(split.source)
        if key not in self._datasets:
            self._datasets[key] = pipeline.make_dataset(
                split.source, train=False, global_batch_size=self.batch_size,
                image_size=self.image_size, seed=0, num_epochs=1, shuffle=False,
                drop_remainder=False, crops=self.crops, max_bad_fraction=self.max_bad_fraction)
        return self._datasets[key]

    def predict(self, state: TrainState, split: EvalSplit, *, desc: str = "") -> dict[str, np.ndarray]:
        n = len(split.source)
        out = {name: np.full((n, 2), np.nan) for name in self.names}
        bar = progress.Progress(math.ceil(n / self.batch_size), desc=desc or f"[eval {split.name}]",
                                unit="batch")
        start = 0
        for batch in self._dataset(split):
            g = pipeline.to_global_arrays(batch, self._batch_sharding, keys=["image", "valid"])
            preds = predictors_lib.run_host(self.predictors, jax.device_get(
                self._predict(state.params, state.batch_stats, g)))
            valid = np.asarray(jax.device_get(self._replicate(g["valid"])), bool)
            rows = np.arange(start, start + valid.size)
            keep = valid & (rows < n)  # the last batch is padded; unreadable images stay NaN
            for name, pred in preds.items():
                out[name][rows[keep]] = np.stack([pred.lat, pred.lng], -1)[keep]
            start += valid.size
            bar.update(1)
        bar.close()
        return out


# ---------------------------------------------------------------------------- a run's evaluation
class Evaluation:
    """A run's evaluators over its eval splits; ``run(state)`` → :class:`report.Results`."""

    def __init__(self, splits: Sequence[EvalSplit], evaluators: Sequence[Evaluator], *,
                 model: ModelPredictions | None = None):
        self.splits, self.evaluators, self.model = list(splits), list(evaluators), model

    def run(self, state: TrainState | None = None, *, tag: str = "") -> report.Results:
        results = report.Results(tables={}, sizes={})
        for split in self.splits:
            predictions: dict[str, np.ndarray] = {}
            if self.model is not None and state is not None:
                predictions = self.model.predict(state, split,
                                                 desc=f"[eval {split.name}{' ' + tag if tag else ''}]")
            rows: dict[str, dict[str, Any]] = {}
            for evaluator in self.evaluators:
                for item in evaluator.evaluate(split, predictions):
                    if isinstance(item, report.Row):
                        rows[item.method] = item.figures
                    else:
                        results.maps.append(item)
            results.tables[split.name] = rows
            results.sizes[split.name] = int(split.lat.size)
        return results


def check_config(eval_config: Any) -> None:
    """Raises ``ValueError`` for unknown evaluator or predictor names in ``config.eval``."""
    unknown = [e for e in eval_config.get("evaluators", EVALUATORS) if e not in EVALUATORS]
    if unknown:
        raise ValueError(f"config.eval.evaluators names {unknown}; known evaluators: {EVALUATORS}.")
    predictors_lib.check_kinds(tuple(eval_config.get("predictors", ())))


def for_model(config: Any, splits: Sequence[EvalSplit], model: heads_lib.GeoModel,
              predictors: Sequence[predictors_lib.Predictor], mesh: jax.sharding.Mesh, *,
              train: tuple[np.ndarray, np.ndarray], heads: Sequence[base.Partition]) -> Evaluation:
    """The :class:`Evaluation` of a trained model: ``config.eval.evaluators`` in order, the
    oracle rows for the model's ``heads``."""
    ecfg = config.eval
    runner = ModelPredictions(model, predictors, mesh, batch_size=int(ecfg.batch_size),
                              image_size=int(config.data.image_size),
                              crops=ecfg.get("crops", "center"),
                              max_bad_fraction=datasets.max_bad_fraction(config.data))
    names = runner.names
    make: dict[str, Callable[[], Evaluator]] = {
        "baseline": lambda: ConstantBaseline(train),
        "predictors": lambda: PredictorRows(names),
        "oracle": lambda: PartitionOracles(heads),
        "map": lambda: BestPredictionMap(names),
    }
    return Evaluation(splits, [make[e]() for e in ecfg.get("evaluators", EVALUATORS)],
                      model=runner)


def for_partitions(config: Any, splits: Sequence[EvalSplit], partitions: Sequence[Any], *,
                   train: tuple[np.ndarray, np.ndarray]) -> Evaluation:
    """The :class:`Evaluation` of ``--mode=partition``: no model, so the baseline, the oracle
    of every partition (named with its class count) and the partition map."""
    make: dict[str, Callable[[], Evaluator]] = {
        "baseline": lambda: ConstantBaseline(train),
        "oracle": lambda: PartitionOracles(partitions, prefix="", with_classes=True),
        "map": lambda: PartitionMapEvaluator(partitions, train),
    }
    kinds = [e for e in config.eval.get("evaluators", EVALUATORS) if e in make] \
        if "eval" in config else list(make)
    return Evaluation(splits, [make[e]() for e in kinds])
