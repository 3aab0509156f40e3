"""The tutorial's figures: a PNG of the fitted model and a GIF of the fit over epochs.

Framework-neutral (numpy, matplotlib and its dependency Pillow; never torch or jax):
both backends hand over numpy arrays.
Figures are built on an explicit Agg canvas rather than through pyplot, so importing
this module never switches the user's backend and no figure stays registered (and
leaks) in pyplot's global list across many calls.
"""
from __future__ import annotations


import numpy as np
from matplotlib.animation import AbstractMovieWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image     # matplotlib's own dependency, which its PillowWriter uses too

from portcore import registry
from portcore.weights import atomic_write

FIGSIZE = (12, 7)        # inches, as in the tutorial
FRAME_MS = 100           # per GIF frame
BOUNDARY_X = np.array([4.0, 8.0])   # the decision boundary is straight: two points suffice


def _style(example: str):
    style = registry.get(example).plot
    if style is None:
        raise ValueError(f"no plot for {example!r}; expected one of "
                         f"{', '.join(n for n in registry.TRAINABLE if registry.get(n).plot)}")
    return style


def _figure(example: str, x: np.ndarray, y: np.ndarray, dpi: int, title_suffix: str = ""):
    """Figure with the data scatter, labels and limits; returns (fig, ax, fit line)."""
    style = _style(example)
    fig = Figure(figsize=FIGSIZE, dpi=dpi)
    FigureCanvasAgg(fig)     # attaches itself as fig.canvas
    ax = fig.add_subplot()
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    for label, colour, name in style.classes:
        ax.scatter(x[y == label, 0], x[y == label, 1], color=colour, label=name)
    if not style.classes:
        ax.scatter(x[:, 0], y, color="purple", alpha=0.6)
    (line,) = ax.plot([], [], color="green", lw=3)
    if style.draws == "boundary":
        line.set_label("Decision boundary")
        ax.legend(loc="upper left")
    # Larger than matplotlib's 10 pt so that the text stays legible at the GIF's dpi 50.
    ax.set_title(style.title + title_suffix, fontsize=18)
    ax.set_xlabel(style.xlabel, fontsize=14)
    ax.set_ylabel(style.ylabel, fontsize=14)
    ax.set(xlim=style.xlim, ylim=style.ylim)
    return fig, ax, line


def _fit_xy(example: str, x: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The green line's points for one frame (see animate for what a frame holds)."""
    frame = np.asarray(frame, dtype=np.float64).reshape(-1)
    if _style(example).draws == "boundary":
        w0, w1, b = frame
        # w1 == 0 is a vertical boundary this form cannot draw: inf/nan just leave a gap.
        with np.errstate(divide="ignore", invalid="ignore"):
            return BOUNDARY_X, (-w0 * BOUNDARY_X - b) / w1
    xs = np.asarray(x)[:, 0]
    order = np.argsort(xs, kind="stable")    # a line through unsorted x would zigzag
    return xs[order], frame[order]


def plot_fit(example: str, x: np.ndarray, y: np.ndarray, params: dict,
             predictions: np.ndarray, path, *, title_suffix: str = "") -> None:
    """Save the data with the fitted model to `path` (format from its suffix, e.g. .png).

    x (N, features), y (N, 1). linear_regression and neural_network draw `predictions`
    (N, 1), the model's output at x; logistic_regression draws the decision boundary
    from params["linear.weight"] (1, 2) and params["linear.bias"] (1,) (its predictions,
    probabilities, are not needed). Written atomically: no partial file on failure.
    """
    if _style(example).draws == "boundary":
        layer = next(iter(registry.get(example).layers))
        frame = np.concatenate([np.asarray(params[f"{layer}.weight"]).reshape(-1)[:2],
                                np.asarray(params[f"{layer}.bias"]).reshape(-1)[:1]])
    else:
        frame = np.asarray(predictions).reshape(-1)
        if frame.size != len(x):
            raise ValueError(f"predictions have {frame.size} values for {len(x)} samples")
    fig, _, line = _figure(example, x, y, dpi=100, title_suffix=title_suffix)
    line.set_data(*_fit_xy(example, x, frame))
    atomic_write(path, lambda tmp: fig.savefig(tmp))


def frame_epochs(epochs: int, max_frames: int) -> np.ndarray:
    """0-based indices of the epochs to draw: all of them if they fit in max_frames,
    else max_frames evenly spaced ones, always the first and the last."""
    if epochs < 1:
        raise ValueError("nothing to animate: no epochs")
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (first and last epoch), got {max_frames}")
    if epochs <= max_frames:
        return np.arange(epochs)
    # The spacing (epochs-1)/(max_frames-1) exceeds 1, so rounding keeps them distinct.
    return np.round(np.linspace(0, epochs - 1, max_frames)).astype(np.int64)


class _BlitGifWriter(AbstractMovieWriter):
    """An animated-image writer for a figure in which only `animated` artists change.

    matplotlib's PillowWriter redraws the whole figure for every frame (about 60 ms at
    dpi 50, mostly tick labels) and gives each frame its own adaptive palette (about
    35 ms): about 20 s for 100 frames. This writer draws the static figure once and
    blits the animated artists over a copy of it (matplotlib's blitting recipe), and
    quantizes faster: about 1-2 s.
    """

    def __init__(self, animated, fps):
        super().__init__(fps=fps)
        self._animated = animated

    def setup(self, fig, outfile, dpi=None):
        super().setup(fig, outfile, dpi)
        self._frames = []
        for artist in self._animated:
            artist.set_animated(True)          # left out of full draws: not in the background
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)

    def grab_frame(self, **savefig_kwargs):
        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self._animated:
            self.fig.draw_artist(artist)
        rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        # Fast octree quantization: ~5 ms a frame against ~35 ms for Pillow's default
        # median cut. 64 colours cover the plot's few hues and their anti-aliasing
        # shades; 256 only make the file about 40% larger.
        self._frames.append(rgb.quantize(64, method=Image.Quantize.FASTOCTREE,
                                         dither=Image.Dither.NONE))

    def finish(self):
        # The format follows outfile's suffix; loop=0 loops forever.
        self._frames[0].save(self.outfile, save_all=True, append_images=self._frames[1:],
                             duration=round(1000 / self.fps), loop=0)


def animate(example: str, x: np.ndarray, y: np.ndarray, frames: np.ndarray,
            epoch_losses: np.ndarray, path, *, max_frames: int = 100, dpi: int = 50,
            epochs: np.ndarray | None = None) -> None:
    """Save a looping animated GIF (100 ms a frame) of the fit over the epochs to `path`.

    frames (epochs, k): the model at the START of each epoch. linear_regression and
    neural_network: k = N, its predictions at x. logistic_regression: k = 3, (w0, w1, b),
    drawn as the boundary y = (-w0·x - b) / w1 over x in [4, 8]. epoch_losses (epochs,).

    Numbering is 1-based: frames[e] (the state before epoch e+1's updates) is labelled
    "Epoch = e+1" with that epoch's loss epoch_losses[e], so a 100-epoch run ends on
    "Epoch = 100". epochs: the 0-based epoch of each frame when a long run kept only
    some (FitResult.recorded_epochs); None: frame e is epoch e. At most max_frames
    frames (see frame_epochs). The image is 12x7 in at `dpi` (600x350 px at 50).
    Written atomically: no partial file on failure.
    """
    style = _style(example)
    frames = np.asarray(frames, dtype=np.float64)
    losses = np.asarray(epoch_losses, dtype=np.float64).reshape(-1)
    k = 3 if style.draws == "boundary" else len(x)
    if frames.ndim != 2 or frames.shape[1] != k:
        raise ValueError(f"{example} frames must be (epochs, {k}), got {frames.shape}")
    if len(losses) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(losses)} epoch losses")
    numbers = np.arange(len(frames)) if epochs is None else np.asarray(epochs).reshape(-1)
    if len(numbers) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(numbers)} epoch numbers")
    picked = frame_epochs(len(frames), max_frames)

    fig, ax, line = _figure(example, x, y, dpi=dpi)
    text = ax.text(*style.text_xy, "", fontsize=13)

    def write(tmp):
        # Not writer.saving(): it calls finish() even when a frame fails, which would
        # mask the error. setup() draws the background at the figure's own dpi.
        writer = _BlitGifWriter([line, text], fps=1000 / FRAME_MS)
        writer.setup(fig, tmp)
        for e in picked:
            line.set_data(*_fit_xy(example, x, frames[e]))
            text.set_text(f"Epoch = {numbers[e] + 1}, Loss = {losses[e]:.2f}")
            writer.grab_frame()
        writer.finish()

    atomic_write(path, write)
