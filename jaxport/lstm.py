"""An LSTM reading each 8x8 digit as a sequence of 8 rows of 8 pixels: rnn LSTM(8, 64,
batch_first), the last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

The cell is nnx.LSTMCell with torch's second bias (jaxport/deep_layers.py), inside
SequenceRNN, an nnx.RNN (the parameters' paths, rnn.cell.*) that runs all time steps as
torch's CPU kernel does: the input side of every step in one matmul, one matmul a step
(jaxport/recurrent.py). Twin: torchref/lstm.py.
"""
from flax import nnx

from portcore import digits, registry
from jaxport.deep_layers import SequenceRNN, TorchLSTMCell
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


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """torch's init distributions (every LSTM entry U(+-1/sqrt(64))) from JAX's PRNG."""
    registry.check_form("lstm", form)
    return RecurrentNet(TorchLSTMCell, rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation's state at an epoch: the logits of the images `x`."""
    return model(x)                                    # (N, 10)
