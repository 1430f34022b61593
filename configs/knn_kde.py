"""Vo et al. (001): classification and retrieval by kNN kernel density, in one table.

001 trains a classifier over adaptive lat/lon boxes (§3.1) and uses its features for
retrieval (§3.2): the query's nearest training images (NN) and the mode of the kernel density
of its k = 100 nearest neighbours' locations, weighted by ``s_i^m`` with m = 10 (Eq. 1;
"kNN"). Rows: the classifier's arg-max ("[L] <n>C"; 001 Table 1 "[L] 7011C"), "[L] NN",
"[L] kNN" with σ = 1, 4, 16 degrees (001 Table 2; the grid search of the authors' code) and
geojax's spherical kernel (σ in km).

``[L]`` (default): one network trained on the finest partition alone (001's "Lone").
``:M``: 001's "[M]": six box partitions from coarse to fine trained jointly (as
``configs/multi_partition.py``), with one classification row per partition and the
retrieval rows on its features ("[M] NN", ...) and a hybrid (the kernel density of the
neighbours inside the top class of the coarsest partition).

The database index is ScaNN (``pip install -e '.[retrieval]'``); ``--config.retrieval.engine=exact``
searches exactly on the device mesh instead.

    python -m geojax.main --config=configs/knn_kde.py
    python -m geojax.main --config=configs/knn_kde.py:M
    python -m geojax.main --config=configs/knn_kde.py:runlocal     # seconds (what the tests run)
"""

from geojax import configlib as common
import ml_collections

# 001 §3.1: t_img per partition (MP-16 scale; scaled to the data size), coarse → fine.
M_THRESHOLDS = (50000, 20000, 10000, 5000, 2000, 1000)


def get_config(arg=None):
    args = common.parse_arg(arg, known=("runlocal", "M"))
    runlocal = bool(args.get("runlocal"))
    model = "M" if args.get("M") else "L"
    config = ml_collections.ConfigDict()
    config.name = f"knn_kde_{model}"
    config.data = common.data_config(runlocal=runlocal)
    thresholds = M_THRESHOLDS if model == "M" else M_THRESHOLDS[-1:]
    parts = {}
    for k, t_img in enumerate(thresholds):
        name = f"boxes{k + 1}" if model == "M" else "boxes"
        parts[name] = dict(scheme="latlon_boxes", t_img=t_img, t_area_km2=1000.0, split="even",
                           scale_to_data=True)
    config.partitions = ml_collections.ConfigDict(parts)
    config.retrieval = common.retrieval(runlocal=runlocal, name_prefix=f"[{model}] ")
    common.training(config, runlocal=runlocal,
                    stages=dict(train=common.end_to_end(tuple(parts), runlocal=runlocal)))
    if model == "L":  # one fine head: its top class holds few neighbours, the hybrid adds nothing
        config.eval.predictors = tuple(k for k in config.eval.predictors if k != "hybrid")
    return config
