"""The four partition schemes of the papers side by side, for ``--mode=partition``.

No model: builds each scheme on GeoWorld's training coordinates and reports its oracle
("best possible") accuracy (002 Table 6) next to the constant baseline, with a map of every
partition (``partitions.png``). Thresholds are the papers' MP-16 values scaled to the data:

* ``s2``: PlaNet / 003's adaptive S2 cells (t_max = 5000, t_min = 50);
* ``boxes``: 001's adaptive lat/lon boxes (t_img = 2000, t_area = 1000 km², even split);
* ``delaunay``: 002's spherical Delaunay mesh, Table 1's ``fine`` preset (refinement limit
  5000, minimum examples 500);
* ``geoclass``: 004 Table 1's five geoclass sets on a graph of level-14 S2 cells (geographic
  distances), and their combinatorial fine partitions.

    python -m geojax.main --config=configs/partition_schemes.py --mode=partition
    python -m geojax.main --config=configs/partition_schemes.py:runlocal --mode=partition

``colabs/partitions.ipynb`` draws these.
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg, known=("runlocal",))
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "partition_schemes"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        s2=dict(scheme="s2_adaptive", t_max=5000, t_min=50, scale_to_data=True),
        boxes=dict(scheme="latlon_boxes", t_img=2000, t_area_km2=1000.0, split="even",
                   scale_to_data=True),
        delaunay=dict(scheme="delaunay", refinement_limit=5000, minimum_examples=500,
                      scale_to_data=True),
        geoclass=dict(scheme="cplanet_table1", base_level=14, scale_to_data=True, seed=0),
    ))
    config.combinatorial = ml_collections.ConfigDict(dict(groups=("geoclass",), base_level=14))
    return config
