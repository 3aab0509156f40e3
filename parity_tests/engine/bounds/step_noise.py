"""The float32 single-step tolerance, measured per step (docs/design.md).

A fixed float32 tolerance (torch.testing's rtol 1.3e-6, atol 1e-5) is both too loose
and too tight: atol 1e-5 is ~100 ulps of a 0.1 weight, blind to a bias correction
1.3e-5 relative off, while a gradient that is a sum cancelling to ~1e-9 legitimately
differs by thousands of ulps of its own value. What two correct float32
implementations may differ by is set by the size of the terms summed, not of the
result.

So each float32 step is bounded by the reference's own sensitivity to such roundings,
measured (port_torch.step_spread): torch repeats the step in float64 from the same
state with every parameter, running statistic, optimizer moment and input moved by one
float32 ulp in a random direction (MEMBERS times, MORE_MEMBERS where that bound is
exceeded), and in float32 with the batch's rows in other orders (the batch sums' own
rounding). The bound is

    |candidate - torch| <= NOISE_MULTIPLE x spread + RESULT_ULPS x ulp-scale of the result

entry by entry, the second term (relative to the tensor's largest entry) covering the
final rounding of each result. A tensor outside it is judged against torch's float64
step (port_exact.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

MEMBERS = 4
MORE_MEMBERS = 16              # asked for where 4 members' bound is exceeded
NOISE_MULTIPLE = 4.0
RESULT_ULPS = 4.0
U32 = 2.0 ** -24


def moved_one_ulp(value: np.ndarray, rng: np.random.Generator, bits=np.float32) -> np.ndarray:
    """value (in `bits`, float32 by default) moved one ulp of `bits` up or down per
    entry, as float64."""
    v = np.asarray(value, bits)
    return np.nextafter(v, np.where(rng.random(v.shape) < 0.5, bits(np.inf), bits(-np.inf))).astype(np.float64)


@dataclasses.dataclass
class StepBound:
    """parity.check's tolerance for one float32 step: per entry, from step_spread."""
    spread: object                 # a float, or {name: array}
    reference: object

    def allowed(self, expected, name=None, step_axis=False):
        spread = self.spread[name] if isinstance(self.spread, dict) else self.spread
        ref = np.abs(np.asarray(self.reference[name] if isinstance(self.reference, dict) else self.reference,
                                np.float64))
        axes = tuple(range(1 if step_axis else 0, ref.ndim))
        scale = (ref.max(axis=axes, keepdims=True) if axes else ref) if ref.size else 0.0
        return NOISE_MULTIPLE * np.asarray(spread) + RESULT_ULPS * U32 * scale

    def __str__(self):
        return (f"{NOISE_MULTIPLE:g} x spread of float64 torch steps moved 1 float32 ulp"
                f" + {RESULT_ULPS:g} ulps of the tensor's largest entry")
