"""Evaluators and the results writer (geojax.evaluation.evaluators, report.write)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from geojax.data import sources
from geojax.data.records import InMemorySource
from geojax.evaluation import baselines, evaluators, metrics, oracle, report, statistics
from geojax.inference import predictors
from geojax.models import GeoModel, MultiPartitionHeads, SmallCNN
from geojax.partitions import s2_adaptive
from geojax.training import sharding
from geojax.training.steps import TrainState, normalize_images


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(3)
    train = rng.uniform(-60, 60, 4000), rng.uniform(-180, 180, 4000)
    part = s2_adaptive.build_s2_partition(*train, t_max=400, t_min=5, name="p")
    test = rng.uniform(-60, 60, 50), rng.uniform(-180, 180, 50)
    return train, part, test


class FixedPredictions:
    """A stand-in for ModelPredictions whose predictions are known exactly."""

    def __init__(self, predictions):
        self.predictions, self.calls = predictions, 0

    def predict(self, state, split, *, desc=""):
        del state, desc
        self.calls += 1
        return self.predictions[split.name]


def test_rows_are_the_evaluators_figures_in_config_order(world, tmp_path):
    train, part, (lat, lng) = world
    split = evaluators.EvalSplit("test", lat, lng)
    good = np.stack([lat + 0.001, lng], -1)  # ~111 m off
    bad = np.stack([-lat, lng + 90.0], -1)
    model = FixedPredictions({"test": {"good": good, "bad": bad}})
    evaluation = evaluators.Evaluation(
        [split], [evaluators.ConstantBaseline(train), evaluators.PredictorRows(["bad", "good"]),
                  evaluators.PartitionOracles([part]), evaluators.BestPredictionMap(["bad", "good"])],
        model=model)
    results = evaluation.run(state=object(), tag="final")
    rows = results.tables["test"]
    assert list(rows) == ["constant (densest cell)", "bad", "good", "oracle: p"]
    assert rows["constant (densest cell)"] == baselines.constant_baseline(*train, lat, lng).figures
    for name, pred in (("good", good), ("bad", bad)):
        assert rows[name] == {**metrics.evaluate(pred[:, 0], pred[:, 1], lat, lng),
                              "country_acc": statistics.country_accuracy(pred[:, 0], pred[:, 1],
                                                                         lat, lng)}
    assert rows["good"]["acc@1km"] == 1.0 and rows["good"]["n"] == 50
    assert rows["bad"]["country_acc"] < rows["good"]["country_acc"]
    assert "country_acc" not in rows["oracle: p"]
    assert rows["oracle: p"] == oracle.oracle_accuracy(part, lat, lng)
    assert results.sizes == {"test": 50}
    [picture] = results.maps
    assert picture.method == "good" and picture.split == "test"
    np.testing.assert_array_equal(picture.pred, good)
    # Rows that do not depend on the weights are computed once per split.
    again = evaluation.run(state=object())
    assert again.tables == results.tables and model.calls == 2

    logs = []
    report.write(results, tmp_path, heading="# run\n", tag="final", log=logs.append)
    assert report.read_results(tmp_path / "results.json") == results.flat()
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith("# run\n") and "| good " in markdown and "**test (50 images)**" in markdown
    assert logs[0].lstrip("\n").startswith("test (50 images, final): accuracy (%) within each")
    header = logs[0].strip().splitlines()[1].split()
    assert header == ["method", "1", "km", "25", "km", "200", "km", "750", "km", "2500", "km",
                      "median", "km", "GeoScore", "in", "country"]
    good_line = next(line for line in logs[0].splitlines() if line.startswith("good "))
    assert good_line.split()[-1] == f"{100 * rows['good']['country_acc']:.1f}"
    oracle_line = next(line for line in logs[0].splitlines() if line.startswith("oracle: p"))
    assert oracle_line.split()[-1] == report.MISSING  # rows without a country figure
    assert "| median km | GeoScore | in country |" in markdown
    with Image.open(tmp_path / "predictions.png") as png:
        assert png.format == "PNG" and png.size[0] > 500
    # Periodic evaluations print but write nothing.
    report.write(results, tmp_path / "quiet", files=False, log=logs.append)
    assert not (tmp_path / "quiet").exists()


def test_predictor_rows_count_the_predicted_country():
    # Paris -> Lyon (France = France), Paris -> Berlin (no), Madrid -> Madrid (yes),
    # no prediction (NaN) -> wrong: 2 of 4.
    true = np.array([(45.7640, 4.8357), (52.5200, 13.4050), (40.4168, -3.7038), (48.86, 2.35)])
    pred = np.array([(48.8566, 2.3522), (48.8566, 2.3522), (40.4168, -3.7038), (np.nan, np.nan)])
    split = evaluators.EvalSplit("cities", true[:, 0], true[:, 1])
    [(name, figures)] = evaluators.PredictorRows(["m"]).evaluate(split, {"m": pred})
    assert name == "m" and figures["country_acc"] == 0.5 and figures["n_missing"] == 1


def test_partition_evaluation_has_no_model_rows(world):
    train, part, (lat, lng) = world
    config = ml_collections.ConfigDict({"eval": {"evaluators": ("oracle", "map")}})
    results = evaluators.for_partitions(config, [evaluators.EvalSplit("s", lat, lng)], [part],
                                        train=train).run()
    assert list(results.tables["s"]) == [f"p ({part.num_classes} cl.)"]
    assert [type(m) for m in results.maps] == [report.PartitionMap]


def test_unknown_names_in_the_eval_config_are_refused():
    with pytest.raises(ValueError, match=r"config.eval.evaluators names \['maps'\]"):
        evaluators.check_config(ml_collections.ConfigDict({"evaluators": ("maps",)}))
    with pytest.raises(ValueError, match=r"config.eval.predictors names \['kmeans'\]"):
        evaluators.check_config(ml_collections.ConfigDict({"predictors": ("argmax", "kmeans")}))


def test_model_predictions_count_unreadable_images_as_missing(world):
    """Every record has a row: an undecodable image is a missing (wrong) prediction, never a
    smaller denominator. The readable ones equal the model applied directly."""
    train, part, _ = world
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(10, 16, 16, 3), dtype=np.uint8)
    lat, lng = rng.uniform(-50, 50, 10), rng.uniform(-170, 170, 10)
    unreadable = {3, 8}
    records = [dict(image_bytes=b"not an image" if i in unreadable else sources.encode_image(images[i]),
                    lat=lat[i], lng=lng[i], id=f"img{i}") for i in range(10)]
    split = evaluators.EvalSplit("s", lat, lng, source=InMemorySource(records))
    model = GeoModel(SmallCNN(widths=(4, 8)), MultiPartitionHeads({"p": part.num_classes}))
    variables = model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), train=False)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=None)
    traced = []

    class Counting(predictors.ArgmaxCentroid):
        def __call__(self, outputs):
            traced.append(1)  # runs when jax traces, not when the compiled function runs
            return super().__call__(outputs)

    pred = predictors.ArgmaxCentroid.from_partition(part)
    counting = Counting(pred.name, pred.head, pred.centroids_xyz)
    runner = evaluators.ModelPredictions(model, [counting], sharding.make_mesh(None),
                                         batch_size=4, image_size=16)
    got = runner.predict(state, split)[pred.name]
    assert got.shape == (10, 2)
    assert set(np.flatnonzero(np.isnan(got[:, 0]))) == unreadable
    ok = np.array([i not in unreadable for i in range(10)])
    outputs = model.apply(variables, normalize_images(jnp.asarray(images[ok])), train=False)
    want = pred(outputs)
    np.testing.assert_allclose(got[ok], np.stack([want.lat, want.lng], -1), atol=1e-4)
    [(name, figures)] = evaluators.PredictorRows([pred.name]).evaluate(split, {pred.name: got})
    assert figures["n"] == 10 and figures["n_missing"] == 2
    # The second evaluation reuses the jitted function and the dataset: nothing is traced again.
    before = len(traced)
    np.testing.assert_array_equal(runner.predict(state, split)[pred.name], got)
    assert len(traced) == before == 1
