"""PCL (v1): Prototypical Contrastive Learning of Unsupervised Representations (Li, Zhou, Xiong,
Hoi, ICLR 2021, https://arxiv.org/abs/2005.04966), SimCLIC's Table 2 row "PCL".

The same prototypes and ProtoNCE as :mod:`methods.pclv2` on MoCo v1 instead of MoCo v2: the
released code's ``main_pcl.py`` without ``--mlp --aug-plus --cos`` ("only activated for PCL v2",
its README), i.e. the encoder's fc as a linear 128-d head, MoCo v1's augmentation (InstDisc's:
crop, grayscale, colour jitter 0.4, flip; no blur) and the step schedule (lr x 0.1 at epochs 120
and 160). SimCLIC's Table 3 lists it with a momentum encoder and bank, no projection head and no
extra augmentation ("PCL | 200 | 256 | √ | √"). The difference is all in configs/method/pcl.yaml.
"""

from __future__ import annotations

from contrastive.core.registry import METHODS
from .pclv2 import PCLv2


@METHODS.register("pcl")
class PCL(PCLv2):
    """PCL v1: :class:`PCLv2` with MoCo v1's linear head, augmentation and step schedule (YAML only)."""
