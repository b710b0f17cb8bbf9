"""SimCLR v2: Big Self-Supervised Models are Strong Semi-Supervised Learners (Chen, Kornblith,
Swersky, Norouzi, Hinton, NeurIPS 2020, https://arxiv.org/abs/2006.10029).

SimCLR with a deeper projection head: Sec. 2 "we use a 3-layer projection head" (instead of 2)
and fine-tune from its first layer; NT-Xent at temperature 0.1; LARS with lr 0.1 x sqrt(batch)
and weight decay 1e-4. SimCLR v2's optional MoCo-style memory ("gives a modest improvement of
around 1%") is not implemented. Everything else is :mod:`methods.simclr` (same file, same
ablation switches): the differences are in configs/method/simclrv2.yaml and the head below.

The head (:func:`projection_head_v2`) is the authors' released one (google-research/simclr
tf2/model.py ``ProjectionHead``, ``proj_head_mode='nonlinear'``): every layer is a bias-free
dense layer followed by BN; the hidden layers' BN has a scale and a shift and a ReLU follows, the
output layer's BN is built with ``center=False`` (``use_bias=False`` there): a learnable scale,
no shift, no ReLU. ``method.projection.num_layers`` 0 and 1 keep SimCLR's identity and linear heads.
"""

from __future__ import annotations

from lightly.models.modules.heads import ProjectionHead
from torch import nn

from contrastive.core.registry import METHODS

from .simclr import SimCLR, projection_head


class ScaleOnlyBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over ``[B, C]`` with a learnable scale ``gamma`` and no shift (Keras' ``center=False``)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True)
        self.bias = None  # no beta: registered as None, so no parameter, no state-dict entry


def projection_head_v2(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Module:
    """SimCLR v2's head ``[B, input_dim] -> [B, output_dim]`` (module doc); 0 or 1 layers: SimCLR's."""
    if num_layers < 2:
        return projection_head(input_dim, hidden_dim, output_dim, num_layers)
    dims = [input_dim] + [hidden_dim] * (num_layers - 1)
    blocks = [(dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), False) for i in range(num_layers - 1)]
    blocks.append((hidden_dim, output_dim, ScaleOnlyBatchNorm1d(output_dim), None, False))
    return ProjectionHead(blocks)


@METHODS.register("simclrv2")
class SimCLRv2(SimCLR):
    """SimCLR v2: :class:`SimCLR` with the 3-layer head of configs/method/simclrv2.yaml."""

    @staticmethod
    def make_projection_head(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Module:
        return projection_head_v2(input_dim, hidden_dim, output_dim, num_layers)
