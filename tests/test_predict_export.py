"""--mode=predict, --mode=export and geojax.serving on a tiny trained run.

One hierarchical ``runlocal`` run (2,000 GeoWorld photos at 32 px, 4 steps: seven heads and
the hierarchical product) serves every test: the command line's answers are checked against
the evaluation's own predictions, the export is reloaded in a fresh process that must not
load the training code, and broken exports must be refused.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geojax import experiment, serving
from geojax.data import geoworld, pipeline
from geojax.evaluation import evaluators, report
from geojax.inference import export
from geojax.inference import predictors as predictors_lib
from geojax.training import steps as steps_lib
from geojax.training import train as train_lib
from test_train import REPO, TINY, load_config, quiet

STEPS = {"stages.train.num_steps": 4, "stages.train.batch_size": 16}
CLI_STEPS = ["--config.stages.train.num_steps=4", "--config.stages.train.batch_size=16"]
GOOD = ("a.jpg", "b.png", "c.jpg")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny hierarchical run, and a folder of images: three readable ones (JPEG,
    a grey PNG of another size, a JPEG with a larger aspect ratio), a corrupt one."""
    root = tmp_path_factory.mktemp("predict")
    workdir = str(root / "run")
    config = load_config("hierarchical", **STEPS)
    experiment.train_and_evaluate(config, workdir, log=quiet)
    world = geoworld.GeoWorld("im2gps3k", 3, 7, image_size=32)
    images = root / "images"
    images.mkdir()
    Image.fromarray(world[0]["image"]).save(images / "a.jpg", quality=95)
    Image.fromarray(world[1]["image"]).convert("L").resize((45, 37)).save(images / "b.png")
    Image.fromarray(world[2]["image"]).resize((80, 33)).save(images / "c.jpg", quality=90)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return config, workdir, images


@pytest.fixture(scope="module")
def cli_answers(run, tmp_path_factory):
    """``--mode=predict`` on the three images, a corrupt one and a missing one, with --map."""
    config, workdir, images = run
    map_path = str(tmp_path_factory.mktemp("map") / "answers.png")
    paths = [str(images / "a.jpg"), str(images / "broken.jpg"), str(images / "b.png"),
             str(images / "missing.jpg"), str(images / "c.jpg")]
    out = subprocess.run(
        [sys.executable, "-m", "geojax.main", f"--config={REPO}/configs/hierarchical.py:runlocal",
         f"--workdir={workdir}", *TINY, *CLI_STEPS, "--mode=predict", "--image", *paths,
         f"--map={map_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return lines, paths, map_path, out.stderr


def test_predict_answers_each_image_or_names_why_not(run, cli_answers):
    config, workdir, _ = run
    lines, paths, _, stderr = cli_answers
    assert [r["file"] for r in lines] == paths  # one line per image, in order
    assert "cannot be decoded" in lines[1]["error"] and "broken.jpg" in lines[1]["error"]
    assert lines[3]["error"] == "cannot read the file: No such file or directory"
    answered = [lines[i] for i in (0, 2, 4)]
    # The answering predictor: the best GeoScore of the first split in results.json.
    rows = report.read_results(os.path.join(workdir, "results.json"))
    names = list(answered[0]["predictors"])
    best = max(names, key=lambda n: rows[f"im2gps3k/{n}"]["geoscore"])
    assert f"{best!r} answers (the best GeoScore on im2gps3k" in stderr
    for r in answered:
        assert r["predictor"] == best
        assert (r["lat"], r["lng"]) == (r["predictors"][best]["lat"], r["predictors"][best]["lng"])
        assert len(r["top_k"]) == 5  # config.predict.top_k
        scores = [c["score"] for c in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert (r["top_k"][0]["lat"], r["top_k"][0]["lng"]) == (r["lat"], r["lng"])
        classes = [c["class"] for c in r["top_k"]]  # distinct class ids of the answering head
        assert len(set(classes)) == 5 and all(isinstance(c, int) and c >= 0 for c in classes)
        place = r["place"]
        assert place["name"] and len(place["country"]) == 2 and place["country_name"]
        assert 0 <= place["dist_km"] < 500


def _evaluation_answers(config, workdir, images, crops="center"):
    """The evaluation's predictions for the GOOD files: the grain pipeline's decode and
    crops, ModelPredictions on the run's mesh."""
    ctx, model, state = train_lib.final_model(config, workdir, log=quiet)
    predictors = experiment._predictors(ctx, model.heads.names)  # pylint: disable=protected-access
    records = [{"id": name, "lat": 0.0, "lng": 0.0, "image_bytes": (images / name).read_bytes()}
               for name in GOOD]
    source = pipeline.InMemorySource(records)
    runner = evaluators.ModelPredictions(model, predictors, ctx.mesh, batch_size=16, image_size=32,
                                         crops=crops)
    return runner.predict(state, evaluators.EvalSplit("files", source.lat, source.lng,
                                                      source=source))


def test_predict_equals_the_evaluation_path(run, cli_answers):
    """Every predictor's answer equals what the evaluation computes for the same files."""
    config, workdir, images = run
    lines, _, _, _ = cli_answers
    expected = _evaluation_answers(config, workdir, images)
    answered = [lines[i] for i in (0, 2, 4)]
    assert list(answered[0]["predictors"]) == list(expected)
    for name, latlng in expected.items():
        got = np.array([[r["predictors"][name]["lat"], r["predictors"][name]["lng"]]
                        for r in answered])
        np.testing.assert_allclose(got, latlng, atol=1e-4, err_msg=name)


def test_predict_with_five_crops_equals_the_evaluation(run):
    """With config.eval.crops="five", predict averages the five crops like the evaluation."""
    config, workdir, images = run
    with config.unlocked():
        config.eval.crops = "five"
    try:
        answered = experiment.predict_images(config, workdir, [str(images / n) for n in GOOD],
                                             log=quiet)
        expected = _evaluation_answers(config, workdir, images, crops="five")
    finally:
        config.eval.crops = "center"
    for name, latlng in expected.items():
        got = np.array([[r["predictors"][name]["lat"], r["predictors"][name]["lng"]]
                        for r in answered])
        np.testing.assert_allclose(got, latlng, atol=1e-4, err_msg=name)


class _ExactIndex:
    """A brute-force database index: ``search(queries, k)`` → the k largest inner products."""

    def __init__(self, features: np.ndarray, lat: np.ndarray, lng: np.ndarray):
        self.features, self.lat, self.lng = features, lat, lng

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.features.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, rows, 1), rows


def test_batch_predictor_runs_host_predictors_too(run):
    """The one predict path answers retrieval (host) predictors with their top-k like the
    on-device ones: NN over a small database equals the brute-force nearest neighbour."""
    config, workdir, images = run
    ctx, model, state = train_lib.final_model(config, workdir, log=quiet)
    views = np.stack([export.eval_view((images / n).read_bytes(), 32) for n in GOOD])
    variables = export.variables_of(state.params, state.batch_stats)
    features = np.asarray(model.apply(variables, steps_lib.normalize_images(views),
                                      train=False)["features"], np.float64)
    queries = features / np.linalg.norm(features, axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    database = rng.normal(size=(50, queries.shape[1]))
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    lat, lng = rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)
    index = _ExactIndex(database.astype(np.float32), lat, lng)
    head = experiment._predictors(ctx, model.heads.names)[0]  # pylint: disable=protected-access
    predictors = export.with_top_k([head, predictors_lib.NearestNeighbour("NN", index)], 3)
    preds = export.make_batch_predictor(model, predictors)(state.params, state.batch_stats, views)
    assert list(preds) == [head.name, "NN"]
    order = np.argsort(-(queries @ database.T), axis=1)[:, :3]
    np.testing.assert_allclose(preds["NN"].lat, lat[order[:, 0]])
    np.testing.assert_allclose(preds["NN"].topk_lng, lng[order])
    np.testing.assert_array_equal(preds["NN"].topk_id, order)
    assert preds[head.name].topk_lat.shape == (3, 3)


def test_predict_map_is_a_world_map_of_the_answers(cli_answers):
    _, _, map_path, _ = cli_answers
    with Image.open(map_path) as img:
        assert img.size == (1100, 550)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 180) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)  # the answers' stars
    grey = (np.abs(pixels - 191).max(1) < 10)  # GeoNames places: the land
    assert red.sum() > 20 and grey.sum() > 5000


def test_serving_view_matches_the_pipeline_bit_for_bit(tmp_path):
    """serving's decode + centre crop (no geojax import) == the eval pipeline's, on images of
    several sizes, aspect ratios and modes."""
    rng = np.random.default_rng(0)
    blobs = []
    for (w, h), mode, fmt in [((32, 32), "RGB", "PNG"), ((45, 37), "L", "PNG"),
                              ((37, 90), "RGBA", "PNG"), ((301, 77), "RGB", "JPEG"),
                              ((33, 34), "P", "PNG"), ((20, 25), "RGB", "JPEG")]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).convert(mode)
        path = tmp_path / f"{w}x{h}.{fmt.lower()}"
        img.save(path, format=fmt)
        blobs.append(path.read_bytes())
    for size in (32, 24):
        records = [{"id": str(i), "lat": 0.0, "lng": 0.0, "image_bytes": b}
                   for i, b in enumerate(blobs)]
        ds = pipeline.make_dataset(pipeline.InMemorySource(records), train=False,
                                   global_batch_size=len(blobs), image_size=size, seed=0,
                                   num_epochs=1, shuffle=False, drop_remainder=False)
        expected = next(iter(ds))["image"]
        resize = export.eval_resize(size)
        for i, b in enumerate(blobs):
            np.testing.assert_array_equal(serving.center_view(serving.decode(b), size, resize),
                                          expected[i])
            np.testing.assert_array_equal(export.eval_view(b, size), expected[i])


_FRESH = r"""
import json, sys
import numpy as np
from geojax import serving
model = serving.load(sys.argv[1])
paths = sys.argv[2:]
blobs = [open(p, "rb").read() for p in paths]
together = model.predict_bytes(blobs)
views = np.stack([model.preprocess(b) for b in blobs])
one = model.predict_images(views[:1])
two = model.predict_images(views[1:])
loaded = sorted(m for m in sys.modules if m.startswith("geojax"))
print(json.dumps({"predictor": model.predictor, "loaded": loaded,
                  "together": {k: v.tolist() for k, v in together.items()},
                  "split": {k: np.concatenate([one[k], two[k]]).tolist() for k in one}}))
"""


def test_export_reloads_in_a_fresh_process_and_answers_like_predict(run, cli_answers, tmp_path):
    config, workdir, images = run
    lines, _, _, _ = cli_answers
    path = experiment.export_workdir(config, workdir, str(tmp_path / "export"), log=quiet)
    manifest = serving.read_manifest(path)
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"] and manifest["top_k"] == 5
    assert manifest["image_size"] == 32 and manifest["input"]["shape"] == ["b", 32, 32, 3]
    out = subprocess.run([sys.executable, "-c", _FRESH, path, *(str(images / n) for n in GOOD)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["loaded"] == ["geojax", "geojax.serving"]  # no training, config or data code
    answered = [lines[i] for i in (0, 2, 4)]
    assert fresh["predictor"] == answered[0]["predictor"]
    for result in (fresh["together"], fresh["split"]):  # batch sizes 3, then 1 and 2
        np.testing.assert_allclose(result["lat"], [r["lat"] for r in answered], atol=1e-4)
        np.testing.assert_allclose(result["lng"], [r["lng"] for r in answered], atol=1e-4)
        for key in ("lat", "lng", "score"):
            np.testing.assert_allclose(result[f"topk_{key}"],
                                       [[c[key] for c in r["top_k"]] for r in answered],
                                       atol=1e-4 if key != "score" else 1e-7, rtol=1e-5)
        assert result["topk_id"] == [[c["class"] for c in r["top_k"]] for r in answered]


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    config, workdir, _ = run
    return experiment.export_workdir(config, workdir, str(tmp_path_factory.mktemp("e") / "x"),
                                     log=quiet)


def _broken_copy(source: str, target, damage) -> str:
    shutil.copytree(source, target)
    damage(str(target))
    return str(target)


def _flip_byte(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _params_file(root: str) -> str:
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, "params"))
                   for f in files)
    return found[-1]


def _bump_version(root: str) -> None:
    manifest_path = os.path.join(root, serving.MANIFEST)
    manifest = json.load(open(manifest_path))
    manifest["version"] = 99
    json.dump(manifest, open(manifest_path, "w"))


@pytest.mark.parametrize("damage, message", [
    (lambda d: os.remove(os.path.join(d, serving.MANIFEST)),
     "it has no manifest.json (written last: the export was interrupted"),
    (lambda d: _flip_byte(os.path.join(d, serving.SERVING_FILE)),
     "1 file(s) do not match their checksum, e.g. serving.jaxexport"),
    (lambda d: os.remove(_params_file(d)), "file(s) of the manifest are missing, e.g. params/"),
    (lambda d: open(os.path.join(d, "params", "extra"), "w").write("x"),
     "1 file(s) are not in the manifest, e.g. params/extra"),
    (_bump_version, "export format version 99; this geojax reads version 1"),
    (lambda d: open(os.path.join(d, serving.MANIFEST), "w").write('{"format": "geojax-ex'),
     "manifest.json cannot be read"),
], ids=["no-manifest", "changed-function", "missing-params", "extra-file", "version", "torn-manifest"])
def test_a_broken_export_is_refused(exported, tmp_path, damage, message):
    broken = _broken_copy(exported, tmp_path / "broken", damage)
    with pytest.raises(serving.ExportError) as err:
        serving.load(broken)
    assert message in str(err.value) and broken in str(err.value)
    assert "Export the run again with --mode=export" in str(err.value)
    assert serving.load(exported).top_k == 5  # the intact one still loads


def test_an_interrupted_export_leaves_the_old_one(run, exported, monkeypatch):
    """A failure while writing (here: the Orbax save) leaves the earlier export as it was and
    no temporary folder."""
    config, workdir, _ = run
    before = serving.file_digests(exported)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export.ocp.StandardCheckpointer, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        experiment.export_workdir(config, workdir, exported, log=quiet)
    assert serving.file_digests(exported) == before
    assert os.listdir(os.path.dirname(exported)) == [os.path.basename(exported)]
    serving.load(exported)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_serving_refuses_wrong_inputs(exported):
    model = serving.load(exported)
    with pytest.raises(ValueError, match=r"expected a uint8 batch of shape \(B, 32, 32, 3\)"):
        model.predict_images(np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"^image 1 \(11 bytes\) cannot be decoded: cannot identify image file$"):
        model.predict_bytes([(_png(np.zeros((40, 40, 3), np.uint8))), b"\x89PNG broken"])


def test_choose_predictor(run, tmp_path):
    config, workdir, _ = run
    names = ["x", "hierarchy hierarchical product"]
    assert experiment.choose_predictor(config, str(tmp_path), names) == (
        "x", "the first predictor (no results.json with its GeoScore)")
    with config.unlocked():
        config.predict.method = "hierarchy hierarchical product"
    try:
        assert experiment.choose_predictor(config, workdir, names)[0] == names[1]
        config.predict.method = "nope"
        with pytest.raises(train_lib.ConfigError, match=r"config.predict.method='nope' is not a "
                                                        r"predictor of this run; choose one of"):
            experiment.choose_predictor(config, workdir, names)
    finally:
        config.predict.method = ""


def test_predict_mode_flag_mistakes():
    base = [sys.executable, "-m", "geojax.main", "--config=configs/planet.py:runlocal"]
    for args, message in [(["--mode=predict"], "--mode=predict needs images."),
                          (["--image=a.jpg"], "--image is for --mode=predict (this is --mode=train)."),
                          (["--mode=predict", "--image=a", "--export_dir=x"],
                           "--export_dir is for --mode=export")]:
        out = subprocess.run(base + args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr and out.stdout == "", out.stderr
