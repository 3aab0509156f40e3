"""One record per example: everything the command line, the plots, the bench and the
parity suite need to know about it, so that no code outside an example's own files
branches on its name. Adding an example is a record here and its twin modules
`torchref/<name>.py` and `jaxport/<name>.py` (docs/design.md, "Adding an example").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from portcore import convert, datasets, specs
from portcore.kinds import LayerKind, Linear


@dataclass(frozen=True)
class PlotStyle:
    """The tutorial's figure for an example: labels and limits, and what the green line
    draws: "curve", the model's output at the data's x, or "boundary", the straight
    decision boundary w0 x + w1 y + b = 0 of the first layer."""
    title: str
    xlabel: str
    ylabel: str
    xlim: tuple
    ylim: tuple
    text_xy: tuple           # where "Epoch = .., Loss = .." goes, in data coordinates
    draws: str = "curve"
    classes: tuple = ()      # scatter colours by label: ((label, colour), ...); () one colour


@dataclass(frozen=True)
class Example:
    name: str
    summary: str
    data: Callable[[int], tuple]                      # seed -> (x, y), numpy float64
    layers: Mapping[str, LayerKind] = field(default_factory=dict)  # torch path -> kind; {}: a demo
    defaults: specs.TrainConfig | None = None
    # How the model can be built; each form's Sequential index per layer ({}: the class's names).
    forms: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: {"class": {}})
    loss: str = ""
    metric: str | None = None                          # "accuracy": probability >= 0.5 on the label's side
    plot: PlotStyle | None = None
    variant_epochs: int | None = None                  # the suite's variant runs, when the default is long
    chaotic: bool = False                              # its default free run has a predictability horizon
    input_shapes: Mapping[str, tuple] = field(default_factory=dict)  # per layer, for flops()
    # A demo's output: "values" (named numbers in the dtype, which `compare` compares) or
    # "interop" (which conversions copy and which share memory; nothing to compare).
    demo: str = ""
    # bench's targets for the tutorial-size float32 CPU run: (eager/jax at least, jax/floor
    # at most, or None); printed as met or missed, never asserted.
    speed_target: tuple | None = None
    labels: str = "float"        # "int": y holds class indices (cross-entropy), not numbers

    @property
    def trainable(self) -> bool:
        return bool(self.layers)

    def label_dtype(self, dtype: str) -> str:
        """The dtype y crosses to a backend in: the run's, or "int" for class indices."""
        return "int" if self.labels == "int" else dtype

    def param_shapes(self) -> dict[str, tuple]:
        return convert.param_shapes(self.layers)

    def flops(self) -> int:
        """Forward FLOPs per sample (convert.flops); layers other than Linear need their
        input shape in `input_shapes`."""
        return sum(k.flops(self.input_shapes.get(p, ())) for p, k in self.layers.items())

    def grid(self) -> np.ndarray:
        """Inputs for the fitted model's predictions (the ladder's rung 7): the plot's axes."""
        if self.plot.draws == "boundary":
            a, b = np.meshgrid(np.linspace(*self.plot.xlim, 21), np.linspace(*self.plot.ylim, 17))
            return np.c_[a.ravel(), b.ravel()]
        return np.linspace(*self.plot.xlim, 211)[:, None]


RECORDS = (
    Example("bce_from_primitives", "BCE through the library and written from primitives (1.8834)",
            datasets.bce_inputs, demo="values"),
    Example("linear_regression", "Linear(1, 1) on y = 5 + 5x + noise, MSE, SGD", datasets.line,
            {"linear": Linear(1, 1)}, specs.TrainConfig(epochs=100, batch_size=100, lr=0.2, optimizer="sgd"),
            loss="mse", plot=PlotStyle("Linear Regression", "x", "y", (-1.5, 1.5), (-1, 16), (0.8, 1.0))),
    Example("logistic_regression", "Linear(2, 1) + sigmoid on Iris setosa/versicolor, BCE, SGD", datasets.iris,
            {"linear": Linear(2, 1)}, specs.TrainConfig(epochs=100, batch_size=100, lr=0.2, optimizer="sgd"),
            loss="bce", metric="accuracy",
            plot=PlotStyle("Logistic Regression", "SepalLength (cm)", "SepalWidth (cm)", (3.5, 8.5), (1, 5),
                           (7.5, 1.5), draws="boundary", classes=((0, "red", "Setosa"), (1, "blue", "Versicolor")))),
    Example("neural_network", "1 -> 200 -> 100 -> 1 ReLU MLP on sin x + noise, MSE, Adam", datasets.sine,
            {"hidden_1": Linear(1, 200), "hidden_2": Linear(200, 100), "output": Linear(100, 1)},
            specs.TrainConfig(epochs=1000, batch_size=100, lr=0.01, optimizer="adam"),
            # nn.Sequential numbers its children; the ReLUs take indices 1 and 3.
            forms={"class": {}, "sequential": {"hidden_1": 0, "hidden_2": 2, "output": 4}},
            loss="mse", plot=PlotStyle("Neural Networks Regression Analysis", "x", "y", (-10.5, 10.5),
                                       (-1.5, 2), (6.0, -1.0)),
            variant_epochs=25, chaotic=True, speed_target=(8.0, 3.0)),
    Example("tensor_interop", "numpy <-> torch.Tensor <-> jax.Array, with and without copies",
            lambda seed: (np.array(specs.INTEROP_LIST, dtype=np.float64), np.zeros(0)), demo="interop"),
)
EXAMPLES: dict[str, Example] = {r.name: r for r in RECORDS}
NAMES = tuple(sorted(EXAMPLES))
TRAINABLE = tuple(n for n in NAMES if EXAMPLES[n].trainable)
DEMOS = tuple(n for n in NAMES if not EXAMPLES[n].trainable)
WITH_DATA = tuple(n for n in NAMES if EXAMPLES[n].demo != "interop")   # `data` can write their x, y


def get(name: str) -> Example:
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r} (examples: {', '.join(NAMES)})")
    return EXAMPLES[name]


def forms(name: str) -> tuple[str, ...]:
    return tuple(get(name).forms)


def check_form(name: str, form: str) -> None:
    if form not in get(name).forms:
        raise ValueError(f"{name} has no {form!r} form (forms: {', '.join(forms(name))})")


def param_shapes(name: str) -> dict[str, tuple]:
    """PyTorch state_dict names and shapes of the class model, e.g. weight (out, in)."""
    return get(name).param_shapes()


def make_data(name: str, seed: int = specs.DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    return get(name).data(seed)


def shared_init(name: str, seed: int = specs.DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Initial weights both backends can load: torch's default distributions, drawn layer
    by layer from the shared seed's init stream."""
    return convert.torch_init(get(name).layers, specs.rng(seed, specs.INIT))


def torch_style_init(name: str, rng_seed: int) -> dict[str, np.ndarray]:
    """The same distributions drawn from numpy.random.default_rng(rng_seed): other
    initial weights of the same kind as torch's (`python -m examples init`; portability)."""
    return convert.torch_init(get(name).layers, np.random.default_rng(rng_seed))
