"""BCE at and next to saturation: jaxport.losses.bce against torch's
binary_cross_entropy, values and gradients. The training data never saturate the
logistic model (Iris is separable only slowly), so without this check a missing clamp
would pass the whole ladder."""
import itertools

import jax
import numpy as np
import torch

from jaxport import losses
from jaxport.numerics import dtype_scope, jax_device
from parity_tests.engine.parity import TOLERANCES, check
from torchref.numerics import torch_device, torch_dtype


def saturated_inputs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities exactly 0 and 1, one ulp inside them, the smallest subnormal, and a
    few ordinary values; labels 0, 1 and a soft 0.25; every pair."""
    one, zero = np.array(1, dtype), np.array(0, dtype)
    p = [zero, np.nextafter(zero, one), np.finfo(dtype).tiny, 1e-30, 1e-12, 1e-7, 0.3, 0.5,
         1 - 1e-7, np.nextafter(one, zero), one]
    pairs = list(itertools.product(np.asarray(p, dtype), (0.0, 1.0, 0.25)))
    return np.array([a for a, _ in pairs], dtype), np.array([b for _, b in pairs], dtype)  # (33,)


def check_saturated_bce(cell) -> None:
    with dtype_scope(cell.dtype):      # float64 arrays need x64, for this check only
        dtype, device = cell.dtype, cell.device
        p, y = saturated_inputs(dtype)
        pt = torch.tensor(p, dtype=torch_dtype(dtype), device=torch_device(device), requires_grad=True)
        yt = torch.tensor(y, dtype=torch_dtype(dtype), device=torch_device(device))
        per_sample = torch.nn.functional.binary_cross_entropy(pt, yt, reduction="none")
        mean = per_sample.mean()
        mean.backward()
        expected = {"per-sample loss": per_sample.detach().cpu().numpy(), "mean loss": mean.item(),
                    "gradient w.r.t. p": pt.grad.cpu().numpy()}
        pj, yj = (jax.device_put(a, jax_device(device)) for a in (p, y))
        per_sample_j = jax.vmap(lambda a, b: losses.bce(a[None], b[None]))(pj, yj)
        for how, value_and_grad in (("eager", jax.value_and_grad(losses.bce)),
                                    ("jit", jax.jit(jax.value_and_grad(losses.bce)))):
            value, grad = value_and_grad(pj, yj)
            actual = {"per-sample loss": np.asarray(per_sample_j), "mean loss": float(value),
                      "gradient w.r.t. p": np.asarray(grad)}
            for quantity in expected:
                check(actual[quantity], expected[quantity], rung="bce", tol=TOLERANCES[dtype],
                      quantity=f"{quantity} ({how})",
                      where=dict(example="losses.bce", form="-", dtype=dtype, device=device,
                                 config="p in {0, 1, 1 ulp inside, ...}"))
