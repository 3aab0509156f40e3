"""nn.LayerNorm, nn.GroupNorm, nn.Embedding, F.gelu and F.leaky_relu with torch's numerics,
as Flax NNX layers. Twins: torch.nn.LayerNorm, GroupNorm, Embedding, functional.gelu,
functional.leaky_relu."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def gelu(x, approximate: str = "none"):
    """torch.nn.functional.gelu: the exact erf form by default, where jax.nn.gelu's
    default is the tanh approximation (approximate="tanh" asks for that one)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"jaxport.nn.gelu: approximate={approximate!r}; pass 'none' or 'tanh'")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def leaky_relu(x, negative_slope: float = 0.01):
    """torch.nn.functional.leaky_relu: x where x > 0, else negative_slope * x. At 0
    itself torch's gradient is the slope, jax.nn.leaky_relu's (x >= 0) is 1: a zero
    input (a zero-padded or ReLU'd map) would train differently."""
    return jnp.where(x > 0, x, negative_slope * x)


class LayerNorm(nnx.LayerNorm):
    """torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)
    over the last axis. What differs from nnx.LayerNorm's defaults: epsilon 1e-5 (Flax's
    1e-6), the variance as mean((x - mean)^2) like torch (Flax's fast E[x^2] - E[x]^2
    cancels in float32), and bias=False / elementwise_affine=False as torch's."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, rngs: nnx.Rngs, dtype=jnp.float32):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if len(shape) != 1:
            raise ValueError(f"jaxport.nn.LayerNorm: normalized_shape {shape}; only the last axis is supported "
                             "(pass an int)")
        super().__init__(shape[0], epsilon=eps, use_bias=elementwise_affine and bias, use_scale=elementwise_affine,
                         use_fast_variance=False, dtype=dtype, param_dtype=dtype, rngs=rngs)


class GroupNorm(nnx.GroupNorm):
    """torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True) on CHANNELS-LAST
    input (N, ..., C): torch's (N, C, H, W) map transposed to (N, H, W, C). Both split the
    channels into num_groups contiguous runs. What differs from nnx.GroupNorm's defaults:
    epsilon 1e-5 (Flax's 1e-6), torch's argument order, and the two-pass variance."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 rngs: nnx.Rngs, dtype=jnp.float32):
        if num_channels % num_groups:
            raise ValueError(f"jaxport.nn.GroupNorm: num_channels {num_channels} is not divisible by "
                             f"num_groups {num_groups}")
        super().__init__(num_channels, num_groups=num_groups, epsilon=eps, use_bias=affine, use_scale=affine,
                         use_fast_variance=False, dtype=dtype, param_dtype=dtype, rngs=rngs)


class Embedding(nnx.Embed):
    """torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None): the table
    ~ N(0, 1) (nnx.Embed's default is variance scaling), the row at padding_idx starting
    at zero and getting a zero gradient, as torch's. Not supported: max_norm,
    scale_grad_by_freq (pass their defaults)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 scale_grad_by_freq: bool = False, *, rngs: nnx.Rngs, dtype=jnp.float32):
        if max_norm is not None or scale_grad_by_freq:
            raise ValueError("jaxport.nn.Embedding: max_norm and scale_grad_by_freq are not supported; "
                             "pass max_norm=None, scale_grad_by_freq=False")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"jaxport.nn.Embedding: padding_idx {padding_idx} outside the "
                                 f"{num_embeddings} rows")
            padding_idx %= num_embeddings               # torch's -1 is the last row
        self.padding_idx = padding_idx
        super().__init__(num_embeddings, embedding_dim, embedding_init=nnx.initializers.normal(1.0),
                         dtype=dtype, param_dtype=dtype, rngs=rngs)
        if padding_idx is not None:
            self.embedding[...] = self.embedding[...].at[padding_idx].set(0)

    def __call__(self, inputs):
        table = self.embedding[...]
        if self.padding_idx is not None:     # the row's value is used, its gradient stops
            table = table.at[self.padding_idx].set(jax.lax.stop_gradient(table[self.padding_idx]))
        if not jnp.issubdtype(jnp.asarray(inputs).dtype, jnp.integer):
            raise ValueError("jaxport.nn.Embedding: pass integer indices")
        return jnp.take(table, inputs, axis=0)
