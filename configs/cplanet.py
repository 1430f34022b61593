"""CPlaNet (004): five geoclass sets (Table 1) and combinatorial partitioning.

Builds the five geoclass sets on a graph of level-14 S2 cells (004 §3.3,
Table 1 with class counts scaled to the data size) and the offline
combinatorial index (004 §4.2), then reports each set's and the fine
partitions' oracle accuracy.

    python -m geojax.main --config=configs/cplanet.py
    python -m geojax.main --config=configs/cplanet.py:runlocal     # seconds
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg)
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "cplanet"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        geoclass=dict(scheme="cplanet_table1", base_level=14, scale_to_data=True, seed=0),
    ))
    config.combinatorial = ml_collections.ConfigDict(dict(groups=("geoclass",), base_level=14))
    return config
