"""002's staged run: M1 (a Delaunay-mesh classifier) → M2 (time) → M3 (user albums) → tables.

:func:`train_and_evaluate` runs the stages of a config with a ``config.meta`` section
(``configs/delaunay_meta.py``), each resumed from the workdir:

1. **M1** (002 §3.1): the config's ordinary training (``geojax.training.train``, Orbax
   checkpoints, resumable at any step) of a classifier over one Delaunay mesh
   (``config.meta.group``).
2. **M1 outputs**: M1's class probabilities on the *metadata split* (002 §A: "no data used
   to train M1 was used to also train M2 and M3"; :func:`metadata_split`), whose users are
   dealt to three parts (``meta.fractions``): M2/M3 training, early-stopping validation,
   evaluation (002: "a new random split"). Saved to ``meta/m1_outputs.msgpack``.
3. **M2** (002 §3.2, ``geojax.models.meta.TimeModel``) on the training users: ``meta/m2.msgpack``.
4. **M3** (002 §3.3, ``AlbumModel``) on the training users' albums of 24: ``meta/m3.msgpack``.
5. **Tables** on the evaluation users (002 Tables 3, 6, 7), all photos and outdoor only
   (§4.1.2; which photos are outdoor: :func:`metadata_split`): rows M1 (cell centroid), M1
   (imagery centroid), M2, user averaging (the class of highest mean M2 probability over each user's photos, given to
   all of them; 002 §3.3's control), M3, and the best possible (oracle) with cell and imagery
   centroids; columns: accuracy at 1 / 25 / 200 / 750 / 2500 km, mean and median km, KL
   divergence and entropies of the predicted vs true class frequencies (+1 smoothing), country
   accuracy. Then the paired Wilcoxon tests M2 vs M1 and M3 vs M2 (per-photo km errors).
   Written to ``results.json`` and ``results.md`` (``geojax.evaluation.report``).

**The metadata split** (``meta.source``): ``"geoworld"`` (default), a GeoWorld ``train``
split of ``meta.split_size`` photos drawn with seed ``data.seed + meta.seed_offset`` (disjoint
from M1's GeoWorld training photos and evaluation splits), outdoor where ``scene3 > 0``; or
real photos M1 never saw, whatever ``config.data.source`` M1 trains on: ``"csv"``
(``meta.csv`` + ``meta.images``, read by ``CsvImageFolderSource``) or ``"array_record"``
(``meta.dir``, converted from such a CSV). Their records need ``user`` (an ``AUTHOR``
column) and ``timestamp`` (a posting-time column, ``metadata_features.POSTING_TIME_COLUMNS``;
text without an offset is read on ``meta.text_utc_offset_hours``); a split without either is
refused before anything is computed. Outdoor: ``Prob_indoor <= 0.5`` when the records have
``prob_indoor``, else ``scene3 > 0`` (``S3_Label``), else there is no outdoor-only table
(logged).

Every stage's output is written atomically with a stamp of what it was computed from (the M1
weights' digest, the split, the stage's settings); a run killed at any moment reuses each
finished stage whose stamp matches and recomputes the rest (a file that does not load, or was
made from something else, is recomputed with a log line). Predictions place a class at its
``meta.centroid`` (imagery centroid by default, 002 §3.1.2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from geojax import fileio
from geojax.data import datasets, geoworld, sources
from geojax.data import metadata_features as mf
from geojax.data.geoworld import people
from geojax.evaluation import metrics, oracle, report, statistics
from geojax.geo.gazetteer import Gazetteer
from geojax.inference import features
from geojax.models import meta as meta_models
from geojax.partitions import base
from geojax.training import backbone_features
from geojax.training import meta as meta_training
from geojax.training import train as train_lib

PARTS = ("train", "validation", "evaluation")  # meta.fractions, in this order
META_SOURCES = ("geoworld", "csv", "array_record")  # config.meta.source
EXTRA_COLUMNS = ("mean_km", "median_km", "kl", "entropy_pred", "entropy_true", "country_acc", "n")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check(config: ml_collections.ConfigDict) -> None:
    mcfg = config.meta
    source = mcfg.get("source", "geoworld")
    if source not in META_SOURCES:
        raise train_lib.ConfigError(f"config.meta.source={source!r}: use one of {META_SOURCES} "
                                    "(where the metadata split of M2 and M3 comes from).")
    needed = {"csv": ("csv", "images"), "array_record": ("dir",)}.get(source, ())
    missing = [f"config.meta.{k}" for k in needed if not mcfg.get(k)]
    if missing:
        raise train_lib.ConfigError(f"config.meta.source={source!r} needs "
                                    + " and ".join(missing) + ".")
    for key, found in (("csv", fileio.isfile), ("images", fileio.isdir), ("dir", fileio.isdir)):
        if key in needed and not found(str(mcfg.get(key))):
            raise train_lib.ConfigError(f"config.meta.{key}={mcfg.get(key)} does not exist "
                                        f"(config.meta.source={source!r}).")
    same = {"csv": ("csv", "train_csv"), "array_record": ("dir", "train_dir")}.get(source)
    if (same and config.data.source == source and mcfg.get(same[0])
            and os.path.abspath(str(mcfg.get(same[0]))) == os.path.abspath(
                str(config.data.get(same[1], "")))):
        raise train_lib.ConfigError(
            f"config.meta.{same[0]} is M1's training data (config.data.{same[1]}); 002 §A trains "
            "M2 and M3 on photos M1 never saw: give a metadata split of other photos.")
    offset = float(mcfg.get("text_utc_offset_hours", 0.0))
    if not abs(offset) <= 14:
        raise train_lib.ConfigError(f"config.meta.text_utc_offset_hours={offset}: the clock of "
                                    "posting times written without an offset, within ±14 h.")
    group = mcfg.group
    if group not in config.partitions or config.partitions[group].scheme != "delaunay":
        raise train_lib.ConfigError(f"config.meta.group={group!r} must name a 'delaunay' "
                                    f"partition group of config.partitions ({list(config.partitions)}).")
    fractions = tuple(mcfg.fractions)
    if len(fractions) != len(PARTS) or min(fractions) <= 0:
        raise train_lib.ConfigError(f"config.meta.fractions={fractions}: give three positive "
                                    f"shares of the users, for {PARTS}.")
    if mcfg.centroid not in ("imagery", "cell"):
        raise train_lib.ConfigError(f"config.meta.centroid={mcfg.centroid!r}: use "
                                    "'imagery' or 'cell'.")


# ---------------------------------------------------------------------------- the metadata split
@dataclasses.dataclass(frozen=True)
class MetadataSplit:
    """The photos M2 and M3 train and are evaluated on, with what they need per photo."""

    source: Any  # random-access records with images (M1 runs on them)
    lat: np.ndarray  # (n,) float64 degrees
    lng: np.ndarray
    user: np.ndarray  # (n,) int64 user codes (0..users-1; real user names sorted)
    timestamp: np.ndarray  # (n,) int64 Unix seconds UTC
    outdoor: np.ndarray | None  # (n,) bool, None when the records say nothing about scenes
    outdoor_rule: str  # what ``outdoor`` was computed from, or why there is none
    stamp: Any  # what the split was made from (part of its M1 outputs' stamp)
    description: str


def _record_columns(source: Any, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Record fields ``keys`` of every record of ``source``: from the reader's index when it
    has one (``CsvImageFolderSource.column``), else read record by record (ArrayRecord)."""
    if hasattr(source, "column"):
        found = {key: source.column(key) for key in keys}
        return {key: values for key, values in found.items() if values is not None}
    values: dict[str, list[Any]] = {key: [] for key in keys}
    for start in range(0, len(source), 1024):
        for record in source.__getitems__(range(start, min(start + 1024, len(source)))):
            for key in keys:
                values[key].append(record.get(key))
    return {key: np.asarray(v) for key, v in values.items() if v and all(x is not None for x in v)}


def _missing_metadata(what: str, have: Sequence[str]) -> str | None:
    missing = []
    if "user" not in have:
        missing.append("users (an AUTHOR column: the photographer's id, one per photo, as in "
                       "MP-16's metadata)")
    if "timestamp" not in have:
        missing.append("posting times (a column named one of "
                       + ", ".join(c.upper() for c in mf.POSTING_TIME_COLUMNS)
                       + ": Unix seconds or ISO 8601 text; YFCC100M's dateuploaded joined by "
                       "photo id is 002's 'date posted')")
    if not missing:
        return None
    return (f"{what} has no {' and no '.join(missing)}; 002's M2 reads each photo's posting "
            "time and M3 groups photos by user. Add the column(s) and, for an ArrayRecord "
            "dataset, convert it again.")


def metadata_split(config: ml_collections.ConfigDict) -> MetadataSplit:
    """The metadata split of ``config.meta.source`` (see the module docstring). Raises
    ``ConfigError``, before anything is computed, when its records lack users or posting
    times."""
    mcfg = config.meta
    kind = mcfg.get("source", "geoworld")
    image_size = int(config.data.image_size)
    if kind == "geoworld":
        seed = int(config.data.seed) + int(mcfg.seed_offset)
        split = geoworld.GeoWorld("train", int(mcfg.split_size), seed, image_size=image_size)
        return MetadataSplit(
            source=split, lat=np.asarray(split.lat), lng=np.asarray(split.lng),
            user=np.asarray(split.user, np.int64), timestamp=np.asarray(split.timestamp, np.int64),
            outdoor=mf.outdoor_mask(scene3=split.scene3), outdoor_rule="GeoWorld scene3 > 0",
            stamp=[int(mcfg.split_size), seed, image_size],
            description=f"{len(split)} GeoWorld photos (seed {seed})")
    if kind == "csv":
        what = f"config.meta.csv={mcfg.csv}"
        source = sources.CsvImageFolderSource(
            mcfg.csv, mcfg.images, max_bad_fraction=datasets.max_bad_fraction(config.data),
            default_utc_offset_hours=float(mcfg.get("text_utc_offset_hours", 0.0)))
        have = [key for key in ("user", "timestamp") if source.column(key) is not None]
    else:
        what = f"config.meta.dir={mcfg.dir}"
        source = sources.ArrayRecordSource(mcfg.dir)
        have = [key for key in ("user", "timestamp") if key in source.metadata.get("fields", {})]
    problem = _missing_metadata(what, have)
    if problem:
        raise train_lib.ConfigError(problem)
    columns = _record_columns(source, ("user", "timestamp", "prob_indoor", "scene3"))
    problem = _missing_metadata(f"some records of {what}", list(columns))
    if problem:
        raise train_lib.ConfigError(problem)
    names, user = np.unique(np.asarray(columns["user"]).astype(str), return_inverse=True)
    timestamp = np.asarray(columns["timestamp"], np.int64)
    if "prob_indoor" in columns:
        outdoor, rule = mf.outdoor_mask(prob_indoor=columns["prob_indoor"]), "Prob_indoor <= 0.5"
    elif "scene3" in columns:
        outdoor, rule = mf.outdoor_mask(scene3=columns["scene3"]), "S3_Label > 0"
    else:
        outdoor, rule = None, ("its records have no Prob_indoor or S3_Label column, so the "
                               "outdoor-only rows are left out")
    lat, lng = datasets.coordinates_of(source)
    digest = hashlib.sha256()
    for array in (lat, lng, user, timestamp, names.astype("U"),
                  np.zeros(0) if outdoor is None else outdoor):
        digest.update(np.ascontiguousarray(array).tobytes())
    return MetadataSplit(
        source=source, lat=lat, lng=lng, user=user.reshape(-1).astype(np.int64),
        timestamp=timestamp, outdoor=outdoor, outdoor_rule=rule,
        stamp=_digest([kind, what, image_size, digest.hexdigest()]),
        description=f"{len(source)} photos of {what}")


# ---------------------------------------------------------------------------- stage files
def _save(path: str, payload: dict[str, Any], log: Callable[[str], None]) -> None:
    fileio.makedirs(os.path.dirname(path))
    fileio.atomic_write(path, flax.serialization.msgpack_serialize(payload))
    log(f"[meta] saved {path}")


def _fitted(path: str, stamp: str, name: str, is_main: bool, log: Callable[[str], None],
            fit: Callable[[], Any]) -> Any:
    """The variables of stage ``name``: reused from ``path`` when made from ``stamp``, else
    ``fit()`` (a ``training.meta`` fit result), saved by process 0."""
    saved = _load(path, stamp, log)
    if saved is not None:
        return saved["variables"]
    t0 = time.perf_counter()
    fitted = fit()
    if is_main:
        _save(path, {"stamp": stamp, "variables": fitted.variables,
                     "best_epoch": fitted.best_epoch}, log)
    log(f"[meta] {name} trained ({time.perf_counter() - t0:.1f}s; best epoch "
        f"{fitted.best_epoch + 1})")
    return fitted.variables


def _load(path: str, stamp: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The payload of a stage file made from ``stamp``, else None (with a log line why)."""
    if not fileio.exists(path):
        return None
    try:
        payload = flax.serialization.msgpack_restore(fileio.read_bytes(path))
    except Exception as err:  # noqa: BLE001 - any undecodable file is recomputed
        log(f"[meta] recomputing {path}: it does not load ({type(err).__name__}: {err})")
        return None
    if not isinstance(payload, dict) or payload.get("stamp") != stamp:
        log(f"[meta] recomputing {path}: made from other inputs or settings")
        return None
    log(f"[meta] reusing {path}")
    return payload


def _fit_config(section: Any, seed: int) -> meta_training.FitConfig:
    return meta_training.FitConfig(epochs=int(section.epochs), batch_size=int(section.batch_size),
                                   learning_rates=tuple(float(r) for r in section.learning_rates),
                                   patience=int(section.patience), seed=seed)


# ---------------------------------------------------------------------------- M1 outputs
def m1_probabilities(ctx: train_lib.RunContext, model: Any, state: Any, source: Any,
                     head: str) -> np.ndarray:
    """``(len(source), N)`` float32 softmax of M1's ``head`` on every record of ``source``
    (the eval pipeline's centre crop; an unreadable record gets the uniform distribution)."""
    weights = {"params": state.params, "batch_stats": state.batch_stats}
    heads = model.heads
    apply = jax.jit(lambda p, f: jax.nn.softmax(heads.apply({"params": p}, f, train=False)[head]))
    out = []
    for part in backbone_features.iter_backbone_features(ctx.config, ctx.mesh, weights, source,
                                                 desc="[meta] M1 on the metadata split"):
        probs = np.array(apply(state.params["heads"], part.features), np.float32)
        probs[~part.valid] = 1.0 / probs.shape[1]
        out.append(probs)
    return np.concatenate(out)


# ---------------------------------------------------------------------------- rows
class _Scorer:
    """Rows of one table: the figures of predicted classes (or points) on a set of photos."""

    def __init__(self, partition: base.Partition, lat: np.ndarray, lng: np.ndarray,
                 true_class: np.ndarray, centroid: str, gazetteer: Gazetteer):
        self.partition, self.lat, self.lng = partition, lat, lng
        self.true_class, self.centroid, self.gazetteer = true_class, centroid, gazetteer
        self.true_country = statistics.countries(lat, lng, gazetteer)

    def points(self, pred_class: np.ndarray, centroid: str | None = None) -> np.ndarray:
        return self.partition.centroids(centroid or self.centroid)[pred_class]

    def figures(self, pred_class: np.ndarray | None, pred: np.ndarray) -> dict[str, Any]:
        out = dict(metrics.evaluate(pred[:, 0], pred[:, 1], self.lat, self.lng))
        labelled = self.true_class >= 0
        if pred_class is not None:
            stats = statistics.class_frequency_statistics(
                pred_class[labelled], self.true_class[labelled], self.partition.num_classes)
            out.update(kl=stats["kl"], entropy_pred=stats["entropy_pred"],
                       entropy_true=stats["entropy_true"])
        out["country_acc"] = statistics.country_accuracy(
            pred[:, 0], pred[:, 1], self.lat, self.lng, self.gazetteer,
            true_country=self.true_country)
        return out


def user_average_classes(probs: np.ndarray, user: np.ndarray) -> np.ndarray:
    """002 §3.3's user averaging: each photo gets the class of highest mean probability over all
    photos of its user (vectorised: a scatter-add of the rows per user)."""
    users, inverse = np.unique(user, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((users.size, probs.shape[1]), np.float64)
    np.add.at(sums, inverse, probs)
    return sums.argmax(1)[inverse]


def _albums_of(rows: np.ndarray, user: np.ndarray, timestamp: np.ndarray, length: int
               ) -> geoworld.Albums:
    """Albums of the photos ``rows`` (indices into the split), as indices into the split."""
    albums = people.albums(user[rows], timestamp[rows], length)
    index = np.where(albums.index >= 0, rows[np.maximum(albums.index, 0)], -1)
    return geoworld.Albums(index=index, user=albums.user, length=albums.length)


def _errors_km(pred: np.ndarray, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    return metrics.distances_km(pred[:, 0], pred[:, 1], lat, lng)


# ---------------------------------------------------------------------------- the run
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) M1 → M1 outputs → M2 → M3 and writes the tables; returns
    ``{"tables": {split: {row: figures}}, "tests": {name: figures}}``."""
    t_start = time.perf_counter()
    _check(config)
    mcfg = config.meta
    split = metadata_split(config)  # refuses a split without users or times, before M1
    # ---- M1: the config's checkpointed training (resumes; a finished stage is not retrained)
    ctx, model, state = train_lib.train(config, workdir, log=log)
    log = ctx.log
    partition = ctx.groups[mcfg.group][0]
    n_classes = partition.num_classes
    t_m1 = time.perf_counter()
    m1_digest = features.weights_digest({"params": {"backbone": state.params},
                                         "batch_stats": {"backbone": state.batch_stats}})
    # ---- the metadata split's users dealt to its parts
    seed = int(config.data.seed) + int(mcfg.seed_offset)
    part = mf.split_by_user(split.user, tuple(mcfg.fractions), seed)
    rows = {name: np.flatnonzero(part == k) for k, name in enumerate(PARTS)}
    log(f"[meta] metadata split: {split.description}, users dealt to "
        + ", ".join(f"{name} {rows[name].size} photos / {np.unique(split.user[rows[name]]).size} "
                    f"users" for name in PARTS))
    if split.outdoor is None:
        log(f"[meta] no outdoor-only table: {split.outdoor_rule}.")
    else:
        log(f"[meta] outdoor: {split.outdoor_rule} ({int(split.outdoor.sum())} of "
            f"{len(split.outdoor)} photos)")
    lat, lng = split.lat, split.lng
    label = partition.assign(lat, lng).astype(np.int64)
    meta_dir = os.path.join(workdir, "meta")
    # ---- M1 outputs
    m1_stamp = _digest({"m1": m1_digest, "split": split.stamp, "head": partition.name})
    path = os.path.join(meta_dir, "m1_outputs.msgpack")
    saved = _load(path, m1_stamp, log)
    if saved is None:
        t0 = time.perf_counter()
        probs = m1_probabilities(ctx, model, state, split.source, partition.name).astype(np.float16)
        if ctx.is_main:
            _save(path, {"stamp": m1_stamp, "probs": probs}, log)
        log(f"[meta] M1 probabilities of {len(split.source)} photos over {n_classes} cells "
            f"({time.perf_counter() - t0:.1f}s)")
    else:
        probs = np.asarray(saved["probs"])
    probs = probs.astype(np.float32)
    times = mf.time_features(split.timestamp, float(mcfg.utc_offset_hours))
    x = np.asarray(meta_models.time_model_inputs(probs, times, k=int(mcfg.top_k)))
    # ---- M2
    m2_model = meta_models.TimeModel(n_classes, width=int(mcfg.m2.width),
                                     dropout_rate=float(mcfg.m2.dropout_rate))
    m2_stamp = _digest({"inputs": m1_stamp, "time": float(mcfg.utc_offset_hours),
                        "top_k": int(mcfg.top_k), "parts": [tuple(mcfg.fractions), seed],
                        "m2": mcfg.m2.to_dict()})
    path = os.path.join(meta_dir, "m2.msgpack")
    m2_vars = _fitted(path, m2_stamp, "M2", ctx.is_main, log, lambda: meta_training.fit_time_model(
        m2_model, x[rows["train"]], label[rows["train"]], x[rows["validation"]],
        label[rows["validation"]], _fit_config(mcfg.m2, seed), log=log))
    # ---- M3
    length = int(mcfg.m3.album_length)
    m3_model = meta_models.AlbumModel(n_classes, hidden=int(mcfg.m3.hidden),
                                      dropout_rate=float(mcfg.m3.dropout_rate))
    albums = {name: _albums_of(rows[name], split.user, split.timestamp, length) for name in PARTS}
    m3_stamp = _digest({"inputs": m2_stamp, "m3": mcfg.m3.to_dict()})
    path = os.path.join(meta_dir, "m3.msgpack")
    m3_vars = _fitted(path, m3_stamp, "M3", ctx.is_main, log, lambda: meta_training.fit_album_model(
        m3_model, x, label, albums["train"].index, albums["train"].user,
        albums["validation"].index, _fit_config(mcfg.m3, seed), log=log))
    t_models = time.perf_counter()
    # ---- tables on the evaluation users
    ev = rows["evaluation"]
    m1_class = probs[ev].argmax(1)
    m2_probs = meta_training.predict_time_model(m2_model, m2_vars, x[ev])
    m3_probs = meta_training.predict_album_model(m3_model, m3_vars, x, albums["evaluation"].index)[ev]
    classes = {
        "M1 (cell centroid)": (m1_class, "cell"),
        "M1 (imagery centroid)": (m1_class, "imagery"),
        "M2 time inputs": (m2_probs.argmax(1), None),
        "user averaging (M2)": (user_average_classes(m2_probs, split.user[ev]), None),
        "M3 user albums": (m3_probs.argmax(1), None),
    }
    subsets = [("all photos", np.ones(ev.size, bool))]
    if split.outdoor is not None:
        subsets.append(("outdoor only", split.outdoor[ev]))
    gazetteer = Gazetteer.load()
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    tests: dict[str, dict[str, Any]] = {}
    for subset, keep in subsets:
        name = f"metadata split, evaluation users, {subset}"
        scorer = _Scorer(partition, lat[ev][keep], lng[ev][keep], label[ev][keep],
                         str(mcfg.centroid), gazetteer)
        table, points = {}, {}
        for row, (cls, centroid) in classes.items():
            points[row] = scorer.points(cls[keep], centroid)
            table[row] = scorer.figures(cls[keep], points[row])
        for centroid in ("cell", "imagery"):
            p_lat, p_lng = oracle.oracle_predictions(partition, scorer.lat, scorer.lng,
                                                     centroid=centroid)
            oracle_class = np.where(scorer.true_class >= 0, scorer.true_class, 0)
            table[f"best possible ({centroid} centroid)"] = scorer.figures(
                oracle_class, np.stack([p_lat, p_lng], -1))
        tables[name] = table
        errors = {r: _errors_km(points[r], scorer.lat, scorer.lng) for r in points}
        m1_row = f"M1 ({mcfg.centroid} centroid)"
        for a, b in (("M2 time inputs", m1_row), ("M3 user albums", "M2 time inputs")):
            test = statistics.paired_wilcoxon(errors[a], errors[b])
            tests[f"{subset}: {a} vs {b}"] = test._asdict()
    _write(tables, tests, workdir, config, ctx.is_main, log)
    log(f"[meta] done: M1 {t_m1 - t_start:.0f}s, M1 outputs + M2 + M3 {t_models - t_m1:.0f}s, "
        f"tables {time.perf_counter() - t_models:.0f}s; {time.perf_counter() - t_start:.0f}s "
        f"in all. Results in {workdir}/results.json, results.md")
    return {"tables": tables, "tests": tests}


def _tests_markdown(tests: dict[str, dict[str, Any]]) -> str:
    lines = ["**Paired Wilcoxon signed-rank tests of per-photo errors (002 §4.2)**", "",
             "| pair | mean difference (km) | median difference (km) | statistic | p-value | n |",
             "|:--|--:|--:|--:|--:|--:|"]
    for name, t in tests.items():
        lines.append(f"| {name} | {t['mean_difference']:.1f} | {t['median_difference']:.1f} | "
                     f"{t['statistic']:.4g} | {t['p_value']:.3g} | {t['n']} |")
    return "\n".join(lines)


def _write(tables: dict[str, dict[str, dict[str, Any]]], tests: dict[str, dict[str, Any]],
           workdir: str, config: ml_collections.ConfigDict, is_main: bool,
           log: Callable[[str], None]) -> None:
    """Terminal tables, ``results.json`` (rows ``"<table>/<row>"`` and ``"tests/<pair>"``) and
    ``results.md``, written atomically by process 0."""
    markdown = [f"# `{config.get('name', 'delaunay_meta')}`: 002's M1, M2 (time), user "
                "averaging, M3 (albums) and the best possible, on the metadata split's "
                "evaluation users\n\nAccuracy (%) within each distance; KL divergence and "
                "entropies (nats) of the predicted vs true class frequencies (+1 smoothing, "
                "002 Table 7); in country: the predicted point in the true country (%).\n"]
    for name, rows in tables.items():
        n = next(iter(rows.values()))["n"]
        log("\n" + report.format_table(rows, extra_columns=EXTRA_COLUMNS, digits=2,
                                       title=f"{name} ({n} photos)"))
        markdown.append(report.format_table(rows, fmt="markdown", extra_columns=EXTRA_COLUMNS,
                                            digits=2, title=f"{name} ({n} photos)") + "\n")
    log("\n" + _tests_markdown(tests))
    markdown.append(_tests_markdown(tests) + "\n")
    if not is_main:
        return
    flat = {f"{t}/{r}": f for t, rows in tables.items() for r, f in rows.items()}
    flat.update({f"tests/{k}": v for k, v in tests.items()})
    report.write_results(os.path.join(workdir, "results.json"), flat)
    fileio.atomic_write(os.path.join(workdir, "results.md"), "\n".join(markdown))
