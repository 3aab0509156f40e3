"""A user's two models made comparable: the harness's own float copies of both, the
torch model's weights copied into the NNX model through the one converter
(portcore/convert.py), and the maps that carry gradients and optimizer moments from
torch's names and layout to NNX's state paths.

Nothing here touches the caller's models: torch's is deep-copied, NNX's cloned.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from portcore import convert
from portcore.kinds import Buffer, LayerKind
from portcore.recurrent_kinds import GRU, LSTM

from parity_tests.engine.sides.port_objectives import PortInputError
from parity_tests.engine.sides.pytrees import map_leaves

TORCH_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class HookKind(LayerKind):
    """A per-layer conversion hook as a layer kind: `fn(torch arrays by relative name)`
    returns {path relative to the NNX layer: array}."""
    fn: object = None
    shapes: tuple = ()                 # ((name, shape), ...) of torch's layer

    def param_shapes(self):
        return dict(self.shapes)

    def to_flax(self, arrays):
        return {tuple(k) if isinstance(k, tuple) else tuple(k.split(".")): np.asarray(v)
                for k, v in self.fn(dict(arrays)).items()}


def path_text(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def torch_arrays(model) -> dict:
    """{torch name: numpy array} of the parameters and the running statistics."""
    return {n: t.detach().cpu().numpy().copy() for n, t in [*model.named_parameters(), *model.named_buffers()]
            if not n.endswith("num_batches_tracked")}


def layer_kinds(torch_model, nnx_paths: set, flax_paths: dict, hooks: dict) -> dict:
    """{torch layer path: kind} for every torch module that holds arrays, in order.
    A stock nnx.LSTMCell sums torch's two biases; a cell whose input Linears carry a
    bias (and a GRU cell with a hidden bias) takes them one to one: read off the NNX
    state, which slots exist. A module of the user's own class (no kind) holding bare
    nn.Parameters or buffers gives each its own layer at its full name, mapped one to
    one onto the NNX attribute of that name under the module's NNX path (added to
    `flax_paths` where the module's path was matched to another)."""
    layers = {}
    for path, module in torch_model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        own.update({n: b for n, b in module.named_buffers(recurse=False) if n != "num_batches_tracked"})
        if path in hooks:
            hook = hooks[path]
            layers[path] = hook if isinstance(hook, LayerKind) else HookKind(
                hook, tuple((n, tuple(v.shape)) for n, v in own.items()))
            continue
        if not own:
            continue
        try:
            kind = convert.of_torch(module)
        except convert.NoKind as error:
            if type(module).__module__.startswith("torch."):   # torch's own class: its layout is not known
                raise PortInputError(f"torch layer {path!r}: {error}; give its kind or a conversion hook: "
                                     f"convert={{{path!r}: ...}}") from None
            layers.update(_bare_parameters(path, module, own, flax_paths))
            continue
        except ValueError as error:
            raise PortInputError(f"torch layer {path!r}: {error} (give a conversion hook for it)") from None
        except AttributeError as error:            # a class of its own under a torch name (nanoGPT's LayerNorm)
            raise PortInputError(f"torch layer {path!r} is a {type(module).__name__} without torch's attributes "
                                 f"({error}): give its kind or a conversion hook in convert") from None
        head = flax_paths.get(path, convert.flax_path(path))
        if isinstance(kind, LSTM):
            kind = dataclasses.replace(kind, flax_input_bias=head + ("cell", "ii", "bias") in nnx_paths)
        if isinstance(kind, GRU):
            kind = dataclasses.replace(kind, flax_hidden_bias=head + ("cell", "dense_h", "bias") in nnx_paths)
        layers[path] = kind
    return layers


def _bare_parameters(path: str, module, own: dict, flax_paths: dict) -> dict:
    """A kind-less module's own arrays as Parameter layers, its buffers as Buffer
    layers (state that crosses with the weights, like BatchNorm's statistics)."""
    params = dict(module.named_parameters(recurse=False))
    layers = {}
    for n, p in own.items():
        full = convert.torch_name(path, n)
        layers[full] = convert.of_torch(p) if n in params else Buffer(tuple(p.shape))
        if path in flax_paths:
            flax_paths.setdefault(full, tuple(flax_paths[path]) + (n,))
    return layers


@dataclass
class Port:
    """The harness's copies of both models and how their arrays correspond."""
    torch_model: object                # a deep copy, in the run's dtype, train mode, dropout off
    nnx_model: object                  # a clone holding torch's weights (see load_nnx)
    layers: dict                       # {torch layer path: kind}
    flax_paths: dict                   # {torch layer path: NNX path tuple}
    dtype: str
    input_layout: str | None           # None, or "nhwc": NNX takes torch's NCHW input transposed
    output: object = None              # the output leaf compared (pytrees.select), None: all
    dropout: bool = False              # check_port's dropout=True: hash-mask dropout on (port_dropout.py)

    def to_nnx(self, arrays: dict) -> dict:
        """torch-named arrays -> {NNX path: array} (parameters and running statistics)."""
        return convert.to_flax(self.layers, arrays, self.flax_paths)

    def nnx_input(self, x):
        """torch's x for the NNX model (each of several inputs): NCHW as NHWC where asked."""
        def one(a):
            a = np.asarray(a)
            return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if self.input_layout == "nhwc" and a.ndim == 4 else a
        return map_leaves(one, x)

    def output_in_torch_layout(self, out: np.ndarray) -> np.ndarray:
        """An NNX output as torch's: NHWC maps back to NCHW when the input layout is nhwc."""
        return out.transpose(0, 3, 1, 2) if self.input_layout == "nhwc" and np.ndim(out) == 4 else out

    def layer_of(self, name) -> str:
        """The torch layer path a torch name ("fc.weight") or NNX path belongs to (a
        bare Parameter's is its own name)."""
        if isinstance(name, tuple):
            heads = {p: self.flax_paths.get(p, convert.flax_path(p)) for p in self.layers}
            return max((p for p, h in heads.items() if name[:len(h)] == h), key=lambda p: len(heads[p]),
                       default=path_text(name[:-1]))
        return name if name in self.layers else name.rpartition(".")[0]

    def pullback_index(self, names) -> dict:
        """For each torch name, where its entries land in NNX's state: {name: [(NNX path,
        flat positions in the NNX array, flat positions in torch's)]}. The converter's
        rules move entries (transposes, splits) or add two tensors (LSTM's biases), so
        pushing each tensor's entry numbers through alone, the others zero, finds them
        exactly. Gradients and optimizer moments map entry by entry this way: the
        gradient of a summed bias is each summand's gradient."""
        shapes = {**convert.param_shapes(self.layers), **convert.state_shapes(self.layers)}
        out = {}
        for name in names:
            layer = self.layer_of(name)
            probe = {n: np.zeros(s) for n, s in shapes.items() if self.layer_of(n) == layer}
            probe[name] = np.arange(1, int(np.prod(shapes[name])) + 1, dtype=np.float64).reshape(shapes[name])
            spots = []
            for path, value in convert.to_flax({layer: self.layers[layer]}, probe, self.flax_paths).items():
                flat = np.ravel(value)
                where = np.flatnonzero(flat)
                if where.size:
                    spots.append((path, where, flat[where].astype(np.int64) - 1))
            out[name] = spots
        return out


def torch_to_nnx_entries(index: dict, arrays: dict, nnx_shapes: dict, dtype) -> dict:
    """Per-entry quantities (gradients, moments) from torch's names onto NNX's paths."""
    out = {path: np.zeros(shape, dtype) for path, shape in nnx_shapes.items()}
    for name, spots in index.items():
        for path, at_nnx, at_torch in spots:
            out[path].reshape(-1)[at_nnx] = np.ravel(arrays[name])[at_torch]
    return out


def nnx_to_torch_entries(index: dict, arrays: dict, torch_shapes: dict) -> dict:
    """The reverse: NNX-path per-entry quantities in torch's names and layout (an entry
    that reaches NNX in two places takes the first)."""
    out = {}
    for name, spots in index.items():
        value = np.full(int(np.prod(torch_shapes[name])), np.nan)
        for path, at_nnx, at_torch in reversed(spots):
            value[at_torch] = np.ravel(arrays[path])[at_nnx]
        out[name] = value.reshape(torch_shapes[name])
    return out


def torch_copy(torch_model, dtype: str):
    """The caller's torch model deep-copied, in `dtype`, training mode with dropout off:
    torch's and JAX's random streams cannot agree, so dropout is compared off. That
    includes an LSTM/GRU/RNN's own `dropout` between its layers (RNNModel of the PyTorch
    examples' word_language_model passes its 0.5 there), which train mode applies: left
    on, the torch side is random, and the spread of its own steps widened rungs 2-3's
    tolerance until a 2-layer LSTM with dropout 0.5 passed every rung against an NNX
    side without (zoo_wordlm.py, 1 of 6 seeds)."""
    import torch  # noqa: PLC0415
    if dtype not in TORCH_DTYPES:
        raise PortInputError(f"unknown dtype {dtype!r} (use float32 or float64)")
    model = copy.deepcopy(torch_model).to(getattr(torch, dtype)).train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):   # Dropout2d, AlphaDropout too
            module.eval()
        if isinstance(module, torch.nn.RNNBase):
            module.dropout = 0.0
    return model
