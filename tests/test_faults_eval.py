"""Issue: undecodable evaluation images never shrink the denominator.

An eval CSV of 47 images, 2 of them undecodable: the table says 47 images and every method's
row has ``n == 47`` and ``n_missing == 2`` (a prediction the method could not make is wrong).
"""

from __future__ import annotations

import importlib.util
import pathlib

from PIL import Image

from geojax import experiment
from geojax.data import geoworld
from geojax.evaluation import report

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _folder(world, folder: pathlib.Path, broken=()) -> pathlib.Path:
    folder.mkdir()
    lines = ["IMG_ID,LAT,LON"]
    for i in range(len(world)):
        if i in broken:
            (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
        else:
            Image.fromarray(world[i]["image"]).save(folder / f"{i}.jpg", quality=95)
        lines.append(f"{i}.jpg,{float(world.lat[i])!r},{float(world.lng[i])!r}")
    (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return folder / "meta.csv"


def test_undecodable_eval_images_count_as_missing(tmp_path):
    train = _folder(geoworld.GeoWorld("train", 300, 0, image_size=32), tmp_path / "train")
    evaluation = _folder(geoworld.GeoWorld("im2gps3k", 47, 1, image_size=32), tmp_path / "eval",
                         broken={5, 30})
    spec = importlib.util.spec_from_file_location("planet_cfg", ROOT / "configs" / "planet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    with config.unlocked():
        config.data.update(dict(source="csv", image_size=32, train_csv=str(train),
                                train_images=str(train.parent), eval_csv=str(evaluation),
                                eval_images=str(evaluation.parent)))
        config.stages.train.update(num_steps=2, batch_size=16)
        config.eval.batch_size = 16
    logs: list[str] = []
    results = experiment.train_and_evaluate(config, str(tmp_path / "run"), log=logs.append)
    saved = report.read_results(tmp_path / "run" / "results.json")
    model_rows = [m for m in results["eval"] if not m.startswith(("constant", "oracle"))]
    assert model_rows
    for method in model_rows:
        assert saved[f"eval/{method}"]["n"] == 47 and saved[f"eval/{method}"]["n_missing"] == 2
        # The two missing images are wrong at every distance: at most 45 of 47 can be right.
        assert saved[f"eval/{method}"]["acc@2500km"] <= 45 / 47
    assert any(line.lstrip("\n").startswith("eval (47 images, final)") for line in logs)
    assert "**eval (47 images)**" in (tmp_path / "run" / "results.md").read_text()
    # Rows that need no image (baseline, oracles) have every image.
    assert all(r["n"] == 47 and r["n_missing"] == 0
               for m, r in results["eval"].items() if m not in model_rows)
