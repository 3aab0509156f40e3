"""An LSTM reading each 8x8 digit as a sequence of 8 rows of 8 pixels: rnn LSTM(8, 64,
batch_first), the last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

The cell is nnx.LSTMCell with torch's second bias (jaxport/deep_layers.py), inside
SequenceRNN, an nnx.RNN (the parameters' paths, rnn.cell.*) that runs all time steps as
torch's CPU kernel does: the input side of every step in one matmul, one matmul a step
(jaxport/recurrent.py). Twin: torchref/lstm.py.
"""
import jax
from flax import nnx

from portcore import digits, registry
from jaxport.deep_layers import SequenceRNN, TorchLSTMCell, lstm_cell_view, pack_lstm_cell
from jaxport.layers import torch_linear
from jaxport.losses import cross_entropy
from jaxport.numerics import jax_dtype

FORMS = registry.forms("lstm")
HIDDEN = 64


class RecurrentNet(nnx.Module):
    def __init__(self, cell_type, *, rngs: nnx.Rngs, dtype):
        # rngs=False: the carry starts at zeros (torch's h0 = c0 = 0), no key needed
        self.rnn = SequenceRNN(cell_type(digits.SIDE, HIDDEN, rngs=rngs, dtype=dtype), rngs=False)
        self.fc = torch_linear(HIDDEN, digits.N_CLASSES, rngs=rngs, dtype=dtype)

    def __call__(self, x):                             # (N, 8, 8): 8 steps of 8 pixels
        out = self.rnn(x)                              # (N, 8, 64), every step's h, from zeros
        return self.fc(out[:, -1])                     # (N, 10) logits of the last step


loss_fn = cross_entropy
CELL = ("rnn", "cell")


def _keys(path) -> tuple:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def pack_params(params) -> dict:
    """The parameters as the compiled training loop carries them (jaxport/programs.py):
    the cell's 16 arrays as one block (deep_layers.pack_lstm_cell), fc's as they are.
    Why: Adam over 18 arrays was 54 small ops a step and the cell's concatenations of its
    gates' kernels 4 more; over the block the concatenations fold into slices and Adam is
    a few ops, entry by entry the same numbers (198 -> 154 ops a step)."""
    flat = {_keys(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
    cell = pack_lstm_cell({k[2:]: v for k, v in flat.items() if k[:2] == CELL})
    return {"cell": cell, **{".".join(k): v for k, v in flat.items() if k[:2] != CELL}}


def unpack_params(packed: dict, like):
    """pack_params' inverse: a tree like `like` (the parameters' State) of its arrays."""
    def leaf(path, _):
        k = _keys(path)
        return lstm_cell_view(packed["cell"], *k[2:]) if k[:2] == CELL else packed[".".join(k)]
    return jax.tree_util.tree_map_with_path(leaf, like)


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """torch's init distributions (every LSTM entry U(+-1/sqrt(64))) from JAX's PRNG."""
    registry.check_form("lstm", form)
    return RecurrentNet(TorchLSTMCell, rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation's state at an epoch: the logits of the images `x`."""
    return model(x)                                    # (N, 10)
