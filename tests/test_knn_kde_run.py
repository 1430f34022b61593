"""configs/knn_kde.py end to end: training, the database store and index, the retrieval rows
of 001 in the results table, reuse of the index by ``--mode=eval``, and ScaNN against the
exact engine."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from geojax import experiment
from geojax.data import geoworld
from geojax.inference import features
from test_train import load_config, quiet


def _run(tmp_path, name, **overrides):
    config = load_config("knn_kde", **{"stages.train.num_steps": 4, **overrides})
    workdir = str(tmp_path / name)
    tables = experiment.train_and_evaluate(config, workdir, log=quiet)
    return config, workdir, tables["im2gps3k"]


def test_knn_kde_rows_store_index_reuse_and_engines(tmp_path):
    config, workdir, rows = _run(tmp_path, "scann")
    names = list(rows)
    assert names[0] == "constant (densest cell)" and names[1].startswith("boxes (")
    assert names[2:7] == ["[L] NN", "[L] kNN σ=1° (vo2017)", "[L] kNN σ=4° (vo2017)",
                          "[L] kNN σ=16° (vo2017)", "[L] kNN σ=25 km (spherical)"]
    for name in names[2:7]:
        assert rows[name]["n"] == 48 and rows[name]["n_missing"] == 0
    (digest,) = os.listdir(os.path.join(workdir, "retrieval"))
    folder = os.path.join(workdir, "retrieval", digest)
    assert sorted(os.listdir(folder)) == ["features", "index-scann"]
    with open(os.path.join(workdir, "results.json")) as f:
        assert "[L] NN" in json.dumps(json.load(f))
    # --mode=eval: the same weights, so the store and the index are reused; the same table.
    logs = []
    again = experiment.evaluate_workdir(config, workdir, log=logs.append)["im2gps3k"]
    assert any(line.startswith("[retrieval] reusing the scann index") for line in logs), logs
    assert again == rows
    # 2,000 database rows: ScaNN scores them all (brute force below 10,000), so every
    # retrieval row equals the exact JAX engine's (its index beside ScaNN's, on the same store).
    with config.unlocked():
        config.retrieval.engine = "exact"
    exact = experiment.evaluate_workdir(config, workdir, log=quiet)["im2gps3k"]
    assert sorted(os.listdir(folder)) == ["features", "index-exact", "index-scann"]
    for name in names[2:7]:
        for key, value in rows[name].items():
            np.testing.assert_allclose(exact[name][key], value, rtol=1e-6, err_msg=name)
    # --mode=predict answered by "[L] NN": its candidates are the nearest training images,
    # named by database row and image id, at those images' coordinates.
    image = str(tmp_path / "q.png")
    Image.fromarray(geoworld.GeoWorld("im2gps3k", 1, 7, image_size=int(config.data.image_size))
                    [0]["image"]).save(image)
    with config.unlocked():
        config.predict.method = "[L] NN"
    (answer,) = experiment.predict_images(config, workdir, [image], log=quiet)
    assert answer["predictor"] == "[L] NN" and len(answer["top_k"]) == config.predict.top_k
    store = features.open_store(os.path.join(folder, "features"))
    for c in answer["top_k"]:
        assert c["id"] == store.ids[c["neighbour"]] and "class" not in c
        assert (c["lat"], c["lng"]) == (store.lat[c["neighbour"]], store.lng[c["neighbour"]])
    assert (answer["lat"], answer["lng"]) == (answer["top_k"][0]["lat"], answer["top_k"][0]["lng"])
