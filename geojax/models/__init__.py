"""geojax.models: pure-functional flax.linen modules (see DESIGN.md).

Backbones map ``(B, H, W, 3)`` float images to ``(B, D)`` features (:mod:`.resnet`,
:mod:`.vit`, :mod:`.small_cnn`, chosen by name through :mod:`.registry`); :mod:`.heads` puts one
classifier per partition on those features and combines both in :class:`GeoModel`.
"""

from geojax.models.heads import (ClassificationHead, GeoModel, MultiPartitionHeads,
                                 partition_names)
from geojax.models.registry import backbone_names, feature_dim, get_backbone
from geojax.models.resnet import ResNet, resnet18, resnet50
from geojax.models.small_cnn import SmallCNN
from geojax.models.vit import VisionTransformer, vit_b16, vit_s16

__all__ = [
    "ClassificationHead",
    "GeoModel",
    "MultiPartitionHeads",
    "ResNet",
    "SmallCNN",
    "VisionTransformer",
    "backbone_names",
    "feature_dim",
    "get_backbone",
    "partition_names",
    "resnet18",
    "resnet50",
    "vit_b16",
    "vit_s16",
]
