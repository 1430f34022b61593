"""Vo et al. (001) multi-partition classification: several adaptive lat/lon box partitions.

001 §3.1 splits boxes along their longer side until fewer than t_img images or
less than t_area remain; its "[M]" model trains six such partitions jointly.
Here the six partitions use t_img thresholds spanning coarse to fine (scaled
to the data size) with even splits.

One head per partition on a shared backbone, trained jointly with the sum of the six
cross-entropies (001 §3.1 "Multiple class labeling"); each head is evaluated alone
(001 Fig. 8 compares them: fine partitions win at street/city level, coarse ones at
country/continent level).

    python -m geojax.main --config=configs/multi_partition.py
    python -m geojax.main --config=configs/multi_partition.py:runlocal   # seconds
    python -m geojax.main --config=configs/multi_partition.py --mode=partition
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg)
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "multi_partition"
    config.data = common.data_config(runlocal=runlocal)
    parts = {}
    for k, t_img in enumerate((50000, 20000, 10000, 5000, 2000, 1000)):
        parts[f"boxes{k + 1}"] = dict(scheme="latlon_boxes", t_img=t_img, t_area_km2=1000.0, split="even",
                                      scale_to_data=True)
    config.partitions = ml_collections.ConfigDict(parts)
    common.training(config, runlocal=runlocal,
                    stages=dict(train=common.end_to_end(tuple(parts), runlocal=runlocal)))
    return config
