"""An example of checking your own port with the parity harness: a model that is not one
of the tutorial's, an MLP with LayerNorm and GELU, written in PyTorch and in Flax NNX.

    python -m examples.own_port                     # check_port, float64, and its table
    python -m examples.own_port --data port.npz     # write the data, then the CI gate:
    python -m parity_tests check examples.own_port:TorchMLP examples.own_port:NnxMLP --data port.npz

The NNX twin pins the two defaults that differ between the libraries (docs/design.md,
"Layer kinds"): LayerNorm's epsilon (torch 1e-5, Flax 1e-6) and GELU (torch exact erf,
jax.nn.gelu's default the tanh approximation). `eps` and `approximate` exist only so
that the harness's tests can plant those two bugs.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

FEATURES, HIDDEN, OUTPUTS = 4, 32, 1


def make_data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = a smooth function of 4 features plus noise, (n, 4) and (n, 1), float64."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, FEATURES))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3] - 0.3 * x[:, 3:4] + 0.1 * rng.standard_normal((n, 1))
    return x, y


def TorchMLP():  # noqa: N802 (a factory named like the class it builds)
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(FEATURES, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)
            self.out = nn.Linear(HIDDEN, OUTPUTS)

        def forward(self, x):
            return self.out(nn.functional.gelu(self.norm(self.inp(x))))
    torch.manual_seed(0)
    return MLP()


def NnxMLP(eps: float = 1e-5, approximate: bool = False):  # noqa: N802
    import jax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.inp = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
            self.norm = nnx.LayerNorm(HIDDEN, epsilon=eps, rngs=rngs)      # torch's eps, not Flax's 1e-6
            self.out = nnx.Linear(HIDDEN, OUTPUTS, rngs=rngs)

        def __call__(self, x):
            # torch's F.gelu is the exact erf form; jax.nn.gelu defaults to tanh's
            return self.out(jax.nn.gelu(self.norm(self.inp(x)), approximate=approximate))
    return MLP(nnx.Rngs(0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.own_port", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="write the data to this .npz (for `python -m parity_tests check`) and stop")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    x, y = make_data()
    if args.data:
        np.savez(args.data, x=x, y=y)
        print(f"wrote {args.data}: x {x.shape}, y {y.shape}")
        return 0
    from parity_tests.harness import check_port  # noqa: PLC0415
    report = check_port(TorchMLP(), NnxMLP(), x, y, loss="mse", optimizer="adam", lr=1e-2,
                        steps=args.steps, batch_size=32, dtype=args.dtype)
    print(report.markdown())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
