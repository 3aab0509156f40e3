"""jax.Array <-> torch.Tensor through DLPack, for `python -m examples run tensor_interop
--backend jax`. It imports both frameworks, so only the command line imports it, lazily.
"""
import jax
import jax.numpy as jnp
import torch

from portcore import specs


def run() -> dict:
    """{'rows': [{'operation', 'shares_memory'}]}, checked by buffer address."""
    a = jnp.asarray(specs.INTEROP_LIST, dtype=jnp.float32)
    t = torch.from_dlpack(a)                  # zero-copy: torch views XLA's buffer
    t2 = torch.tensor(specs.INTEROP_LIST, dtype=torch.float32)
    b = jax.dlpack.from_dlpack(t2)            # zero-copy when XLA accepts the alignment
    c = jnp.asarray(t2.numpy())               # via numpy: always a copy
    rows = [
        ("torch.from_dlpack(jax.Array)", t.data_ptr() == a.unsafe_buffer_pointer()),
        ("jax.dlpack.from_dlpack(torch.Tensor)", b.unsafe_buffer_pointer() == t2.data_ptr()),
        ("jnp.asarray(tensor.numpy())", c.unsafe_buffer_pointer() == t2.data_ptr()),
    ]
    return {"rows": [{"operation": op, "shares_memory": bool(s)} for op, s in rows]}
