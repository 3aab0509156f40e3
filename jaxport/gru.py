"""A GRU reading each 8x8 digit as 8 rows of 8 pixels: rnn GRU(8, 64, batch_first), the
last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

The cell is nnx.GRUCell with a bias on dense_h, torch's b_hh: b_hn has no other slot
(jaxport/deep_layers.py). Twin: torchref/gru.py.
"""
from flax import nnx

from jaxport.deep_layers import TorchGRUCell
from jaxport.lstm import RecurrentNet, cross_entropy, frame  # noqa: F401  (the same network)
from jaxport.numerics import jax_dtype
from portcore import registry

FORMS = registry.forms("gru")
loss_fn = cross_entropy


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """torch's init distributions (every GRU entry U(+-1/sqrt(64))) from JAX's PRNG."""
    registry.check_form("gru", form)
    return RecurrentNet(TorchGRUCell, rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))
