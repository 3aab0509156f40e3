"""dtype and device names (the command line's words) to torch objects.

Twin: jaxport/numerics.py.
"""
import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class NoGPUError(RuntimeError):
    """--device gpu where torch sees no CUDA device."""


def torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use float32 or float64)")
    return DTYPES[dtype]


def torch_device(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device == "gpu":
        if not torch.cuda.is_available():
            raise NoGPUError("--device gpu: torch sees no CUDA GPU on this machine")
        return torch.device("cuda")
    raise ValueError(f"unknown device {device!r} (use cpu or gpu)")


def pin_numerics() -> None:
    """Full float32 precision on GPU: TF32 off for matmul and for cuDNN convolutions
    (torch's defaults are off and on), and deterministic kernels where they exist."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
