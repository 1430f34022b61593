"""003's seven adaptive S2 hierarchies (Table 8), trained jointly, combined by the product.

One head per hierarchy on a shared backbone, trained with L_geo = the sum of the seven
cross-entropies (003 §3.4; the scene loss belongs to the GeoDecoder config); evaluated per
head and by the hierarchical product of 003 §3.5 (each finest class scored by the product
of its own and its parents' probabilities).

    python -m geojax.main --config=configs/hierarchical.py
    python -m geojax.main --config=configs/hierarchical.py:runlocal      # seconds

    python -m geojax.main --config=configs/hierarchical.py --mode=partition
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg)
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "hierarchical"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        hierarchy=dict(scheme="s2_hierarchy", t_max=(25000, 10000, 5000, 2000, 1000, 750, 500), t_min=50,
                       scale_to_data=True),
    ))
    config.hierarchical = ml_collections.ConfigDict(dict(groups=("hierarchy",)))
    common.training(config, runlocal=runlocal,
                    stages=dict(train=common.end_to_end(("hierarchy",), runlocal=runlocal)))
    return config
