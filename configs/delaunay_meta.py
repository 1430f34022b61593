"""002: a Delaunay-mesh classifier (M1), its time model (M2) and user-album model (M3).

M1 (002 §3.1): a classifier over the ``coarse`` Delaunay mesh of 002 Table 1, trained end to
end; its refinement limit and minimum examples are scaled from the 2M images the paper built
that mesh from to GeoWorld's training size (8000 → 8000·n/2M, 1000 → 1000·n/2M; ≈ 600 cells
at any size, against 002's 538). ``:fine`` and ``:fineP`` use the other meshes of Table 1,
scaled from the 14M images they were built from (≈ 7,000 and ≈ 4,800 cells; 002: 6,565 and
4,771).

M2 and M3 (002 §3.2-3.3, §A) train on a GeoWorld split M1 never saw, whose users are dealt to
training, early-stopping validation and evaluation parts; the tables (002 Tables 3, 6, 7: M1
with cell and imagery centroids, M2, user averaging, M3, the best possible; all photos and
outdoor only) and the paired Wilcoxon tests are computed on the evaluation users
(``geojax.experiment_meta``). Time features use the UTC posting time (002 Fig. 1; see
``geojax.data.metadata_features``).

    python -m geojax.main --config=configs/delaunay_meta.py
    python -m geojax.main --config=configs/delaunay_meta.py:runlocal     # seconds (the tests)

Real photos: M1 trains on ``config.data`` as in every config (``--config.data.source=csv
--config.data.train_csv=... --config.data.train_images=...``, or ``array_record``), and the
metadata split comes from other photos with users and posting times::

    --config.meta.source=csv --config.meta.csv=meta.csv --config.meta.images=DIR
    --config.meta.source=array_record --config.meta.dir=DIR

The CSV needs ``AUTHOR`` and a posting-time column (``DATE_UPLOADED``: YFCC100M's
``dateuploaded``, or ``POSTED`` / ``TIMESTAMP`` / ``DATE_TAKEN``; Unix seconds or ISO 8601,
text without an offset read on ``meta.text_utc_offset_hours``); outdoor-only rows use
``Prob_indoor`` (indoor above 0.5) or ``S3_Label`` (``geojax.experiment_meta``).

Re-running the command resumes: M1 from its checkpoints, then every finished stage of
``<workdir>/meta/`` is reused.
"""

import ml_collections

from geojax import configlib as common


def get_config(arg=None):
    args = common.parse_arg(arg, known=("runlocal", "fine", "fineP"))
    runlocal = bool(args.get("runlocal"))
    mesh = "fineP" if args.get("fineP") else "fine" if args.get("fine") else "coarse"
    config = ml_collections.ConfigDict()
    config.name = f"delaunay_meta_{mesh}"
    config.data = common.data_config(runlocal=runlocal)
    # 002 Table 1's mesh, scaled from the images the paper built it from to the training size.
    spec = dict(scheme="delaunay", preset=mesh, scale_to_data=True,
                grid=31)  # 002: "a 31 x 31 structured grid"
    if runlocal:  # an 8 x 8 grid without refinement: ~60 cells for a seconds-long run
        spec = dict(scheme="delaunay", grid=8, refinement_limit=10**9,  # never refined
                    minimum_examples=20)
    config.partitions = ml_collections.ConfigDict({mesh: spec})
    # M1 takes most of the run's time: 1,500 steps of 64 photos (benchmarks/README.md: the
    # default's wall time, and the smaller runs whose M2 fell below M1).
    steps = 20 if runlocal else 1500
    train = common.end_to_end((mesh,), runlocal=runlocal, num_steps=steps)
    if not runlocal:
        train["batch_size"] = 64
    common.training(config, runlocal=runlocal, stages=dict(train=train))
    adam = (0.005, 0.001)  # 002 §A.2
    config.meta = ml_collections.ConfigDict(dict(
        group=mesh,
        source="geoworld",  # the metadata split: "geoworld", "csv" (csv, images), "array_record" (dir)
        csv="", images="", dir="",
        text_utc_offset_hours=0.0,  # the clock of posting times written without an offset
        split_size=2000 if runlocal else 30_000,  # photos of the GeoWorld metadata split
        seed_offset=1000,  # its GeoWorld seed: data.seed + seed_offset (M1 never saw it);
                           # the users' parts are dealt with the same seed
        fractions=(0.7, 0.1, 0.2),  # users: M2/M3 training, early stopping, evaluation
        centroid="imagery",  # where a predicted class is placed (002 §3.1.2)
        utc_offset_hours=0.0,  # the clock of the time features: UTC, as 002's posted times
        top_k=10,  # 002 §3.2
        m2=dict(epochs=2 if runlocal else 8, batch_size=64 if runlocal else 256,
                learning_rates=adam, patience=3,
                width=64 if runlocal else 0,  # 0: Table 2's 3 (N + 4)
                dropout_rate=0.5),
        m3=dict(epochs=2 if runlocal else 60, batch_size=16 if runlocal else 64,
                learning_rates=adam, patience=8, album_length=24, hidden=16 if runlocal else 128,
                dropout_rate=0.5),
    ))
    return config
