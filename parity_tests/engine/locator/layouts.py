"""Which axes of a torch activation are which of its NNX twin's, decided by the module
pair that produced it, not guessed from the shape.

torch keeps channels on axis 1 (NCHW, and (N, C, L) for Conv1d), Flax's convolutions
last (NHWC); torch's nn.LSTM/GRU/RNN without batch_first runs sequence-first (T, N, H),
nnx.RNN batch-first unless time_major. A shape says nothing when two axes have one
size (8 channels on an 8x8 map; as many steps as rows): a guess by shape then compares
a correct port's activations in the wrong order and blames it. So:

- where both modules declare a layout (a torch conv, norm or pool against nnx.Conv,
  nnx.ConvTranspose, nnx.BatchNorm or nnx.GroupNorm with its feature axis; a torch
  recurrent layer's batch_first against nnx.RNN's or nnx.Bidirectional's time_major),
  the first input and the first output are permuted by that;
- elsewhere (a block of the user's, a Linear after a transpose inside the model) the
  candidates are the permutations that give the NNX shape (as is, channels last,
  the first two axes swapped), and the one under which the two agree best is taken:
  a correct port agrees under its layout, and a port that differs under every one is
  reported at its smallest difference.
"""
from __future__ import annotations

import numpy as np
from flax import nnx

_TORCH_CHANNELS_FIRST = {
    f"{base}{d}d" for base in ("Conv", "ConvTranspose", "BatchNorm", "InstanceNorm", "MaxPool", "AvgPool",
                               "AdaptiveAvgPool", "AdaptiveMaxPool", "LazyConv", "LPPool", "Dropout")
    for d in (1, 2, 3)} | {"GroupNorm", "Upsample", "PixelShuffle"}
_TORCH_RECURRENT = {"LSTM", "GRU", "RNN"}


def _channels_last(ndim: int) -> tuple:
    return (0,) + tuple(range(2, ndim)) + (1,) if ndim > 2 else tuple(range(ndim))


def _swap01(ndim: int) -> tuple:
    return (1, 0) + tuple(range(2, ndim)) if ndim >= 2 else tuple(range(ndim))


def _torch_layout(module) -> str | None:
    name = type(module).__name__
    if name in _TORCH_RECURRENT and hasattr(module, "batch_first"):
        return "batch" if module.batch_first else "time"
    if name in _TORCH_CHANNELS_FIRST and type(module).__module__.startswith("torch.nn"):
        return "first"
    return None


def _nnx_layout(module) -> str | None:
    if isinstance(module, (nnx.RNN, nnx.Bidirectional)):
        return "time" if module.time_major else "batch"
    if isinstance(module, (nnx.Conv, nnx.ConvTranspose)):
        return "last"
    axis = getattr(module, "axis", None) if isinstance(module, nnx.BatchNorm) else (
        getattr(module, "feature_axis", None) if isinstance(module, nnx.GroupNorm) else None)
    return "last" if axis == -1 else "first" if axis == 1 else None


def known_perm(torch_module, nnx_module, ndim: int) -> tuple | None:
    """The permutation of a torch activation's axes into the NNX module's layout, when
    both modules declare theirs; None when either does not."""
    t, j = _torch_layout(torch_module), _nnx_layout(nnx_module)
    if {t, j} <= {"time", "batch"}:
        return _swap01(ndim) if t != j else tuple(range(ndim))
    if t == "first" and j in ("first", "last"):
        return _channels_last(ndim) if j == "last" else tuple(range(ndim))
    return None


def candidates(ndim: int) -> list:
    """As is first (ties go to it), then channels last, then the first two axes swapped."""
    return list(dict.fromkeys((tuple(range(ndim)), _channels_last(ndim), _swap01(ndim))))


def difference(a: np.ndarray, e: np.ndarray, floor: float = 0.0) -> tuple[float, float, float]:
    """(max |diff|, max |diff| / |torch| elementwise, max |diff| / (rtol scale)) of NNX's
    `a` against torch's `e`; the scale is the tensor's largest entry, or `floor` where
    that is larger."""
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    d = np.abs(a - e)
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(d > 0, d / np.abs(e), 0.0)
    largest = float(d.max(initial=0.0))
    over = largest / scale if scale else (0.0 if not d.any() else np.inf)
    return largest, float(np.nanmax(rel, initial=0.0)), over


def pair_values(torch_values: list, nnx_values: list, known: tuple | None = None, perms: list | None = None):
    """[(torch value in NNX layout, NNX value)] and the permutation used for each torch
    value (None where it has no partner). Each torch value takes the first unused NNX
    value that one of its permutations fits: the known one for the first value where
    given, or `perms[k]` (those chosen for the outputs, reused for their gradients),
    else the best-agreeing candidate."""
    used, pairs, chosen = set(), [], []
    for k, t in enumerate(torch_values):
        if t is None:
            chosen.append(None)
            continue
        t = np.asarray(t)
        if perms is not None and k < len(perms) and perms[k] is not None:
            options = [perms[k]]
        elif known is not None and k == 0 and len(known) == t.ndim:
            options = [known]
        else:
            options = candidates(t.ndim)
        for m, j in enumerate(nnx_values):
            fits = [] if m in used or j is None else [p for p in options if t.transpose(p).shape == np.shape(j)]
            if fits:
                perm = min(fits, key=lambda p: difference(j, t.transpose(p))[2]) if len(fits) > 1 else fits[0]
                used.add(m)
                pairs.append((t.transpose(perm), j))
                chosen.append(perm)
                break
        else:
            chosen.append(None)
    return pairs, chosen
