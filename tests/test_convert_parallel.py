"""Conversion to ArrayRecord over processes (``--workers``) and over hosts (``--shard_index`` /
``--num_shards``) on miniature MP-16 and Im2GPS-style datasets written here: every way of
converting gives the single-process dataset record for record; an unfinished conversion is refused
by name and resumes; and the real-data path runs end to end (convert over two hosts → train from
the ArrayRecord folders → export → predict).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from PIL import Image

from geojax.data import sources
from test_object_store import FakeBucket, bucket, objects  # noqa: F401  (the fake gs:// store)
from test_train import REPO, quiet

N_IMAGES = 36  # a few dozen photos, one of them undecodable


def _photo(k: int) -> bytes:
    """A 48x64 JPEG (quality 90) that differs per k."""
    rng = np.random.default_rng(k)
    yy, xx = np.mgrid[:48, :64]
    base = np.stack([xx * 3 + k * 7, yy * 4 + k * 11, (xx + yy) * 2 + k * 5], -1) % 200
    image = (base + rng.integers(0, 40, base.shape)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _coordinates(k: int) -> tuple[float, float]:
    return -70.0 + 137.0 * ((k * 0.618034) % 1.0), -179.0 + 358.0 * ((k * 0.414214) % 1.0)


def _image_bytes(k: int) -> bytes:
    return b"\xff\xd8 not a JPEG" if k == 17 else _photo(k)


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """An Im2GPS-style ``IMG_ID,AUTHOR,LAT,LON`` CSV + a folder of ``N_IMAGES`` JPEGs."""
    root = tmp_path_factory.mktemp("csv")
    images = root / "images"
    images.mkdir()
    rows = ["IMG_ID,AUTHOR,LAT,LON"]
    for k in range(N_IMAGES):
        name = f"{1000 + k}_e60e9cdfb4_1125_7884{k}@N00.jpg"
        (images / name).write_bytes(_image_bytes(k))
        lat, lng = _coordinates(k)
        rows.append(f"{name},user{k % 5},{lat!r},{lng!r}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root / "meta.csv", images


@pytest.fixture(scope="module")
def mp16_dataset(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """MP-16-style ``shard_N.msg`` files of ``{id, image}`` records (three shards) and the
    metadata CSV joined to them by id."""
    root = tmp_path_factory.mktemp("mp16")
    (root / "shards").mkdir()
    rows = ["IMG_ID,LAT,LON"]
    for s in range(3):
        chunks = []
        for k in range(s, N_IMAGES, 3):
            rid = f"{k // 10:02d}/{k:04d}.jpg"
            chunks.append(msgpack.packb({"id": rid, "image": _image_bytes(k)}, use_bin_type=True))
            lat, lng = _coordinates(k)
            rows.append(f"{rid},{lat!r},{lng!r}")
        (root / "shards" / f"shard_{s}.msg").write_bytes(b"".join(chunks))
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root / "shards", root / "meta.csv"


def _source(kind: str, csv_dataset, mp16_dataset):
    if kind == "csv":
        return sources.CsvImageFolderSource(*csv_dataset, max_bad_fraction=0.1)
    return sources.Mp16MsgpackSource(*mp16_dataset, max_bad_fraction=0.1)


def _cli_args(kind: str, csv_dataset, mp16_dataset) -> list[str]:
    if kind == "csv":
        return ["--format=csv", f"--csv={csv_dataset[0]}", f"--images={csv_dataset[1]}",
                "--max-bad-fraction=0.1"]
    return ["--format=mp16", f"--shards={mp16_dataset[0]}", f"--csv={mp16_dataset[1]}",
            "--max-bad-fraction=0.1"]


@pytest.fixture(scope="module")
def single(csv_dataset, mp16_dataset, tmp_path_factory) -> dict[str, pathlib.Path]:
    """The reference: each fixture converted by one process into 6 output shards."""
    root = tmp_path_factory.mktemp("single")
    out = {}
    for kind in ("csv", "mp16"):
        out[kind] = root / kind
        sources.convert_to_array_record(_source(kind, csv_dataset, mp16_dataset), out[kind],
                                        num_shards=6, log=quiet)
    return out


def assert_same_dataset(got: pathlib.Path, want: pathlib.Path) -> None:
    """The same records in the same order, the same coordinates.npy and report."""
    a, b = sources.ArrayRecordSource(got), sources.ArrayRecordSource(want)
    assert len(a) == len(b) == N_IMAGES - 1
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert type(ra[key]) is type(rb[key]) and ra[key] == rb[key], key
    assert (got / "coordinates.npy").read_bytes() == (want / "coordinates.npy").read_bytes()
    assert (got / "report.json").read_bytes() == (want / "report.json").read_bytes()
    meta_a, meta_b = a.metadata, b.metadata
    for key in ("count", "fields", "summary", "source_report", "conversion_report", "num_shards"):
        assert meta_a[key] == meta_b[key], key


def test_reference_conversion_drops_the_undecodable_photo(single):
    for kind, folder in single.items():
        ars = sources.ArrayRecordSource(folder)
        assert len(ars) == N_IMAGES - 1 and ars.metadata["num_shards"] == 6
        assert "1 undecodable images" in ars.metadata["summary"]
        lat = np.array([_coordinates(k)[0] for k in range(N_IMAGES) if k != 17])
        if kind == "csv":  # rows in CSV order; MP-16 records in shard order
            np.testing.assert_array_equal(ars.lat, lat)
        else:
            np.testing.assert_array_equal(np.sort(ars.lat), np.sort(lat))


@pytest.mark.parametrize("kind", ["csv", "mp16"])
def test_workers_give_the_single_process_dataset(kind, single, csv_dataset, mp16_dataset, tmp_path):
    sources.convert_to_array_record(_source(kind, csv_dataset, mp16_dataset), tmp_path / "ds",
                                    num_shards=6, workers=2, log=quiet)
    assert_same_dataset(tmp_path / "ds", single[kind])
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left


@pytest.mark.parametrize("kind", ["csv", "mp16"])
def test_shares_over_hosts_give_the_single_process_dataset(kind, single, csv_dataset, mp16_dataset,
                                                           tmp_path):
    out = tmp_path / "ds"
    logs: list[str] = []
    for share, missing in ((2, "shares 0, 1"), (0, "share 1")):  # shares finish in any order
        result = sources.convert_to_array_record(
            _source(kind, csv_dataset, mp16_dataset), out, num_shards=6, share_index=share,
            num_shares=3, log=logs.append)
        assert result is None and f"{missing} not finished yet" in logs[-1]
        with pytest.raises(FileNotFoundError, match=rf"{missing} not finished\).*--shard_index=I "
                                                    r"--num_shards=3"):
            sources.ArrayRecordSource(out)
    metadata = sources.convert_to_array_record(_source(kind, csv_dataset, mp16_dataset), out,
                                               num_shards=6, share_index=1, num_shares=3, log=quiet)
    assert metadata["count"] == N_IMAGES - 1
    assert_same_dataset(out, single[kind])
    # Running a share again on a complete folder changes nothing.
    again = sources.convert_to_array_record(_source(kind, csv_dataset, mp16_dataset), out,
                                            num_shards=6, share_index=0, num_shares=3, log=logs.append)
    assert again == metadata and "already complete" in logs[-1]


def test_shares_must_agree(csv_dataset, mp16_dataset, tmp_path):
    out = tmp_path / "ds"
    src = _source("csv", csv_dataset, mp16_dataset)
    sources.convert_to_array_record(src, out, num_shards=6, share_index=0, num_shares=2, log=quiet)
    with pytest.raises(ValueError, match="num_shards: 6 there, 4 here"):
        sources.convert_to_array_record(src, out, num_shards=4, share_index=1, num_shares=2, log=quiet)
    other = _source("mp16", csv_dataset, mp16_dataset)  # other input: another fingerprint
    with pytest.raises(ValueError, match="source_fingerprint"):
        sources.convert_to_array_record(other, out, num_shards=6, share_index=1, num_shares=2,
                                        log=quiet)
    with pytest.raises(ValueError, match="0 <= share_index < num_shares"):
        sources.convert_to_array_record(src, tmp_path / "x", share_index=2, num_shares=2, log=quiet)
    with pytest.raises(ValueError, match="cannot be split over 3 shares"):
        sources.convert_to_array_record(src, tmp_path / "x", num_shards=2, share_index=0,
                                        num_shares=3, log=quiet)
    with pytest.raises(FileExistsError, match="already exists.*not finished"):
        sources.convert_to_array_record(src, out, log=quiet)  # one host over an unfinished folder


_KILLED_SHARE = """
import sys, time
from geojax.data import sources

class HangsAt:
    def __init__(self, inner, at):
        self.inner, self.at, self.report = inner, at, inner.report
        self.lat, self.lng = inner.lat, inner.lng

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.at:
            print("hanging", flush=True)
            time.sleep(600)
        return self.inner[i]

    def __repr__(self):
        return repr(self.inner)

inner = sources.CsvImageFolderSource(sys.argv[2], sys.argv[3], max_bad_fraction=0.1)
sources.convert_to_array_record(HangsAt(inner, int(sys.argv[4])), sys.argv[1], num_shards=6,
                                share_index=1, num_shares=2)
"""


def test_a_killed_share_is_refused_by_name_and_resumes(single, csv_dataset, mp16_dataset, tmp_path):
    out = tmp_path / "ds"
    src = _source("csv", csv_dataset, mp16_dataset)
    sources.convert_to_array_record(src, out, num_shards=6, share_index=0, num_shares=2, log=quiet)
    # Share 1 writes output shards 3, 4, 5 = records [18, 36); kill it inside shard 4 (records 24-29).
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SHARE, str(out), *map(str, csv_dataset), "26"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        printed = [proc.stdout.readline().strip() for _ in range(2)]
        assert printed == [f"share 1 of 2: 1 of 3 shards written to {out}", "hanging"]
    finally:
        proc.kill()  # SIGKILL: nothing is cleaned up
        proc.wait(timeout=30)
    names = os.listdir(out)
    assert "metadata.json" not in names and any(n.startswith(".geojax-00004-of-00006") for n in names)
    assert sorted(os.listdir(out / "parts")) == [
        f"geojax-0000{s}-of-00006.array_record.json" for s in (0, 1, 2, 3)] + ["plan.json"]
    with pytest.raises(FileNotFoundError, match=r"4 of 6 output shards written; share 1 not finished"):
        sources.ArrayRecordSource(out)
    logs: list[str] = []
    sources.convert_to_array_record(src, out, num_shards=6, share_index=1, num_shares=2, log=logs.append)
    assert "1 of 3 shards already written; resuming" in logs[0]
    assert not any(n.startswith(".") for n in os.listdir(out))  # the killed run's temporary file is gone
    assert_same_dataset(out, single["csv"])


def test_finalize_completes_a_folder_whose_last_share_died(single, csv_dataset, mp16_dataset, tmp_path):
    out = tmp_path / "ds"
    src = _source("mp16", csv_dataset, mp16_dataset)
    for share in (0, 1):
        sources.convert_to_array_record(src, out, num_shards=6, share_index=share, num_shares=2,
                                        log=quiet)
    for name in ("metadata.json", "coordinates.npy", "report.json"):  # as if it died before these
        os.remove(out / name)
    with pytest.raises(FileNotFoundError, match="finalize --out="):
        sources.ArrayRecordSource(out)
    assert sources.main(["finalize", f"--out={out}"]) == 0
    assert_same_dataset(out, single["mp16"])
    assert sources.main(["finalize", f"--out={tmp_path / 'nothing'}"]) == 1


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geojax.data.sources", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_command_line_over_two_hosts_with_two_workers_each(single, csv_dataset, mp16_dataset, tmp_path):
    """Two hosts (two processes started at once) each convert their share with two workers."""
    out = tmp_path / "ds"
    common = [sys.executable, "-m", "geojax.data.sources", "convert",
              *_cli_args("mp16", csv_dataset, mp16_dataset), f"--out={out}", "--output-shards=6",
              "--workers=2", "--num_shards=2"]
    procs = [subprocess.Popen([*common, f"--shard_index={i}"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert sum(f"wrote {N_IMAGES - 1} records in 6 shard(s)" in o for o, _ in outputs) >= 1
    assert_same_dataset(out, single["mp16"])
    bad = _cli("convert", *_cli_args("csv", csv_dataset, mp16_dataset), f"--out={tmp_path / 'x'}",
               "--shard_index=2", "--num_shards=2")
    assert bad.returncode == 1 and "share 2 of 2" in bad.stderr and "--shard_index" in bad.stderr


def test_shares_over_hosts_into_a_bucket(bucket, single, csv_dataset, mp16_dataset):
    """Shares written into ``gs://`` (the fake store of test_object_store): shards and manifests
    are single uploads, ``metadata.json`` comes last."""
    src = _source("csv", csv_dataset, mp16_dataset)
    for share in (1, 0):
        sources.convert_to_array_record(src, "gs://bucket/ds", num_shards=6, share_index=share,
                                        num_shares=2, log=quiet)
        if share == 1:
            assert "metadata.json" not in objects(bucket / "ds")
            with pytest.raises(FileNotFoundError, match="share 0 not finished"):
                sources.ArrayRecordSource("gs://bucket/ds")
    assert_same_dataset(bucket / "ds", single["csv"])
    assert FakeBucket.copies == 0


def _main(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "geojax.main", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def test_real_data_path_end_to_end(single, csv_dataset, tmp_path):
    """The README's "Real data, step by step" on the miniature fixtures: MP-16 shards converted
    over two hosts (``test_command_line_over_two_hosts_with_two_workers_each`` runs that command;
    here the converted folder of the reference), the CSV + folder as the evaluation set, then
    the commands every host runs (``launch/`` wraps them, ``tests/test_launch.py``): train from
    the ArrayRecord folders, export, predict."""
    eval_dir = tmp_path / "eval_ar"
    assert sources.main(["convert", *_cli_args("csv", csv_dataset, None), f"--out={eval_dir}",
                         "--workers=2"]) == 0
    workdir = tmp_path / "run"
    config = [f"--config={REPO}/configs/planet.py:runlocal", f"--workdir={workdir}",
              "--config.data.source=array_record", f"--config.data.train_dir={single['mp16']}",
              f"--config.data.eval_dir={eval_dir}", "--config.data.image_size=32",
              "--config.data.max_bad_fraction=0.1", "--config.stages.train.num_steps=2",
              "--config.stages.train.batch_size=8", "--config.eval.batch_size=8",
              "--config.eval.evaluators=('baseline','predictors')"]
    _main(*config)
    rows = json.loads((workdir / "results.json").read_text())["rows"]
    assert [name.split(" (")[0] for name in rows] == ["eval/constant", "eval/planet"]
    assert all(row["n"] == N_IMAGES - 1 and row["n_missing"] == 0 for row in rows.values())
    export_dir = tmp_path / "export"
    _main(*config, "--mode=export", f"--export_dir={export_dir}")
    assert (export_dir / "manifest.json").is_file() and (export_dir / "serving.jaxexport").is_file()
    photo = next(p for p in sorted(csv_dataset[1].iterdir()) if p.read_bytes() != _image_bytes(17))
    answers = _main(*config, "--mode=predict", f"--image={photo}").stdout.splitlines()
    [answer] = [json.loads(line) for line in answers]
    assert answer["file"] == str(photo) and -90 <= answer["lat"] <= 90 and -180 <= answer["lng"] <= 180
