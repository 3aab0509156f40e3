"""An LSTM reading each 8x8 digit as a sequence of 8 rows of 8 pixels: rnn LSTM(8, 64,
batch_first), the last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

The cell is nnx.LSTMCell with torch's second bias (jaxport/deep_layers.py), inside
nnx.RNN (the parameters' paths, rnn.cell.*), which the forward bypasses: the cell's
`sequence` runs all time steps as torch's CPU kernel does, the input side of every step
in one matmul and one matmul a step (jaxport/recurrent.py). Twin: torchref/lstm.py.
"""
from flax import nnx

from portcore import digits, registry
from jaxport.deep_layers import TorchLSTMCell
from jaxport.layers import torch_linear
from jaxport.losses import cross_entropy
from jaxport.numerics import jax_dtype

FORMS = registry.forms("lstm")
HIDDEN = 64


class RecurrentNet(nnx.Module):
    def __init__(self, cell_type, *, rngs: nnx.Rngs, dtype):
        # rngs=False: the carry starts at zeros (torch's h0 = c0 = 0), no key needed
        self.rnn = nnx.RNN(cell_type(digits.SIDE, HIDDEN, rngs=rngs, dtype=dtype), rngs=False)
        self.fc = torch_linear(HIDDEN, digits.N_CLASSES, rngs=rngs, dtype=dtype)

    def __call__(self, x):                             # (N, 8, 8): 8 steps of 8 pixels
        _, carry = self.rnn.cell.sequence(x)           # from zeros, as torch's h0 = c0 = 0
        # the last step's h, out[:, -1] of every step's (N, 8, 64): the final carry, so
        # that the gradient has no (N, 8, 64) array of zeros to carry back
        return self.fc(carry[1] if isinstance(carry, tuple) else carry)   # (N, 10) logits


loss_fn = cross_entropy


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """torch's init distributions (every LSTM entry U(+-1/sqrt(64))) from JAX's PRNG."""
    registry.check_form("lstm", form)
    return RecurrentNet(TorchLSTMCell, rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation's state at an epoch: the logits of the images `x`."""
    return model(x)                                    # (N, 10)
