"""jax.Array <-> np.ndarray: which conversions share memory and which copy.

jax.Arrays are immutable, so numpy views of them are read-only; importing into JAX
shares memory only through DLPack, and only when dtype and alignment suit XLA.
Each row is checked by comparing buffer addresses. The jax.Array <-> torch.Tensor
exchange lives in examples/interop.py, since this package never imports torch.
Twin: torchref/tensor_interop.py.
"""
import jax
import jax.numpy as jnp
import numpy as np

from portcore import specs


def address(array) -> int:
    """The buffer address of a jax.Array or np.ndarray."""
    if isinstance(array, jax.Array):
        return array.unsafe_buffer_pointer()
    return array.__array_interface__["data"][0]


def run() -> dict:
    """{'value': the list back from numpy, 'rows': [{'operation', 'shares_memory'}]}."""
    a = jnp.asarray(specs.INTEROP_LIST)     # int32 unless x64 is on: JAX's default ints
    as_numpy = np.asarray(a)                # a read-only view on CPU
    via_dlpack = np.from_dlpack(a)          # zero-copy through DLPack
    host = np.array(specs.INTEROP_LIST, dtype=as_numpy.dtype)
    imported = jnp.asarray(host)            # always a copy into an XLA buffer
    dl_imported = jax.dlpack.from_dlpack(host)   # zero-copy only if 64-byte aligned
    rows = [
        ("np.asarray(jax.Array)", address(as_numpy) == address(a)),
        ("np.from_dlpack(jax.Array)", address(via_dlpack) == address(a)),
        ("jnp.asarray(ndarray)", address(imported) == address(host)),
        ("jax.dlpack.from_dlpack(ndarray)", address(dl_imported) == address(host)),
    ]
    # No in-place writes: .at[].set returns a new array and leaves `a` unchanged.
    updated = a.at[0, 0].set(99)
    return {"value": as_numpy.tolist(), "dtype": str(a.dtype),
            "rows": [{"operation": op, "shares_memory": bool(s)} for op, s in rows],
            "numpy_view_writeable": bool(as_numpy.flags.writeable),
            "update_seen_by_original": int(a[0, 0]) == 99 and int(updated[0, 0]) == 99}
