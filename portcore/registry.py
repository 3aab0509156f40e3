"""One record per example: everything the command line, the plots, the bench and the
parity suite need to know about it, so that no code outside an example's own files
branches on its name. Adding an example is a record here and its twin modules
`torchref/<name>.py` and `jaxport/<name>.py` (docs/design.md, "Adding an example").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from portcore import convert, datasets, digits, specs
from portcore.conv_kinds import Conv2d
from portcore.kinds import BatchNorm, Dropout, LayerKind, Linear, MaxPool2d
from portcore.recurrent_kinds import GRU, LSTM


@dataclass(frozen=True)
class PlotStyle:
    """The tutorial's figure for an example: labels and limits, and what the green line
    draws: "curve", the model's output at the data's x, or "boundary", the straight
    decision boundary w0 x + w1 y + b = 0 of the first layer. The digit classifiers'
    figures (examples/plots_digits.py) use only the title: "digits", held-out digits
    with their predictions and the confusion matrix; "curves", loss and accuracy per epoch."""
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
    metric: str | None = None                          # "accuracy": probability >= 0.5 on the label's side;
    #                                                    "class_accuracy": argmax of the logits == the label, held out
    held_out: Callable[[int], tuple] | None = None     # seed -> (x, y) never trained on (the metric's data)
    # How the parity ladder (parity_tests/engine/rungs/ladder.py) runs it: "generic" (the grid
    # of conftest.cells, every step teacher-forced) or "deep" (models with BatchNorm, dropout
    # and recurrent cells, integer labels, held-out data: the first epoch teacher-forced).
    ladder: str = "generic"
    # --devices N > 1 (DDP / jax.sharding): False where per-device batches would change the
    # computation (BatchNorm's batch statistics and the dropout's sample index are per
    # rank under DDP, but global under one-program SPMD).
    data_parallel: bool = True
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
        """The trainable parameters (what has a gradient and optimizer moments)."""
        return convert.param_shapes(self.layers)

    def state_shapes(self) -> dict[str, tuple]:
        """Buffers that cross the API with the parameters (BatchNorm's running stats,
        the shared dropout's step); {} for a model of parameters only."""
        return convert.state_shapes(self.layers)

    def exchange_shapes(self) -> dict[str, tuple]:
        """Everything a weights file holds: parameters and state, torch's names."""
        return {**self.param_shapes(), **self.state_shapes()}

    def flops(self) -> int:
        """Forward FLOPs per sample (convert.flops); layers other than Linear need their
        input shape in `input_shapes`."""
        return sum(k.flops(self.input_shapes.get(p, ())) for p, k in self.layers.items())


def _row_reader(name: str, rnn) -> Example:
    """lstm and gru: a recurrent layer over the 8 rows of 8 pixels of each digit, the
    last step into fc; cross-entropy, Adam 0.01, 30 epochs of 64."""
    kind = type(rnn).__name__
    return Example(
        name, f"{kind}(8, 64) over the 8 rows of each 8x8 digit, cross-entropy, Adam",
        lambda seed: digits.make_digits(seed, shape=(8, 8)), {"rnn": rnn, "fc": Linear(64, 10)},
        specs.TrainConfig(epochs=30, batch_size=64, lr=0.01, optimizer="adam"),
        loss="cross_entropy", metric="class_accuracy", ladder="deep", labels="int",
        plot=PlotStyle(f"{kind} over the rows of 8x8 digits", "", "", (), (), (), draws="curves"),
        held_out=lambda seed: digits.make_digits(seed, held_out=True, shape=(8, 8)),
        input_shapes={"rnn": (8, 8)}, speed_target=(3.0, None))


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
    # Beyond the tutorial (which points to CNNs and RNNs): the UCI digits, 8x8, /16.
    Example("cnn", "Conv2d-BatchNorm-Dropout CNN on the 8x8 digits, cross-entropy, SGD momentum",
            lambda seed: digits.make_digits(seed, shape=(1, 8, 8)),
            {"conv1": Conv2d(1, 16, 3, padding=1), "pool": MaxPool2d(2),
             "conv2": Conv2d(16, 32, 3, padding=1), "bn": BatchNorm(32),
             "drop": Dropout(0.25, counter=True), "fc": Linear(128, 10, input_chw=(32, 2, 2))},
            specs.TrainConfig(epochs=20, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9),
            loss="cross_entropy", metric="class_accuracy", ladder="deep", labels="int",
            plot=PlotStyle("CNN on 8x8 digits", "", "", (), (), (), draws="digits"),
            data_parallel=False,
            held_out=lambda seed: digits.make_digits(seed, held_out=True, shape=(1, 8, 8)),
            input_shapes={"conv1": (1, 8, 8), "conv2": (16, 4, 4), "bn": (32, 4, 4)}, speed_target=(3.0, None)),
    _row_reader("lstm", LSTM(8, 64, flax_input_bias=True)),
    _row_reader("gru", GRU(8, 64)),
    Example("tensor_interop", "numpy <-> torch.Tensor <-> jax.Array, with and without copies",
            lambda seed: (np.array(specs.INTEROP_LIST, dtype=np.float64), np.zeros(0)), demo="interop"),
)
EXAMPLES: dict[str, Example] = {r.name: r for r in RECORDS}
NAMES = tuple(sorted(EXAMPLES))
TRAINABLE = tuple(n for n in NAMES if EXAMPLES[n].trainable)
DEMOS = tuple(n for n in NAMES if not EXAMPLES[n].trainable)
WITH_DATA = tuple(n for n in NAMES if EXAMPLES[n].demo != "interop")   # `data` can write their x, y
LADDER = tuple(n for n in TRAINABLE if EXAMPLES[n].ladder == "generic")      # the generic grid
DEEP = tuple(n for n in TRAINABLE if EXAMPLES[n].ladder == "deep")


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


def exchange_shapes(name: str) -> dict[str, tuple]:
    """What a weights file of this example holds: parameters and state (state_dict names)."""
    return get(name).exchange_shapes()


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
