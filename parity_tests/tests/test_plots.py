"""examples.plots: the PNG of the fit and the GIF of the training, on synthetic frames."""
import numpy as np
import pytest
from PIL import Image

from portcore import registry
from examples import plots

EPOCHS = 5


def _fit_inputs(example):
    """Data, PyTorch-layout params, predictions and (EPOCHS, k) frames, no training."""
    x, y = registry.make_data(example)
    params = registry.shared_init(example)
    if example == "logistic_regression":
        # A boundary through the data: w0·x0 + w1·x1 + b = 0 with x1 = x0 - 2.5.
        params = {"linear.weight": np.array([[1.0, -1.0]]), "linear.bias": np.array([-2.5])}
        predictions = 1 / (1 + np.exp(-(x @ params["linear.weight"].T + params["linear.bias"])))
        frames = np.array([[1.0, -1.0, b] for b in np.linspace(-3.5, -2.5, EPOCHS)])
    else:
        predictions = y + 0.1                                                 # (N, 1)
        frames = np.stack([t * y[:, 0] for t in np.linspace(0, 1, EPOCHS)])  # (EPOCHS, N)
    return x, y, params, predictions, frames, np.linspace(2.0, 0.5, EPOCHS)


@pytest.mark.parametrize("example", registry.LADDER)
def test_plot_fit_and_animate_write_images(example, tmp_path):
    x, y, params, predictions, frames, losses = _fit_inputs(example)
    png, gif = tmp_path / "fit.png", tmp_path / "fit.gif"
    plots.plot_fit(example, x, y, params, predictions, png, title_suffix=" (test)")
    plots.animate(example, x, y, frames, losses, gif)

    assert png.stat().st_size > 0 and gif.stat().st_size > 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1200, 700)     # 12x7 in at dpi 100
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (600, 350)      # 12x7 in at dpi 50
        assert im.n_frames == EPOCHS
        assert im.info["loop"] == 0                              # forever
        assert im.info["duration"] == 100
    # Only the two outputs: no temporary file left beside them.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.gif", "fit.png"]


def test_animate_subsamples_to_max_frames(tmp_path):
    x, y, _, _, frames, losses = _fit_inputs("neural_network")
    frames, losses = np.repeat(frames, 3, axis=0), np.repeat(losses, 3)   # 15 epochs
    plots.animate("neural_network", x, y, frames, losses, tmp_path / "a.gif", max_frames=4)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 4


def test_frame_epochs_keeps_first_and_last():
    assert plots.frame_epochs(3, 100).tolist() == [0, 1, 2]
    picked = plots.frame_epochs(1000, 100)
    assert len(picked) == 100 and picked[0] == 0 and picked[-1] == 999
    assert np.all(np.diff(picked) > 0)
    with pytest.raises(ValueError):
        plots.frame_epochs(0, 100)


@pytest.mark.parametrize("example", registry.LADDER)
def test_failed_write_leaves_no_file(example, tmp_path):
    x, y, params, predictions, frames, losses = _fit_inputs(example)
    missing = tmp_path / "no_such_dir"
    with pytest.raises(OSError):
        plots.plot_fit(example, x, y, params, predictions, missing / "fit.png")
    with pytest.raises(OSError):
        plots.animate(example, x, y, frames, losses, missing / "fit.gif")
    assert not missing.exists()
    # A failure inside the writer (unknown format) must remove the temporary file.
    with pytest.raises(ValueError):
        plots.plot_fit(example, x, y, params, predictions, tmp_path / "fit.nosuchformat")
    with pytest.raises(ValueError):
        plots.animate(example, x, y, frames, losses, tmp_path / "fit.nosuchformat")
    assert list(tmp_path.iterdir()) == []


def test_animate_rejects_mismatched_frames(tmp_path):
    x, y, _, _, frames, losses = _fit_inputs("linear_regression")
    with pytest.raises(ValueError):
        plots.animate("linear_regression", x, y, frames[:, :3], losses, tmp_path / "a.gif")
    with pytest.raises(ValueError):
        plots.animate("linear_regression", x, y, frames, losses[:-1], tmp_path / "a.gif")
    assert list(tmp_path.iterdir()) == []
