"""Another implementation's rounding of each layer's output, for the ensemble's members.

Two correct implementations of a layer (oneDNN's convolution and XLA's, torch's matmul
and Eigen's) sum in other orders, so their outputs differ by about an ulp in every
entry, at every layer, at every step. Moving the parameters by an ulp after each update
does not make that noise, and on some models it is what the run is sensitive to.
Measured on torchvision's resnet18 (8 digits at 32x32, batch 4, SGD lr 0.1 momentum
0.9): after one step, the loss was 3.8e-6 relative from torch's float64 run for torch's
own float32 run and up to 2.2e-5 for its one-ulp members, but 4.2e-4 for a correct
Flax port; making the port's convolutions float64 removed the difference, and torch
runs whose convolution outputs were moved one ulp at random reached 1.1e-5 to 2.8e-4.

So every member but member 0 moves each entry of each parametrised layer's output by
one ulp down, not at all or up, chosen by a hash of (member, call, entry): the same
for a vmapped member and for one run in turn. The gradient passes straight through
(nextafter has none). Embedding is left out: a lookup rounds nothing.
"""
from __future__ import annotations

import torch

_MASK = 0x7FFFFFFF


class LayerRounding:
    """Forward hooks on a model's parametrised layers; `member` is the member being run
    (an int, or under vmap the batched member index) and 0 switches the moves off."""

    def __init__(self, model: torch.nn.Module):
        self.member, self.calls = torch.tensor(0), 0
        for m in model.modules():
            if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, torch.nn.Embedding):
                m.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        self.calls += 1
        if isinstance(out, tuple):                     # nn.LSTM's (output, (h, c)), attention's (out, weights)
            return tuple(self._move(o) if isinstance(o, torch.Tensor) else o for o in out)
        return self._move(out)

    def _move(self, out: torch.Tensor) -> torch.Tensor:
        if not out.is_floating_point():
            return out
        entry = torch.arange(out.numel(), device=out.device).reshape(out.shape)
        h = (entry * 40503 + self.member * 2654435 + self.calls * 97) & _MASK
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK
        sign = ((h ^ (h >> 12)) % 3 - 1) * (self.member != 0)
        with torch.no_grad():
            moved = torch.where(sign == 0, out, torch.nextafter(out, sign.to(out.dtype) * float("inf")))
        return out + (moved - out).detach()
