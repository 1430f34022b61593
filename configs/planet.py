"""PlaNet (003's single-classifier baseline): one adaptive S2 partition, trained end to end.

One softmax head over an adaptive S2 partition (003 §3.1; Table 8's 5000/50 thresholds,
scaled to the data size so the number of classes per image matches MP-16's 3,298), trained
with SGD + momentum and a cosine schedule; evaluated by the arg-max class's imagery centroid
(003 §3.5) on GeoWorld's Im2GPS3k-, YFCC4k- and GWS15k-like splits.

    python -m geojax.main --config=configs/planet.py
    python -m geojax.main --config=configs/planet.py:runlocal     # seconds (what the tests run)
    python -m geojax.main --config=configs/planet.py --mode=partition
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg)
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "planet"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        planet=dict(scheme="s2_adaptive", t_max=5000, t_min=50, scale_to_data=True),
    ))
    common.training(config, runlocal=runlocal,
                    stages=dict(train=common.end_to_end(("planet",), runlocal=runlocal)))
    return config
