"""Dropout that both backends can agree on, unit by unit: the mask is a function of
(key, step, sample, unit), a counter-based hash, instead of a draw from a framework's
own generator (torch's global Philox/MT state and JAX's threefry keys can never give
the same bits).

Why a hash rather than masks drawn from the shared numpy stream and fed in as inputs:
the mask then lives where torch's nn.Dropout lives, inside the layer, so the models stay
`model(x)` and `model.train()/eval()` on both sides, train_step needs no extra argument,
and the compiled run needs no (steps, batch, units) array of masks. The only state is a
step counter, one integer per dropout layer, which crosses the API with the weights.

The hash is 32-bit integer arithmetic that torch (int64 tensors, masked to 32 bits) and
JAX (uint32, wrapping) compute bit for bit alike; this numpy version is the spec both
are tested against. The multipliers are below 2**31 so that torch's int64 products of
a 32-bit value never overflow.
"""
from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
MUL1, MUL2 = 0x7FEB352D, 0x5BD1E995          # odd, < 2**31 (lowbias32's first, murmur2's m)


def mix32(x):
    """A 32-bit finaliser (xor-shift-multiply, lowbias32's shape); x holds values < 2**32."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def threshold(rate: float) -> int:
    """A unit is dropped when its hash is below this: P(drop) = rate to within 2**-32."""
    return int(round(rate * 2 ** 32))


def keep_mask(key: int, step: int, samples: int, units: np.ndarray, rate: float) -> np.ndarray:
    """(samples, len(units)) bool: which units survive at this step. `units` are the
    units' indices in torch's order (for a flattened NCHW feature map, C, H, W)."""
    k = mix32(np.uint64(key & MASK32))
    k = mix32(k ^ np.uint64(step & MASK32))
    h = mix32(k ^ np.arange(samples, dtype=np.uint64)[:, None])
    h = mix32(h ^ np.asarray(units, np.uint64)[None, :])
    return h >= threshold(rate)
