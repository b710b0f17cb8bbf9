"""SimCLR v2: Big Self-Supervised Models are Strong Semi-Supervised Learners (Chen, Kornblith,
Swersky, Norouzi, Hinton, NeurIPS 2020, https://arxiv.org/abs/2006.10029).

SimCLR with a deeper projection head: Sec. 2 "we use a 3-layer projection head" (instead of 2)
and fine-tune from its first layer; NT-Xent at temperature 0.1; LARS with lr 0.1 x sqrt(batch)
and weight decay 1e-4. SimCLR v2's optional MoCo-style memory ("gives a modest improvement of
around 1%") is not implemented. Everything else is :mod:`methods.simclr` (same file, same
ablation switches): the differences are in configs/method/simclrv2.yaml.
"""

from __future__ import annotations

from contrastive.core.registry import METHODS

from .simclr import SimCLR


@METHODS.register("simclrv2")
class SimCLRv2(SimCLR):
    """SimCLR v2: :class:`SimCLR` with the 3-layer head of configs/method/simclrv2.yaml."""
