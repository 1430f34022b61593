"""CPlaNet (004): five geoclass sets on a frozen PlaNet backbone, combinatorial inference.

The README's first command; trains and evaluates on GeoWorld in about 10 minutes on 2 CPU
cores:

    python -m geojax.main --config=configs/cplanet.py
    python -m geojax.main --config=configs/cplanet.py:runlocal             # seconds (tests)
    python -m geojax.main --config=configs/cplanet.py --mode=partition     # partitions only

What it reproduces (004 §4–5):

1. ``pretrain``: a single-partition classifier (PlaNet, an adaptive S2 partition; 003 Table 8
   thresholds scaled to the data) trained end to end — 004 §5.2 starts from "PlaNet" weights.
2. ``heads``: five classification heads, one per geoclass set of Table 1 (built on a graph of
   level-14 S2 cells, class counts scaled to the data size), trained on the *fixed* backbone
   (004 §4.1) with RMSprop at 0.005 (004 §5.2).
3. Evaluation: each head alone (arg-max class, imagery centroid), and combinatorial
   partitioning (004 §3.1, Eq. 3 NormalizedSum and the SimpleSum ablation, Eq. 4), with the
   constant baseline and the oracle rows, on the Im2GPS3k-, YFCC4k- and GWS15k-like splits.

Table 1's visual distances (β1 of Eq. 2: cosine distance between the nodes' mean image
features) need a feature per training image: by default the geoclass sets are built after
pretraining, from the pretrained backbone's features of every training image (a forward pass
over the 400,000 training photos, about 4 minutes here): 004 §3.3 averages "image features
extracted from the bottleneck layer of a pretrained CNN" per node, and its Table 2 finds
geolocation-trained features better than ImageNet ones. ``:geo`` (or ``--config.partitions.geoclass.features_from=''``) builds them
before training from geographic distances only: set 1 (β = (1, 0)) then falls back to the
nearest neighbour and differs from set 2 only by its seed (``geojax.partitions.cplanet``).
``--mode=partition`` always builds the sets without image features.

Set sizes: Table 1's class counts (9,969-12,977) are scaled by the training size over 004's 30.3M
images, so each set has 132-171 classes on 400,000 photos, 1/20 of the PlaNet partition's 3,210
(003's thresholds scaled from MP-16's 4.72M images); in 004 each set alone is level with PlaNet
(Table 2). ``--config.partitions.geoclass.reference_num_points=N`` scales from N images instead:
1,500,000 gives 2,658-3,461 classes a set, the PlaNet partition's size (the README's
cplanet_9000_3k run).

    python -m geojax.main --config=configs/cplanet.py:geo
"""

from geojax import configlib as common
import ml_collections


def get_config(arg=None):
    args = common.parse_arg(arg, known=("runlocal", "geo"))
    runlocal = bool(args.get("runlocal"))
    config = ml_collections.ConfigDict()
    config.name = "cplanet"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        planet=dict(scheme="s2_adaptive", t_max=5000, t_min=50, scale_to_data=True),
        geoclass=dict(scheme="cplanet_table1", base_level=14, scale_to_data=True, seed=0,
                      # Table 1's N scaled from 004's 30.3M training images: 132-171 classes
                      # a set on 400,000 photos (a smaller value: more, smaller classes)
                      reference_num_points=30_300_000,
                      # a stage name: build the sets after it, with its backbone's features
                      features_from="" if args.get("geo") else "pretrain"),
    ))
    config.combinatorial = ml_collections.ConfigDict(dict(groups=("geoclass",), base_level=14))
    pre_steps = 20 if runlocal else 2000
    head_steps = 10 if runlocal else 800
    batch = 32 if runlocal else 128
    common.training(config, runlocal=runlocal, stages=dict(
        pretrain=common.stage(("planet",), num_steps=pre_steps, batch_size=batch,
                              optimizer=common.optimizer("sgd", 0.1, warmup_steps=common.warmup_steps(pre_steps),
                                                         weight_decay=1e-4),
                              log_every=10 if runlocal else 100,
                              checkpoint_every=10 if runlocal else 1000),
        heads=common.stage(("geoclass",), num_steps=head_steps, batch_size=batch,
                           freeze_backbone=True,
                           # 004 §5.2: RMSprop, learning rate 0.005 (TensorFlow's RMSprop:
                           # accumulators start at 1, eps inside the square root).
                           optimizer=common.optimizer("rmsprop", 0.005, schedule="constant",
                                                      rmsprop=dict(initial_scale=1.0)),
                           log_every=5 if runlocal else 100,
                           checkpoint_every=10 if runlocal else 500),
    ))
    return config
