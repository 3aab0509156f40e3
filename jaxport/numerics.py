"""dtype and device names (the command line's words) to JAX objects.

Twin: torchref/numerics.py.
"""
import functools

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


class NoGPUError(RuntimeError):
    """--device gpu where JAX sees no GPU."""


def jax_dtype(dtype: str):
    """The JAX dtype; float64 only when x64 is on, since JAX would silently give float32."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use float32 or float64)")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("float64 needs jax_enable_x64: call "
                         "jax.config.update('jax_enable_x64', True) before creating arrays")
    return DTYPES[dtype]


def jax_device(device: str):
    # This process's first device: the same as jax.devices()[0] in one process; in a
    # multi-process run (jaxport/parallel.py) the global first belongs to process 0.
    if device == "cpu":
        return jax.local_devices(backend="cpu")[0]
    if device == "gpu":
        try:
            return jax.local_devices(backend="gpu")[0]
        except RuntimeError:
            raise NoGPUError("--device gpu: JAX sees no GPU on this machine") from None
    raise ValueError(f"unknown device {device!r} (use cpu or gpu)")


def dtype_scope(dtype: str):
    """jax_enable_x64 exactly as the dtype needs it, for one call: on for float64, off
    for float32. So jaxport's numbers for a dtype never depend on a global flag that
    its caller may or may not have set (with x64 on, Python scalars and integer
    counters would be computed in 64 bits inside a float32 run)."""
    return jax.enable_x64(dtype == "float64")


def dtype_scoped(fn):
    """Run `fn` inside dtype_scope(its `dtype` keyword, float32 by default)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with dtype_scope(kwargs.get("dtype", "float32")):
            return fn(*args, **kwargs)
    return wrapper


def enable_x64() -> None:
    """float64 everywhere it is asked for; call before any array exists."""
    jax.config.update("jax_enable_x64", True)


def pin_numerics() -> None:
    """Full float32 precision for matmuls: without this, recent GPUs run float32
    matmuls as TF32 (or bf16 passes) and drift from torch, whose matmul TF32 is off."""
    jax.config.update("jax_default_matmul_precision", "highest")
