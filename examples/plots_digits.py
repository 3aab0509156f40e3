"""The deep examples' figures (cnn, lstm, gru): classifiers of the 8x8 digits, so no
fitted line; instead
- cnn: a grid of held-out digits with the predicted label (wrong ones in red, with the
  true label) and the held-out confusion matrix;
- lstm, gru: training and held-out loss and accuracy per epoch.
--gif animates the same figure epoch by epoch. Every number comes from eval-mode logits
(frames: (epochs, N, 10), the model at the start of each epoch, on the training images
followed by the held-out ones; plus the fitted model's). Framework-neutral, like plots.py.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from examples.plots import FRAME_MS, BlitGifWriter, frame_epochs
from portcore import registry, specs
from portcore.weights import atomic_write

GRID = (5, 10)               # held-out digits shown: the first 50


def curves(logits: np.ndarray, y: np.ndarray, y_held: np.ndarray) -> dict:
    """Per epoch: train and held-out loss and accuracy from (epochs, N + M, 10) logits."""
    n = len(y)
    out = {k: [] for k in ("train loss", "held-out loss", "train accuracy", "held-out accuracy")}
    for z in np.asarray(logits, np.float64):
        out["train loss"].append(specs.cross_entropy(z[:n], y))
        out["held-out loss"].append(specs.cross_entropy(z[n:], y_held))
        out["train accuracy"].append(specs.class_accuracy(z[:n], y))
        out["held-out accuracy"].append(specs.class_accuracy(z[n:], y_held))
    return {k: np.array(v) for k, v in out.items()}


def _canvas(dpi):
    fig = Figure(figsize=(12, 7), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


class _DigitsFigure:
    """cnn: the digit grid and the confusion matrix; `show(logits)` redraws the changing
    parts (labels, colours, counts) for one set of held-out logits."""

    def __init__(self, fig, images, y_held, title):
        self.y = y_held
        rows, cols = GRID
        grid = fig.add_gridspec(rows, cols + 7)
        self.labels, self.artists = [], []
        for k in range(rows * cols):
            ax = fig.add_subplot(grid[k // cols, k % cols])
            ax.imshow(images[k].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            self.labels.append(ax.set_title("", fontsize=10))
        ax = fig.add_subplot(grid[:, cols + 1:])
        self.matrix = ax.imshow(np.zeros((10, 10)), cmap="Blues", vmin=0, vmax=len(y_held) / 10)
        self.counts = [[ax.text(j, i, "", ha="center", va="center", fontsize=8) for j in range(10)]
                       for i in range(10)]
        ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true")
        ax.set_title("held-out confusion matrix")
        self.text = fig.suptitle(title, fontsize=16)
        self.artists = [*self.labels, self.matrix, *sum(self.counts, []), self.text]

    def show(self, logits, caption):
        pred = np.argmax(logits, axis=1)
        for k, label in enumerate(self.labels):
            wrong = pred[k] != self.y[k]
            label.set_text(f"{pred[k]} ({self.y[k]})" if wrong else f"{pred[k]}")
            label.set_color("red" if wrong else "black")
        m = np.zeros((10, 10), np.int64)
        np.add.at(m, (self.y, pred), 1)
        self.matrix.set_data(m)
        for i in range(10):
            for j in range(10):
                self.counts[i][j].set_text(str(m[i, j]) if m[i, j] else "")
                self.counts[i][j].set_color("white" if m[i, j] > len(self.y) / 20 else "black")
        self.text.set_text(caption)


class _CurvesFigure:
    """lstm, gru: loss and accuracy per epoch, training and held-out; `show(e)` draws
    the first e + 1 epochs of the curves."""

    def __init__(self, fig, c: dict, title):
        self.c = c
        self.x = epochs = np.arange(len(c["train loss"]))          # 0: the initial model
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        self.lines = {}
        for ax, kind in ((ax1, "loss"), (ax2, "accuracy")):
            for part, colour in (("train", "purple"), ("held-out", "green")):
                (self.lines[f"{part} {kind}"],) = ax.plot([], [], color=colour, lw=3, label=part)
            values = np.concatenate([c[f"train {kind}"], c[f"held-out {kind}"]])
            ax.set(xlim=(-0.5, len(epochs) - 0.5), xlabel="epochs trained", ylabel=kind)
            ax.set_ylim((0, 1.02) if kind == "accuracy" else (0, float(np.nanmax(values)) * 1.05))
            ax.legend(loc="center right")
        self.text = fig.suptitle(title, fontsize=16)
        self.artists = [*self.lines.values(), self.text]

    def show(self, e, caption):
        for name, line in self.lines.items():
            line.set_data(self.x[:e + 1], self.c[name][:e + 1])
        self.text.set_text(caption)


def _build(example, fig, frames, y, held, title):
    x_held, y_held = held
    if registry.get(example).plot.draws == "digits":
        return _DigitsFigure(fig, x_held, y_held, title)
    return _CurvesFigure(fig, curves(frames, y, y_held), title)


def _title(example):
    return registry.get(example).plot.title


def _show(example, view, frames, e, n):
    """frames[e] on the figure: the held-out logits (digits) or the curves up to e."""
    view.show(frames[e][n:] if registry.get(example).plot.draws == "digits" else e, view.caption)


def plot(example: str, frames: np.ndarray, y: np.ndarray, held: tuple, path, title_suffix: str = "") -> None:
    """The fitted model's figure: frames' last row is the fitted model's logits."""
    c = curves(frames, y, held[1])
    fig = _canvas(100)
    view = _build(example, fig, frames, y, held, _title(example) + title_suffix)
    last = len(frames) - 1
    view.caption = (f"{_title(example)}{title_suffix}: held-out accuracy {c['held-out accuracy'][last]:.4f}, "
                    f"loss {c['held-out loss'][last]:.4f}")
    _show(example, view, frames, last, len(y))
    atomic_write(path, lambda tmp: fig.savefig(tmp))


def animate(example: str, frames: np.ndarray, y: np.ndarray, held: tuple, path, *,
            epochs: np.ndarray | None = None, max_frames: int = 100, dpi: int = 50) -> None:
    """A looping GIF, a frame per epoch (at most max_frames): frames[e] is the model at
    the start of epoch e + 1, as in plots.animate."""
    c = curves(frames, y, held[1])
    numbers = np.arange(len(frames)) if epochs is None else np.asarray(epochs).reshape(-1)
    fig = _canvas(dpi)
    view = _build(example, fig, frames, y, held, _title(example))

    def write(tmp):
        writer = BlitGifWriter(view.artists, fps=1000 / FRAME_MS)
        writer.setup(fig, tmp)
        for e in frame_epochs(len(frames), max_frames):
            view.caption = (f"Epoch = {numbers[e] + 1}, held-out accuracy = {c['held-out accuracy'][e]:.3f}, "
                            f"Loss = {c['train loss'][e]:.2f}")
            _show(example, view, frames, e, len(y))
            writer.grab_frame()
        writer.finish()
    atomic_write(path, write)
