"""Loading tensors that a module keeps as plain attributes (not buffers) from a ``state_dict``.

The feature bank and the clustering methods' epoch state live outside ``named_buffers()`` so that
DDP does not broadcast them every step; their ``_load_from_state_dict`` hooks share this check.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import torch


def load_plain_tensor(state_dict: Mapping[str, torch.Tensor], key: str, own: torch.Tensor,
                      missing_keys: List[str], error_msgs: List[str]) -> Optional[torch.Tensor]:
    """The checkpoint's ``key`` as a copy on ``own``'s device and dtype, or ``None`` after recording
    a missing key or a size mismatch the way ``nn.Module.load_state_dict`` reports them."""
    if key not in state_dict:
        missing_keys.append(key)
        return None
    value = state_dict[key]
    if tuple(value.shape) != tuple(own.shape):
        error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} "
                          f"from checkpoint, the shape in current model is {tuple(own.shape)}.")
        return None
    return value.detach().to(device=own.device, dtype=own.dtype).clone()
