"""Tests of geojax.data.sources: every reader on small files written here, bad input, ArrayRecord."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import grain
import msgpack
import numpy as np
import pytest
from PIL import Image, ImageFile

from geojax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENE_HEADER = "IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"


def _image(seed: int, shape=(24, 32)) -> np.ndarray:
    """A smooth image (JPEG keeps it close) that differs per seed."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = np.stack([xx * 4 + seed * 31 % 90, yy * 5 + seed * 17 % 90, (xx + yy) * 2 + seed * 53 % 90], axis=-1)
    return (20 + base).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _assert_image(image_bytes: bytes, expected: np.ndarray, exact: bool) -> None:
    decoded = sources.decode_image(image_bytes)
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(decoded, expected)
    else:
        assert np.abs(decoded.astype(int) - expected).mean() < 4.0


# ----------------------------------------------------------------------------------
# decode_image
# ----------------------------------------------------------------------------------


def test_decode_image_modes_and_errors(monkeypatch):
    rgb = _image(1)
    _assert_image(_encode(rgb, "PNG"), rgb, exact=True)
    _assert_image(_encode(rgb, "JPEG"), rgb, exact=False)
    for mode in ("L", "RGBA", "P"):  # all come back as (H, W, 3) uint8
        out = sources.decode_image(_encode(np.asarray(Image.fromarray(rgb).convert(mode)), "PNG"))
        assert out.shape == (24, 32, 3) and out.dtype == np.uint8 and out.flags.writeable
    jpeg = _encode(rgb, "JPEG")
    bad = {"random": np.random.default_rng(0).bytes(500), "truncated": jpeg[: len(jpeg) // 2],
           "no end marker": jpeg[:-2], "empty": b""}
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else turned it on
    for name, data in bad.items():
        with pytest.raises(sources.ImageDecodeError, match="img-7"):
            sources.decode_image(data, record_id="img-7")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ----------------------------------------------------------------------------------
# 1. CSV + image folder
# ----------------------------------------------------------------------------------


def _write_csv_dataset(tmp_path, n_good: int = 6):
    """Good JPEG/PNG rows with scene columns plus one row of each kind of bad input."""
    image_dir = tmp_path / "images"
    (image_dir / "sub").mkdir(parents=True)
    rows, truth = [SCENE_HEADER], {}
    for k in range(n_good):
        img_id = f"{1000269685 + k}_e60e9cdfb4_1125_78841376@N0{k}.jpg" if k % 2 else f"sub/{k}.png"
        array = _image(k)
        (image_dir / img_id).write_bytes(_encode(array, "PNG" if img_id.endswith(".png") else "JPEG"))
        lat, lng = -60.0 + 20.5 * k, -170.25 + 61.0 * k
        truth[img_id] = (lat, lng, array)
        rows.append(f"{img_id},author{k},{lat},{lng},{k % 3},{k},{300 + k},0.{k},0.5,0.25")
    rows.append("wrap.jpg,a,10.0,190.0,0,1,2,0.1,0.2,0.3")  # LON 190 -> -170, kept
    (image_dir / "wrap.jpg").write_bytes(_encode(_image(50), "JPEG"))
    truth["wrap.jpg"] = (10.0, -170.0, _image(50))
    (image_dir / "garbage.jpg").write_bytes(np.random.default_rng(1).bytes(400))  # kept: decoding fails later
    rows.append("garbage.jpg,a,1.0,2.0,0,1,2,0.1,0.2,0.3")
    jpeg = _encode(_image(60), "JPEG")
    (image_dir / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    rows.append("truncated.jpg,a,3.0,4.0,0,1,2,0.1,0.2,0.3")
    for img_id in ("nan.jpg", "text.jpg", "far.jpg", "swapped.jpg"):
        (image_dir / img_id).write_bytes(jpeg)
    rows += ["nan.jpg,a,nan,4.0,0,1,2,0.1,0.2,0.3",
             "text.jpg,a,north,4.0,0,1,2,0.1,0.2,0.3",
             "far.jpg,a,95.0,200.0,0,1,2,0.1,0.2,0.3",
             "swapped.jpg,a,120.5,45.0,0,1,2,0.1,0.2,0.3",  # |LAT| > 90, |LON| <= 90: swapped?
             "dead_flickr_id.jpg,a,5.0,6.0,0,1,2,0.1,0.2,0.3"]  # no file
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "meta.csv", image_dir, truth


def test_csv_image_folder_source(tmp_path):
    csv_path, image_dir, truth = _write_csv_dataset(tmp_path)
    src = sources.CsvImageFolderSource(csv_path, image_dir, max_bad_fraction=0.5)
    assert len(src) == len(truth) + 2
    records = {r["id"]: r for r in src}
    for img_id, (lat, lng, array) in truth.items():
        r = records[img_id]
        assert r["lat"] == lat and r["lng"] == lng and r["lat"].dtype == np.float64
        _assert_image(r["image_bytes"], array, exact=img_id.endswith(".png"))
    r = records["sub/2.png"]
    assert (r["user"], r["scene3"], r["scene16"], r["scene365"]) == ("author2", 2, 2, 302)
    assert r["prob_indoor"] == 0.2 and r["prob_urban"] == 0.25
    # Undecodable and truncated images are returned; decoding is the pipeline's job and raises.
    for img_id in ("garbage.jpg", "truncated.jpg"):
        with pytest.raises(sources.ImageDecodeError, match=img_id):
            sources.decode_image(records[img_id]["image_bytes"], record_id=img_id)
    skipped = src.report.skipped
    assert skipped["rows with NaN/infinite coordinates"] == ["nan.jpg"]
    assert skipped["rows with missing or non-numeric coordinates"] == ["text.jpg"]
    assert skipped["rows with |LAT| > 90"] == ["far.jpg"]
    assert skipped["rows with |LAT| > 90 (LAT/LON swapped?)"] == ["swapped.jpg"]
    assert skipped["rows whose image file is missing"] == ["dead_flickr_id.jpg"]
    assert src.report.num_skipped == 5 and src.report.kept == len(src)
    assert "dead_flickr_id.jpg" in src.report.summary() and "swapped.jpg" in src.report.summary()
    # Random access with negative indices, out of range, grain, pickling (grain workers).
    assert src[-1]["id"] == src[len(src) - 1]["id"]
    with pytest.raises(IndexError):
        src[len(src)]
    dataset = grain.MapDataset.source(src)
    assert [dataset[i]["id"] for i in range(3)] == [src[i]["id"] for i in range(3)]
    clone = pickle.loads(pickle.dumps(src))
    assert clone[3]["image_bytes"] == src[3]["image_bytes"] and clone[3]["id"] == src[3]["id"]


def test_csv_source_too_many_bad_rows_and_img_file_header(tmp_path):
    csv_path, image_dir, _ = _write_csv_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"too many bad rows \(5 of 14.*swapped\.jpg"):
        sources.CsvImageFolderSource(csv_path, image_dir)  # default 1 %
    with pytest.raises(ValueError, match="max_bad_fraction"):
        sources.CsvImageFolderSource(csv_path, image_dir, max_bad_fraction=2.0)
    (tmp_path / "files.csv").write_text("IMG_FILE,LAT,LON\nsub/0.png,1.5,2.5\n")
    src = sources.CsvImageFolderSource(tmp_path / "files.csv", image_dir)
    assert len(src) == 1 and src[0]["id"] == "sub/0.png" and "user" not in src[0]
    (tmp_path / "none.csv").write_text("IMG_ID,LAT,LON\nmissing.jpg,1,2\n")
    with pytest.raises(ValueError, match="too many bad rows"):
        sources.CsvImageFolderSource(tmp_path / "none.csv", image_dir)
    with pytest.raises(ValueError, match="no usable records"):
        sources.CsvImageFolderSource(tmp_path / "none.csv", image_dir, max_bad_fraction=1.0)


# ----------------------------------------------------------------------------------
# 2. MP-16 msgpack shards
# ----------------------------------------------------------------------------------


def _write_mp16(tmp_path):
    """Three shards (str keys, bytes keys, legacy raw packing; the last one truncated) + CSV."""
    shard_dir = tmp_path / "mp16"
    shard_dir.mkdir()
    images, shard_of = {}, {}
    for s in range(3):
        chunks = []
        for j in range(4):
            rid = f"{s:02x}/{j:02x}/{1000 + 10 * s + j}.jpg"
            images[rid] = _encode(_image(10 * s + j), "JPEG")
            shard_of[rid] = s
            if s == 0:
                chunks.append(msgpack.packb({"id": rid, "image": images[rid]}, use_bin_type=True))
            elif s == 1:
                chunks.append(msgpack.packb({b"id": rid.encode(), b"image": images[rid]}, use_bin_type=True))
            else:  # old msgpack: bytes and str share one type, JPEG bytes come back as "str"
                chunks.append(msgpack.packb({"image": images[rid], "id": rid}, use_bin_type=False))
        if s == 0:
            chunks.append(msgpack.packb({"id": "orphan.jpg", "image": b"\xff\xd8"}, use_bin_type=True))
        data = b"".join(chunks)
        if s == 2:
            data = data[:-10]  # the last record cut off
        (shard_dir / f"shard_{s}.msg").write_bytes(data)
    lost = f"02/03/{1000 + 23}.jpg"
    rows = ["IMG_ID,AUTHOR,LAT,LON"]
    for k, rid in enumerate(sorted(images)):
        lat = 200.0 if rid == "01/01/1011.jpg" else -45.0 + 7.5 * k
        rows.append(f"{rid},user{k},{lat},{10.0 * k - 60}")
    rows.append("never_downloaded.jpg,u,1,2")
    (tmp_path / "mp16.csv").write_text("\n".join(rows) + "\n")
    return shard_dir, tmp_path / "mp16.csv", images, shard_of, lost


def test_mp16_msgpack_source(tmp_path):
    shard_dir, csv_path, images, shard_of, lost = _write_mp16(tmp_path)
    src = sources.Mp16MsgpackSource(str(shard_dir / "shard_*.msg"), csv_path, max_bad_fraction=0.5)
    expected = [rid for rid in sorted(images) if rid not in (lost, "01/01/1011.jpg")]
    assert [r["id"] for r in src] == expected  # shard order
    for r in src:
        assert r["image_bytes"] == images[r["id"]] and r["user"].startswith("user")
    _assert_image(src[0]["image_bytes"], _image(0), exact=False)
    order = np.random.default_rng(0).permutation(len(src))
    assert [src[int(i)]["image_bytes"] for i in order] == [images[expected[i]] for i in order]
    rep = src.report
    assert rep.skipped["truncated records at the end of a shard"][0].startswith("shard_2.msg@")
    assert sorted(rep.skipped["metadata rows without an image"]) == sorted([lost, "never_downloaded.jpg"])
    assert rep.skipped["rows with |LAT| > 90 (LAT/LON swapped?)"] == ["01/01/1011.jpg"]  # image not re-reported
    assert rep.notes["image records without a metadata row"] == ["orphan.jpg"]
    assert rep.num_skipped == 4 and rep.rows == 14
    # Folder and explicit list forms; partial turns rows without an image into notes.
    part = sources.Mp16MsgpackSource([shard_dir / "shard_0.msg"], csv_path, max_bad_fraction=0.1, partial=True)
    assert len(part) == 4 and part.report.num_skipped == 1
    assert len(part.report.notes["metadata rows without an image (partial shards)"]) == 8
    with pytest.raises(ValueError, match="too many bad rows"):
        sources.Mp16MsgpackSource(shard_dir, csv_path)
    with pytest.raises(FileNotFoundError, match="no msgpack shards"):
        sources.Mp16MsgpackSource(str(tmp_path / "nothing_*.msg"), csv_path)
    # A shard rewritten after indexing is detected, not misread.
    clone = pickle.loads(pickle.dumps(src))
    (shard_dir / "shard_0.msg").write_bytes(b"\x00" * 4096)
    with pytest.raises(OSError, match="changed since it was indexed"):
        clone[0]


def test_mp16_corrupt_shard(tmp_path):
    good = msgpack.packb({"id": "a.jpg", "image": _encode(_image(1), "JPEG")}, use_bin_type=True)
    (tmp_path / "shard_0.msg").write_bytes(good + b"\xc1" + good)  # 0xc1: never used in msgpack
    (tmp_path / "shard_1.msg").write_bytes(good.replace(b"a.jpg", b"b.jpg") + b"\x05\x06")
    (tmp_path / "meta.csv").write_text("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,3,4\n")
    src = sources.Mp16MsgpackSource(tmp_path, tmp_path / "meta.csv", max_bad_fraction=1.0)
    assert [r["id"] for r in src] == ["a.jpg", "b.jpg"]
    corrupt = src.report.skipped["corrupt shard records (rest of the shard unreadable)"]
    assert [c.split(" ")[0] for c in corrupt] == [f"shard_0.msg@{len(good)}", f"shard_1.msg@{len(good)}"]


# ----------------------------------------------------------------------------------
# 3. OSV-5M
# ----------------------------------------------------------------------------------


def _write_osv5m(tmp_path):
    root = tmp_path / "osv5m"
    (root / "images" / "train" / "extracted").mkdir(parents=True)
    header = "id,latitude,longitude,thumb_original_url,country,sequence,region,sub-region,city"
    rows, truth = [header], {}
    for k in range(7):
        rid = str(1000000188741437 + k)
        truth[rid] = (-33.5 + 11 * k, 151.25 - 40 * k, _image(k))
        rows.append(f"{rid},{truth[rid][0]},{truth[rid][1]},http://x/{k},AU,seq{k},0{k},\"Sub, {k}\",City {k}")
    rows.append("999,10,20,u,FR,s,01,sub,Paris")  # no image anywhere
    rows.append("998,nan,20,u,FR,s,01,sub,Paris")  # bad coordinates
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    ids = list(truth)
    with zipfile.ZipFile(root / "images" / "train" / "00.zip", "w") as zf:
        for rid in ids[:3]:
            zf.writestr(f"train/00/{rid}.jpg", _encode(truth[rid][2], "JPEG"))
        zf.writestr("train/00/12345.jpg", _encode(_image(99), "JPEG"))  # not in the CSV
        zf.writestr("train/00/readme.txt", "not an image")
    with zipfile.ZipFile(root / "images" / "train" / "01.zip", "w") as zf:
        for rid in ids[3:6]:
            zf.writestr(f"{rid}.jpg", _encode(truth[rid][2], "JPEG"))
    (root / "images" / "train" / "extracted" / f"{ids[6]}.jpg").write_bytes(_encode(truth[ids[6]][2], "JPEG"))
    return root, truth


def test_osv5m_source(tmp_path, monkeypatch):
    root, truth = _write_osv5m(tmp_path)
    src = sources.Osv5mSource(root, "train", max_bad_fraction=0.5)
    assert [r["id"] for r in src] == list(truth)
    for r in src:
        lat, lng, array = truth[r["id"]]
        assert r["lat"] == lat and r["lng"] == lng
        _assert_image(r["image_bytes"], array, exact=False)
    r = src[1]
    assert (r["country"], r["region"], r["sub-region"], r["city"]) == ("AU", "01", "Sub, 1", "City 1")
    assert "sequence" not in r
    assert src.report.skipped == {"rows with NaN/infinite coordinates": ["998"], "rows without an image": ["999"]}
    assert src.report.notes["images without a metadata row"] == ["12345"]
    every = sources.Osv5mSource(root, "train", extra_columns=None, max_bad_fraction=0.5)
    assert every[0]["sequence"] == "seq0" and every[0]["thumb_original_url"] == "http://x/0"
    # One ZipFile per file per process; a forked worker (new pid) reopens its own.
    first = src._files.get(src.zip_paths[0])
    assert src._files.get(src.zip_paths[0]) is first
    monkeypatch.setattr(os, "getpid", lambda: -12345)
    assert src[0]["image_bytes"] == src._files.get(src.zip_paths[0]).read(f"train/00/{src[0]['id']}.jpg")
    assert src._files.get(src.zip_paths[0]) is not first
    monkeypatch.undo()
    clone = pickle.loads(pickle.dumps(src))
    assert clone[4]["image_bytes"] == src[4]["image_bytes"]
    with pytest.raises(ValueError, match="split"):
        sources.Osv5mSource(root, "val")
    with pytest.raises(ValueError, match="too many bad rows"):
        sources.Osv5mSource(root, "train")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sources_read_in_forked_worker(tmp_path):
    """Handles opened in the parent are not shared: a forked child reads through its own."""
    import multiprocessing  # pylint: disable=import-outside-toplevel

    root, _ = _write_osv5m(tmp_path)
    osv = sources.Osv5mSource(root, "train", max_bad_fraction=0.5)
    sources.convert_to_array_record(osv, tmp_path / "ar", num_shards=2, log=lambda _: None)
    ars = sources.ArrayRecordSource(tmp_path / "ar")
    expected = [(r["id"], r["image_bytes"]) for r in osv]  # parent opens every zip and reader
    assert [(r["id"], r["image_bytes"]) for r in ars] == expected
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        order = list(reversed(range(len(osv))))
        queue.put(([(osv[i]["id"], osv[i]["image_bytes"]) for i in order],
                   [(ars[i]["id"], ars[i]["image_bytes"]) for i in order],
                   osv._files._pid == os.getpid(), ars._pid == os.getpid()))

    proc = ctx.Process(target=child)
    proc.start()
    got_osv, got_ars, osv_reopened, ars_reopened = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and osv_reopened and ars_reopened
    assert got_osv == got_ars == expected[::-1]


# ----------------------------------------------------------------------------------
# 4. ArrayRecord conversion
# ----------------------------------------------------------------------------------


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key] and type(a[key]) is type(b[key]), key


def test_array_record_round_trip(tmp_path):
    csv_path, image_dir, _ = _write_csv_dataset(tmp_path)
    src = sources.CsvImageFolderSource(csv_path, image_dir, max_bad_fraction=0.5)
    meta = sources.convert_to_array_record(src, tmp_path / "ar", num_shards=3, check_images=False,
                                           log=lambda _: None)
    ars = sources.ArrayRecordSource(tmp_path / "ar")
    assert len(ars) == len(src) == meta["count"] and len(os.listdir(tmp_path / "ar")) == 6
    np.testing.assert_array_equal(ars.lat, src.lat)  # coordinates.npy, no image read
    np.testing.assert_array_equal(ars.lng, src.lng)
    os.remove(tmp_path / "ar" / "coordinates.npy")  # a dataset converted without it: read records
    np.testing.assert_array_equal(sources.ArrayRecordSource(tmp_path / "ar").lat, src.lat)
    sequential = list(ars)
    for a, b in zip(sequential, src):
        _same(a, b)
    order = np.random.default_rng(0).permutation(len(ars))
    for i in order:
        _same(ars[int(i)], sequential[i])
    batch = ars.__getitems__(order[:4].tolist())
    assert [r["id"] for r in batch] == [sequential[i]["id"] for i in order[:4]]
    on_disk = json.loads((tmp_path / "ar" / "metadata.json").read_text())
    assert on_disk["fields"]["image_bytes"] == "bytes" and on_disk["fields"]["scene365"] == "int"
    assert "swapped.jpg" in on_disk["source_report"]
    report = json.loads((tmp_path / "ar" / "report.json").read_text())
    assert report["source"]["skipped"]["rows whose image file is missing"] == ["dead_flickr_id.jpg"]
    assert grain.MapDataset.source(ars)[2]["id"] == sequential[2]["id"]
    assert pickle.loads(pickle.dumps(ars))[1]["id"] == sequential[1]["id"]
    # check_images (the default) drops (and reports) the undecodable ones.
    sources.convert_to_array_record(src, tmp_path / "checked", log=lambda _: None)
    checked = sources.ArrayRecordSource(tmp_path / "checked")
    assert len(checked) == len(src) - 2
    conv = json.loads((tmp_path / "checked" / "report.json").read_text())["conversion"]
    assert sorted(conv["skipped"]["undecodable images"]) == ["garbage.jpg", "truncated.jpg"]


class _DecodedSource:
    """A GeoWorld-like split: decoded images, numpy scalars, an array field."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": _image(i, (16, 20)), "lat": np.float64(i - 40.5), "lng": np.float32(i * 3),
                "id": f"geoworld-{i}", "user": f"u{i % 3}", "timestamp": np.int64(1_600_000_000 + i),
                "scene": i % 3, "album": np.arange(i, i + 4, dtype=np.int32), "indoor": bool(i % 2)}


def test_array_record_decoded_images(tmp_path):
    src = _DecodedSource(9)
    sources.convert_to_array_record(src, tmp_path / "png", log=lambda _: None)
    sources.convert_to_array_record(src, tmp_path / "jpeg", image_format="jpeg", log=lambda _: None)
    png, jpeg = sources.ArrayRecordSource(tmp_path / "png"), sources.ArrayRecordSource(tmp_path / "jpeg")
    for i in range(len(src)):
        rec, expected = png[i], src[i]
        _assert_image(rec["image_bytes"], expected["image"], exact=True)
        _assert_image(jpeg[i]["image_bytes"], expected["image"], exact=False)
        assert rec["lat"] == expected["lat"] and rec["lng"] == expected["lng"] and rec["id"] == expected["id"]
        assert rec["timestamp"] == 1_600_000_000 + i and rec["indoor"] is bool(i % 2) and rec["user"] == f"u{i % 3}"
        np.testing.assert_array_equal(rec["album"], expected["album"])
        assert rec["album"].dtype == np.int32 and "image" not in rec
    assert png.metadata["decoded_images_encoded_as"] == "png" and png.metadata["fields"]["album"] == "ndarray"

    class Bad(_DecodedSource):
        def __getitem__(self, i):
            return dict(super().__getitem__(i), extra=object())

    with pytest.raises(TypeError, match="extra"):
        sources.convert_to_array_record(Bad(2), tmp_path / "bad", log=lambda _: None)
    assert not (tmp_path / "bad").exists()


def test_array_record_crash_safety(tmp_path, monkeypatch):
    src = _DecodedSource(12)
    out = tmp_path / "data" / "ds"
    real, calls = sources.array_record._serialize_record, []

    def failing(record, image_format):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("simulated crash")
        return real(record, image_format)

    monkeypatch.setattr(sources.array_record, "_serialize_record", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sources.convert_to_array_record(src, out, num_shards=3, log=lambda _: None)
    assert not out.exists() and os.listdir(tmp_path / "data") == []  # no dataset, no leftovers
    monkeypatch.setattr(sources.array_record, "_serialize_record", real)
    sources.convert_to_array_record(src, out, num_shards=3, log=lambda _: None)
    assert len(sources.ArrayRecordSource(out)) == 12
    with pytest.raises(FileExistsError, match="overwrite"):
        sources.convert_to_array_record(_DecodedSource(5), out, log=lambda _: None)
    # A failed overwrite leaves the old dataset intact; a finished one replaces it.
    monkeypatch.setattr(sources.array_record, "_serialize_record", failing)
    calls.clear()
    with pytest.raises(RuntimeError):
        sources.convert_to_array_record(_DecodedSource(10), out, overwrite=True, log=lambda _: None)
    assert len(sources.ArrayRecordSource(out)) == 12
    monkeypatch.setattr(sources.array_record, "_serialize_record", real)
    sources.convert_to_array_record(_DecodedSource(5), out, overwrite=True, log=lambda _: None)
    assert len(sources.ArrayRecordSource(out)) == 5 and os.listdir(tmp_path / "data") == ["ds"]
    # A folder without metadata.json (e.g. a copy interrupted) is not a dataset.
    os.remove(out / "metadata.json")
    with pytest.raises(FileNotFoundError, match="not a complete geojax ArrayRecord dataset"):
        sources.ArrayRecordSource(out)


_KILLED_CONVERSION = """
import sys, time
import numpy as np
from geojax.data import sources

class Slow:
    def __len__(self):
        return 50

    def __getitem__(self, i):
        if i == 20:
            print("halfway", flush=True)
            time.sleep(60)
        return {"image": np.full((8, 8, 3), i, np.uint8), "lat": 1.0, "lng": 2.0, "id": str(i)}

sources.convert_to_array_record(Slow(), sys.argv[1], num_shards=5)
"""


def test_array_record_kill_9_mid_conversion(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_CONVERSION, str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines == [f"1 of 5 shards written (of {out})", f"2 of 5 shards written (of {out})", "halfway"]
    finally:
        proc.kill()  # SIGKILL: no exception handler runs
        proc.wait(timeout=30)
    assert not out.exists()
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".ds.tmp-")  # hidden, never a dataset
    with pytest.raises(FileNotFoundError):
        sources.ArrayRecordSource(out)
    with pytest.raises(FileNotFoundError, match="not a complete"):
        sources.ArrayRecordSource(tmp_path / leftovers[0])


def test_command_line_converts_csv_dataset(tmp_path):
    csv_path, image_dir, truth = _write_csv_dataset(tmp_path)
    cmd = [sys.executable, "-m", "geojax.data.sources", "convert", "--format=csv", f"--csv={csv_path}",
           f"--images={image_dir}", f"--out={tmp_path / 'ar'}", "--max-bad-fraction=0.5", "--output-shards=2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "swapped.jpg" in out.stdout and "dead_flickr_id.jpg" in out.stdout and "wrote 7 records" in out.stdout
    assert "2 undecodable images (e.g. garbage.jpg, truncated.jpg)" in out.stdout  # checked by default
    ars = sources.ArrayRecordSource(tmp_path / "ar")
    assert len(ars) == len(truth) and ars.metadata["num_shards"] == 2
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert sources.main(["convert", "--format=mp16", f"--out={tmp_path / 'x'}"]) == 1  # --shards missing
    assert sources.main(["info", str(tmp_path / "ar")]) == 0
