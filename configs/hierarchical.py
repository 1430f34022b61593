"""003's seven adaptive S2 hierarchies (Table 8) combined by the hierarchical product.

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
    return config
