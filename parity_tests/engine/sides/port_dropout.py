"""check_port's `dropout=True`: training compared with dropout on.

torch's and JAX's random streams can never draw the same bits, so by default both
copies run with dropout off. With the option, each `nn.Dropout` of the torch copy and
each `nnx.Dropout` of the NNX clone is swapped for the project's hash-mask dropout
(portcore/dropout_hash.py: the mask a function of (key, step, sample, unit), computed
bit for bit alike by torchref.shared_dropout and jaxport.deep_layers.SharedDropout).
The pairs are matched like every other layer, by structure, through their one piece of
state, the step counter, which crosses from torch with the weights (the Dropout kind's
`step`): rung 5 starts each NNX step from torch's counters, the free run keeps its own.
Each torch layer's counter starts at its own multiple of STRIDE, so that two layers of
one shape do not drop the same units.

Units are the trailing axes flattened in torch's order; an NHWC map (`input_layout=
"nhwc"`) is read in torch's (C, H, W) order. Only `nn.Dropout` is swapped: Dropout1d/2d/3d
and AlphaDropout drop otherwise and are refused in one line, as is dropout inside
nn.LSTM/GRU (which check_port switches off either way).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxport.deep_layers import SharedDropout as NnxShared
from parity_tests.engine.sides.port_objectives import PortInputError
from torchref.shared_dropout import SharedDropout as TorchShared

STRIDE = 2 ** 20            # steps between two layers' starting counters (a run is far shorter)


class SharedDropout(TorchShared):
    """torchref's SharedDropout on any (N, ...) input (kind: Dropout with its counter)."""

    def forward(self, x):
        return super().forward(x.reshape(len(x), -1)).reshape(x.shape)


class NnxSharedDropout(NnxShared):
    """jaxport's SharedDropout on any (N, ...) input; an NHWC map in torch's order."""

    def __init__(self, rate: float, channels_last: bool):
        super().__init__(rate)
        self.channels_last = channels_last

    def __call__(self, x):
        if self.channels_last and x.ndim == 4:          # NHWC -> torch's (C, H, W) units and back
            n, h, w, c = x.shape
            out = super().__call__(jnp.transpose(x, (0, 3, 1, 2)).reshape(n, -1))
            return jnp.transpose(out.reshape(n, c, h, w), (0, 2, 3, 1))
        return super().__call__(x.reshape(x.shape[0], -1)).reshape(x.shape)


def swap_torch(model) -> None:
    """Every nn.Dropout of the torch copy (in place) becomes SharedDropout, its counter
    at its own multiple of STRIDE."""
    import torch  # noqa: PLC0415
    count = 0
    for path, module in list(model.named_modules()):
        if isinstance(module, TorchShared):             # the deep examples' own: on again, as its twin
            module.train()
            continue
        if not isinstance(module, torch.nn.modules.dropout._DropoutNd):
            continue
        if type(module) is not torch.nn.Dropout:
            raise PortInputError(f"dropout=True swaps nn.Dropout only; {path!r} is a {type(module).__name__} "
                                 "(it drops whole channels or keeps the mean): pass dropout=False")
        parent, _, name = path.rpartition(".")
        shared = SharedDropout(module.p)
        with torch.no_grad():
            shared.step.fill_(count * STRIDE)
        setattr(model.get_submodule(parent) if parent else model, name, shared)
        count += 1


def swap_nnx(clone, channels_last: bool) -> None:
    """Every nnx.Dropout of the clone (in place) becomes NnxSharedDropout, and every
    hash-mask dropout is on; its counter is torch's, written by load_nnx."""
    for path, module in list(nnx.iter_modules(clone)):
        if type(module) is not nnx.Dropout:
            continue
        parent = clone
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        shared = NnxSharedDropout(module.rate, channels_last)
        if isinstance(path[-1], int):
            parent[path[-1]] = shared
        else:
            setattr(parent, path[-1], shared)
    dropout_on(clone)


def dropout_on(model) -> None:
    """The hash-mask dropouts back on after an eval-mode split (port_nnx.NnxRunner)."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, NnxShared):
            module.deterministic = False
