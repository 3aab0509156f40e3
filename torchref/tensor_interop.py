"""torch.Tensor <-> np.ndarray: which conversions share memory and which copy.

Each row is checked by comparing buffer addresses, not asserted from the docs.
Twin: jaxport/tensor_interop.py.
"""
import numpy as np
import torch

from portcore import specs


def run() -> dict:
    """{'value': the list back from numpy, 'rows': [{'operation', 'shares_memory'}]}."""
    t = torch.tensor(specs.INTEROP_LIST)                # int64 (3, 3), a copy of the list
    as_numpy = t.numpy()                                # a view of the tensor's buffer
    back = torch.from_numpy(as_numpy)                   # a view again
    copied = torch.tensor(as_numpy)                     # torch.tensor always copies
    via_asarray = np.asarray(t)                         # __array__: a view on CPU
    rows = [
        ("torch.Tensor.numpy()", as_numpy.ctypes.data == t.data_ptr()),
        ("torch.from_numpy(ndarray)", back.data_ptr() == as_numpy.ctypes.data),
        ("torch.tensor(ndarray)", copied.data_ptr() == as_numpy.ctypes.data),
        ("np.asarray(tensor)", via_asarray.ctypes.data == t.data_ptr()),
    ]
    # Writes go through: the numpy view and the tensor are the same memory.
    as_numpy[0, 0] = 99
    seen = int(t[0, 0]) == 99
    as_numpy[0, 0] = specs.INTEROP_LIST[0][0]
    return {"value": t.numpy().tolist(), "dtype": str(t.dtype),
            "rows": [{"operation": op, "shares_memory": bool(s)} for op, s in rows],
            "numpy_view_writeable": bool(as_numpy.flags.writeable),
            "update_seen_by_original": seen}
