"""nn.Dropout whose mask is portcore/dropout_hash.py's, so that jaxport drops the same
units at the same step (torch's own generator cannot be reproduced in JAX). Everything
else is nn.Dropout's: `p`, model.train()/eval(), identity in eval mode.
Twin: jaxport.deep_layers.SharedDropout.
"""
import torch
from torch import nn

from portcore import dropout_hash as dh


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # int64 holding values < 2**32; the multipliers are < 2**31, so no product overflows
    x = x ^ (x >> 16)
    x = (x * dh.MUL1) & dh.MASK32
    x = x ^ (x >> 15)
    x = (x * dh.MUL2) & dh.MASK32
    return x ^ (x >> 16)


class SharedDropout(nn.Dropout):
    """Drops unit u of sample s at step t when hash(key, t, s, u) < p * 2**32; `step`
    counts train-mode calls (a buffer, so it travels in state_dict with the weights)."""

    def __init__(self, p: float = 0.5, key: int = 0):
        super().__init__(p)
        self.key = key
        self.register_buffer("step", torch.zeros(1, dtype=torch.int64))   # (1,): safetensors has no 0-d

    def forward(self, x: torch.Tensor) -> torch.Tensor:     # (N, F), F in torch's order
        if not self.training or self.p == 0.0:
            return x
        device = x.device
        k = _mix32(_mix32(torch.tensor(self.key & dh.MASK32, device=device)) ^ (self.step & dh.MASK32))
        h = _mix32(k ^ torch.arange(x.shape[0], device=device)[:, None])
        h = _mix32(h ^ torch.arange(x.shape[1], device=device)[None, :])
        keep = h >= dh.threshold(self.p)
        with torch.no_grad():
            self.step += 1
        # x / (1 - p), the division nnx.Dropout does too
        return torch.where(keep, x / (1 - self.p), torch.zeros_like(x))
