"""003's GeoDecoder: hierarchy × scene queries decoded from an image encoder's patch tokens.

The model of 003 §3.2–3.5 (``geojax.models.geodecoder``): H × S learned queries (the seven
adaptive S2 hierarchies of Table 8 × 16 scenes), 8 decoder layers of which the last 2 are
hierarchy-dependent, the scene of highest mean channel-0 confidence selecting the queries
each hierarchy's classifier sees; trained with L = L_geo + L_scene (§3.4; GeoWorld's 16 scene
labels, ``scene``); evaluated per hierarchy and by the hierarchical product (§3.5).

    python -m geojax.main --config=configs/geodecoder.py              # GeoWorld, ≈ 12 min on 2 cores
    python -m geojax.main --config=configs/geodecoder.py:runlocal     # seconds (what the tests run)
    python -m geojax.main --config=configs/geodecoder.py:paper --config.data.source=csv \\
        --config.data.train_csv=mp16.csv --config.data.train_images=DIR ...   # 003's 224 px setup

**GeoWorld default** (trained from scratch): 64 px images; as encoder the hierarchical
classifier's ``small_cnn``, whose last 4 × 4 map gives 16 tokens of width 256
(``:encoder=vit``: a ViT with 8-pixel patches, 64 patch tokens + the class token, width 64,
2 blocks); queries of width 32 (one attention head, FFN width 64); 003's structure (7
hierarchies, 16 scenes, depth 8 with 2 dependent layers); 800 steps of 128 with
``configs/hierarchical.py``'s optimizer (SGD, momentum 0.9, weight decay 1e-4, lr 0.1 with 5 %
warmup and cosine decay), so that ``configs/hierarchical.py --config.stages.train.num_steps=800
--config.stages.train.optimizer.schedule.warmup_steps=40`` is the same partitions, optimizer
and training budget without the decoder. 003's lr 0.01 (meant for a pretrained encoder) moves
the location losses of a model trained from scratch even less: after 200 steps of 128 the
coarsest hierarchy's cross-entropy was 6.28 at lr 0.01, 6.09 at lr 0.1 with warmup, 6.01 with
AdamW 1e-3 (log 585 = 6.37). The run takes 12 min on the 2 cores when they are free (1.4–1.6 steps/s, against ≈ 3 for
the hierarchical classifier); at a load average of 12–15 it ran at 0.2–0.3 steps/s.

The classifiers start at zero (``HierarchyHeads``' default): with random kernels the seven
cross-entropies all pulled the one shared ``final_ln`` scale down (output rms 0.11 after 150
steps at ``:scene=none``), the decoded queries of different images became near-identical
(across-image std 0.006 of the classifier inputs; residual stream rms 29, of which 0.49
varied across images) and the location cross-entropies stayed at the class prior (coarsest
6.30 at step 100). Zero-initialised, the same 150 steps kept the inputs apart (across-image
std 0.79, ``final_ln`` output rms 2.5) and the cross-entropies fell (5.91, 6.77, 7.43, 8.20,
8.73, 8.97, 9.26 on 60 cached batches seen 2.5 times; the hierarchical classifier: 6.05 …
9.96 after 100 of those steps). With scene selection (the default) on fresh batches, the
coarsest cross-entropy stays at 6.0 for steps 100–400 while the scene is learnt (accuracy
0.88–0.93), then falls (5.83, 5.59, 5.48, 5.52 at steps 500–800); the 800-step run's
hierarchical product on the Im2GPS3k-like split: 0.1 / 2.3 / 3.3 / 10.5 / 28.3 % within
1 / 25 / 200 / 750 / 2500 km, median 5,924 km (the hierarchical classifier's 800-step row of
the README: 0.2 / 1.7 / 3.1 / 10.1 / 29.2 %, 6,208 km).

``:paper``: 003's setup for 224 px photos: ViT-B/16 encoder (003 Table 5's "Ours (ViT)";
003's main model uses a Swin encoder, which geojax does not have), queries of width 768 (12
heads), batch 512, 40 epochs of MP-16 (369,060 steps; set ``num_steps`` for another training
set), SGD lr 0.01, momentum 0.9, weight decay 1e-4, MultiStepLR γ = 0.5 at epochs 4, 8, 12,
13, 14, 15 (Table 8; ``optim.paper_003_config``), 003's augmentation and TenCrop.

**Ablations** (arguments after the colon, combinable; ``launch/geodecoder_tables.py`` runs
a whole table):

    scene=select|auxiliary|none    Table 3: 003's query selection (default), the scene as a
                                   secondary task, no scene prediction
    scenes=3|16                    Table 6: number of scene labels (GeoWorld has 3 and 16;
                                   real CSVs 3, 16, 365; 0 scenes is scene=none)
    dependent=0|2|4|6              Table 4: hierarchy-dependent layers (of depth 8)
    depth=3|5|8|10                 Table 2: decoder depth (dependent layers stay 2)
    hierarchies=1|3|5|7            Table 7: the t_max values used (7: Table 8's; 5: 10000 …
                                   750; 3: 5000, 2000, 1000; 1: 5000 — geojax's choice,
                                   003 does not list them)
    selection=predicted|label      which scene's queries feed the classifiers in training
                                   (003: the predicted one; label: the true scene's)
"""

from geojax import configlib as common
from geojax.training import optim
import ml_collections

T_MAX = (25000, 10000, 5000, 2000, 1000, 750, 500)  # 003 Table 8
HIERARCHIES = {7: T_MAX, 5: T_MAX[1:6], 3: T_MAX[2:5], 1: T_MAX[2:3]}
PAPER_EPOCHS, MP16_IMAGES = 40, 4_723_695  # 003 Table 8: 40 epochs of MP-16
GEOWORLD_STEPS = 800  # of 128: the GeoWorld default's budget (≈ 12 min on 2 CPU cores)

ARGS = ("runlocal", "paper", "encoder", "scene", "scenes", "dependent", "depth", "hierarchies",
        "selection")


def _int_arg(args, key, default, allowed=None):
    value = args.get(key, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"':{key}={value}' is not an integer") from None
    if allowed is not None and value not in allowed:
        raise ValueError(f"':{key}={value}': choose one of {sorted(allowed)}")
    return value


def _without_none(tree):
    return {k: _without_none(v) if isinstance(v, dict) else v
            for k, v in tree.items() if v is not None}


def get_config(arg=None):
    args = common.parse_arg(arg, known=ARGS)
    runlocal, paper = bool(args.get("runlocal")), bool(args.get("paper"))
    scene_mode = args.get("scene", "select")
    if scene_mode not in ("select", "auxiliary", "none"):
        raise ValueError(f"':scene={scene_mode}': choose select, auxiliary or none")
    encoder = args.get("encoder", "vit" if paper else "small_cnn")
    if encoder not in ("small_cnn", "vit"):
        raise ValueError(f"':encoder={encoder}': choose small_cnn or vit")
    selection = args.get("selection", "predicted")
    if selection not in ("predicted", "label"):
        raise ValueError(f"':selection={selection}': choose predicted or label")
    num_scenes = _int_arg(args, "scenes", 16, (3, 16, 365))
    depth = _int_arg(args, "depth", 2 if runlocal else 8)
    dependent = _int_arg(args, "dependent", 1 if runlocal else 2)
    if not 0 <= dependent <= depth:
        raise ValueError(f"':dependent={dependent}' must be between 0 and the depth {depth}")
    t_max = HIERARCHIES[_int_arg(args, "hierarchies", 7, HIERARCHIES)]

    config = ml_collections.ConfigDict()
    config.name = "geodecoder"
    config.data = common.data_config(runlocal=runlocal)
    config.partitions = ml_collections.ConfigDict(dict(
        hierarchy=dict(scheme="s2_hierarchy", t_max=t_max, t_min=50, scale_to_data=True),
    ))
    config.hierarchical = ml_collections.ConfigDict(dict(groups=("hierarchy",)))

    if paper:
        image_size, batch, num_steps = 224, 512, round(PAPER_EPOCHS * MP16_IMAGES / 512)
        # 003's optimizer, milestones in epochs of the training set; unset keys (None) left
        # out, so that the optimizer's defaults apply and any key can be overridden by a flag.
        opt = _without_none(optim.paper_003_config().to_dict())
        opt["schedule"]["warmup_steps"] = 0  # 003: no warmup
        stage = common.stage(("hierarchy",), num_steps=num_steps, batch_size=batch,
                             optimizer=opt, log_every=100, checkpoint_every=2000)
    else:  # from scratch: the end-to-end configs' SGD (hierarchical.py's, at its step count)
        image_size = 64
        stage = common.end_to_end(("hierarchy",), runlocal=runlocal, num_steps=GEOWORLD_STEPS)
    common.training(config, runlocal=runlocal, stages=dict(train=stage),
                    backbone="small_cnn" if encoder == "small_cnn" else "vit_s16")

    config.data.image_size = image_size
    if paper:
        config.model.backbone = "vit_b16"
        config.model.backbone_kwargs = {}
        width, heads, mlp_ratio = 768, 12, 4.0
        config.data.augment = "paper_003"
        config.eval.crops = "ten"
    else:
        width, heads, mlp_ratio = 32, 1, 2.0
        if encoder == "vit":
            config.model.backbone_kwargs = dict(patch_size=8, width=32 if runlocal else 64,
                                                depth=1 if runlocal else 2, num_heads=2)
    config.model.geodecoder = ml_collections.ConfigDict(dict(
        width=width,
        depth=depth,
        dependent_layers=dependent,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        dropout_rate=0.0,
        num_scenes=num_scenes,
        scene_mode=scene_mode,  # "select" (003), "auxiliary", "none" (Table 3)
        scene_label="",  # the batch field of the scene labels; "": from num_scenes and the data
        train_selection=selection,  # "predicted" (003) or "label"
        scene_weight=1.0,  # L = L_geo + scene_weight * L_scene (003: 1)
    ))
    return config
