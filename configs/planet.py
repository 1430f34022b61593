"""PlaNet: one adaptive S2 partition (003 §3.1 thresholds scaled to the data).

Reproduces the single-classifier baseline that every other method extends.
Today it builds the partition and reports its oracle accuracy:

    python -m geojax.main --config=configs/planet.py --mode=partition
    python -m geojax.main --config=configs/planet.py:runlocal --mode=partition   # seconds
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg)
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "planet"
    config.data = common.data_config(runlocal=runlocal)
    # 003 Table 8's 5000/50 hierarchy (3298 classes on MP-16), thresholds
    # scaled by data size so the class count per image matches.
    config.partitions = ml_collections.ConfigDict(dict(
        planet=dict(scheme="s2_adaptive", t_max=5000, t_min=50, scale_to_data=True),
    ))
    return config
