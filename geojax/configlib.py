"""Pieces shared by every geojax config (the files in configs/).

A config is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict``;
``arg`` is what follows the colon in ``--config=configs/x.py:arg`` — ``runlocal``
shrinks everything to a seconds-long run (what the tests use).
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, known: tuple[str, ...] = ("runlocal",)) -> dict[str, str | bool]:
    """``"runlocal,size=1000"`` → ``{"runlocal": True, "size": "1000"}``; a key not in ``known``
    raises ``ValueError`` (a mistyped ``:runlocl`` would otherwise run the full config)."""
    out: dict[str, str | bool] = {}
    for item in filter(None, (arg or "").split(",")):
        key, eq, value = item.partition("=")
        out[key.strip()] = value.strip() if eq else True
    unknown = sorted(set(out) - set(known))
    if unknown:
        raise ValueError(f"unknown config argument(s) {unknown} in ':{arg}'; this config takes "
                         f"{', '.join(known)}.")
    return out


def data_config(*, runlocal: bool) -> ml_collections.ConfigDict:
    """Where training and evaluation data come from (``geojax.data.datasets`` reads it).

    ``source="geoworld"`` (default): the embedded GeoWorld dataset
    (``geojax.data.geoworld``; MP-16-like ``train`` split and Im2GPS3k-,
    YFCC4k- and GWS15k-like evaluation splits; ``eval_size=0`` takes each
    split's paper size).  ``source="csv"``: ``train_csv`` / ``eval_csv``
    metadata files with their image folders ``train_images`` / ``eval_images``
    (without a folder: coordinates only, for ``--mode=partition``).
    ``source="array_record"``: ``train_dir`` / ``eval_dir`` converted datasets.
    ``source="tfds"``: the TFDS ArrayRecord dataset in ``tfds_dir`` (its version folder),
    split ``tfds_train_split`` for training and ``tfds_eval_splits`` for evaluation, its
    image and latitude / longitude (and optional id) features named by ``tfds_features``
    (``geojax.data.sources.tfds_format``; the ``tfds`` extra).
    ``source="places"``: the bare location samplers of ``geojax.data.places``
    (coordinates only, for ``--mode=partition``).

    ``sampler``: the training stream, ``"uniform"`` or ``"staged_balanced"`` (002 A.1's staged
    class-balanced sampling, :mod:`geojax.data.balanced`, settings in ``balanced``).

    ``max_bad_fraction``: the share of bad rows (bad coordinates, missing images, duplicate ids)
    a metadata reader accepts, and of bad records (undecodable images) the input pipeline
    accepts in training and evaluation, before it refuses the data; the published Im2GPS3k
    file, whose Flickr images are partly gone, needs e.g. ``--config.data.max_bad_fraction=0.1``.
    """
    return ml_collections.ConfigDict(dict(
        source="geoworld",
        seed=0,
        train_size=20_000 if runlocal else 400_000,
        eval_splits=("im2gps3k", "yfcc4k", "gws15k"),
        eval_size=500 if runlocal else 0,  # 0: each split's paper size
        image_size=64,  # GeoWorld render size = crop size of the pipeline
        worker_count=0,  # grain mp_prefetch worker processes (0: in the main process)
        # Train augmentation: "crop" (resize to S*256/224, random SxS crop: GeoWorld's default,
        # since its renders already vary crop, scale, colour and lighting, and its colours and
        # stripe codes are location cues that colour jitter and flips would blur) or
        # "paper_003" (003 §8.4.2: + flip, colour jitter, rotation; for real photos).
        augment="crop",
        train_csv="",  # source="csv": metadata CSVs and their image folders
        train_images="",
        eval_csv="",
        eval_images="",
        train_dir="",  # source="array_record": converted datasets
        eval_dir="",
        tfds_dir="",  # source="tfds": a TFDS ArrayRecord dataset's <data_dir>/<name>/<version>
        tfds_train_split="train",
        tfds_eval_splits=("test",),
        tfds_features=dict(image="image", lat="latitude", lng="longitude", id=""),  # id "": "id" if any
        max_bad_fraction=0.01,  # most bad rows / records accepted (readers and pipeline)
        # The training stream: "uniform" (every record once per epoch, reshuffled) or
        # "staged_balanced" (002 A.1, geojax.data.balanced: epochs of examples_per_class x
        # classes growing by `growth` per epoch, class bias biases[c] in cycle c of
        # cycle_epochs epochs; head "": the stage's first head).
        sampler="uniform",
        balanced=dict(head="", examples_per_class=200, growth=0.06, cycle_epochs=5,
                      biases=(1.0, 0.5, 0.0)),
    ))


def warmup_steps(num_steps: int) -> int:
    """The configs' linear warmup: the first 5 % of a stage's steps."""
    return num_steps // 20


def optimizer(name: str = "sgd", learning_rate: float = 0.1, *, schedule: str = "cosine",
              warmup_steps: int = 0, **extra) -> dict:
    """An optimizer section (keys of ``geojax.training.optim.default_config``)."""
    out = dict(name=name, learning_rate=learning_rate,
               schedule=dict(name=schedule, **({"warmup_steps": warmup_steps} if warmup_steps else {})))
    out.update(extra)
    return out


def stage(heads, *, num_steps: int, batch_size: int, optimizer: dict, **extra) -> dict:
    """One training stage (keys of ``geojax.training.train.STAGE_DEFAULTS``)."""
    return dict(heads=tuple(heads), num_steps=num_steps, batch_size=batch_size,
                optimizer=optimizer, **extra)


def end_to_end(heads, *, runlocal: bool, num_steps: int = 3000) -> dict:
    """The one stage of the end-to-end configs (PlaNet, 001's [M], 003's hierarchies): every
    head trained jointly with SGD + momentum 0.9, lr 0.1 (5 % warmup, cosine decay),
    weight decay 1e-4, batch 128 (runlocal: 20 steps of 32)."""
    steps = 20 if runlocal else num_steps
    return stage(heads, num_steps=steps, batch_size=32 if runlocal else 128,
                 optimizer=optimizer("sgd", 0.1, warmup_steps=warmup_steps(steps),
                                     weight_decay=1e-4),
                 log_every=10 if runlocal else 100, checkpoint_every=10 if runlocal else 1000)


def training(config: ml_collections.ConfigDict, *, stages: dict, runlocal: bool,
             backbone: str = "small_cnn") -> ml_collections.ConfigDict:
    """Adds the model, mesh, stages, evaluation and resume settings every training config has.

    ``stages``: name → :func:`stage`, run in this order (``config.stage_order``). Call it after
    the ``hierarchical`` / ``combinatorial`` / ``retrieval`` sections: their predictors are
    listed then.
    """
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        backbone=backbone,
        # runlocal: a two-stage 8/16-channel CNN (seconds-long test runs)
        backbone_kwargs={"widths": (8, 16)} if runlocal and backbone == "small_cnn" else {},
        dtype="float32",  # "bfloat16": backbone compute in bf16
        head_dropout=0.0,
        bottleneck_dim=0,  # > 0: a hidden layer in each head
    ))
    # Devices: data parallel over every device; fsdp > 1 with param_sharding="fsdp" shards
    # the parameters and optimizer state too (geojax.training.sharding).
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    config.param_sharding = "replicate"
    config.fsdp_min_size = 2 ** 14  # under param_sharding="fsdp", smaller leaves stay replicated
    config.stages = ml_collections.ConfigDict(stages)
    config.stage_order = tuple(stages)
    # Evaluation (geojax.evaluation.evaluators): the evaluators' rows in this order, the
    # predictors (geojax.inference.predictors.REGISTRY) of the "predictors" rows.
    predictors = ("argmax",) + tuple(kind for kind in ("hierarchical", "combinatorial")
                                     if kind in config)
    if "retrieval" in config:
        predictors += ("nn", "knn", "hybrid")
    config.eval = ml_collections.ConfigDict(dict(
        batch_size=64 if runlocal else 256,
        crops="center",  # "five" / "ten": 003's TenCrop
        evaluators=("baseline", "predictors", "oracle", "map"),  # "map": predictions.png
        predictors=predictors,
    ))
    # --mode=predict / --mode=export: the answering predictor (a row name of the results
    # table; "": the best GeoScore of results.json, else the first) and its candidates.
    config.predict = ml_collections.ConfigDict(dict(method="", top_k=5))
    config.init_from = ""  # a checkpoint directory whose weights start the first stage
    return config


def retrieval(*, runlocal: bool, engine: str = "scann", name_prefix: str = "") -> ml_collections.ConfigDict:
    """001 §3.2's retrieval (``config.retrieval``; ``geojax.inference``'s ``features``,
    ``retrieval``, ``kde`` and the ``nn`` / ``knn`` / ``hybrid`` predictors).

    The database is the training split: the L2-normalised backbone features of the final
    weights, stored in ``<workdir>/retrieval/<backbone digest>/features`` (``feature_dtype``,
    ``shard_size`` rows per shard) and indexed by ``engine`` (``"scann"``: the ``retrieval``
    extra, parameters chosen from the database size, overridden by ``scann``; ``"exact"``:
    brute force on the device mesh, overridden by ``exact``); a saved index built with other
    parameters is rebuilt. ``k`` neighbours, weights ``s_i^m`` (001: k = 100, m = 10); one
    row per σ of ``vo2017_sigmas`` (degrees: 001's σ = 1, 4, 16 on the authors' lat/lng grid), of
    ``latlng_sigmas`` (degrees: the same density's mode by mean shift, ``kde.latlng_mode``) and
    of ``sigmas_km`` (geojax's spherical kernel, ``kernel`` ``"gaussian"`` or ``"vmf"``);
    ``hybrid``: the kernel density inside the ``top_classes`` most probable classes of head
    ``head`` (empty: the model's coarsest head).
    """
    return ml_collections.ConfigDict(dict(
        database="train",
        engine=engine,
        k=100,
        m=10.0,
        vo2017_sigmas=(1.0, 4.0, 16.0),
        latlng_sigmas=(),
        sigmas_km=(25.0,),
        kernel="gaussian",
        hybrid=dict(head="", top_classes=1, sigma_km=25.0),
        feature_dtype="float16",
        shard_size=4096 if runlocal else 65536,
        scann={},  # overrides of retrieval.scann_params (e.g. leaves_to_search)
        exact={},  # overrides of retrieval.exact_params (dtype, block_rows)
        name_prefix=name_prefix,
    ))
