"""The guide's diagrams, drawn with matplotlib: docs/images/diagram-*.png.

Called by docs/build.py (not with --no-images). Boxes and arrows only, no data, so
they redraw identically; the labels are code names, the same in both editions.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
BLUE, ORANGE, GREEN, GREY, RED = "#c6dbef", "#fdd0a2", "#c7e9c0", "#eeeeee", "#fcbba1"


def box(ax, x, y, w, h, text, color=GREY, size=10):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec="#444444", lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, family="monospace")


def arrow(ax, start, end, text="", size=9):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, lw=1.2, color="#333333"))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center",
                fontsize=size, family="monospace")


def canvas(width, height):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def save(fig, name):
    fig.savefig(IMAGES / f"diagram-{name}.png", dpi=90, bbox_inches="tight",
                metadata={"Software": None})             # no version stamp: stable bytes
    plt.close(fig)


def split_merge():
    fig, ax = canvas(10, 3.6)
    box(ax, 0.2, 1.3, 2.2, 1.0, "model\n(nnx.Module)", BLUE)
    box(ax, 3.6, 2.3, 2.6, 0.9, "graphdef\nstructure, static", GREY)
    box(ax, 3.6, 0.3, 2.6, 1.5, "state: a pytree\nkernel (1, 200)\nbias (200,) ...", ORANGE)
    arrow(ax, (2.4, 1.9), (3.6, 2.7), "split")
    arrow(ax, (2.4, 1.7), (3.6, 1.1))
    box(ax, 7.0, 0.3, 2.8, 1.5, "jax.jit(step)\nnew state =\nf(state, x, y)", GREEN)
    arrow(ax, (6.2, 1.05), (7.0, 1.05), "in")
    ax.text(8.4, 2.3, "inside: nnx.merge(graphdef, state)\nrebuilds the module to call",
            ha="center", fontsize=9, family="monospace")
    save(fig, "split-merge")


def scan_loop():
    fig, ax = canvas(10, 3.4)
    ax.text(0.1, 3.05, "one compiled program: scan over epochs, and inside it scan over steps",
            fontsize=10, family="monospace")
    for e in range(3):
        x0 = 0.2 + e * 3.3
        box(ax, x0, 0.3, 3.0, 2.3, "", BLUE)
        ax.text(x0 + 1.5, 2.3, f"epoch {e}" if e < 2 else "epoch ...", ha="center", fontsize=9,
                family="monospace")
        for s in range(3):
            box(ax, x0 + 0.15 + s * 0.95, 0.9, 0.8, 0.9, f"step\n{s}" if s < 2 else "...", ORANGE, 8)
            if s < 2:
                arrow(ax, (x0 + 0.95 + s * 0.95, 1.35), (x0 + 1.1 + s * 0.95, 1.35))
        ax.text(x0 + 1.5, 0.45, "carry: (state, opt_state)", ha="center", fontsize=7, family="monospace")
        if e < 2:
            arrow(ax, (x0 + 3.0, 1.45), (x0 + 3.3, 1.45))
    save(fig, "scan")


def padded_batch():
    fig, ax = canvas(10.6, 2.8)
    ax.text(0.1, 2.45, "100 samples, batch_size 30: torch's DataLoader against fixed shapes",
            fontsize=10, family="monospace")
    for i, n in enumerate((30, 30, 30, 10)):
        x0 = 0.2 + i * 2.45
        box(ax, x0, 1.35, 2.25 * n / 30, 0.6, f"{n}", BLUE, 9)
        box(ax, x0, 0.35, 2.25 * n / 30, 0.6, f"{n}, w=1" if n == 30 else f"{n}", GREEN, 8)
        if n < 30:
            box(ax, x0 + 2.25 * n / 30, 0.35, 2.25 * (30 - n) / 30, 0.6, f"{30 - n} pad, w=0", RED, 8)
    ax.text(10.1, 1.6, "torch", fontsize=9, family="monospace")
    ax.text(10.1, 0.6, "JAX", fontsize=9, family="monospace")
    save(fig, "padded-batch")


def weight_layouts():
    fig, ax = canvas(10, 3.6)
    rows = [("nn.Linear.weight (out, in)", "nnx.Linear.kernel (in, out)", ".T"),
            ("nn.Conv2d.weight (O, I, H, W)", "nnx.Conv.kernel (H, W, I, O)", ".transpose(2, 3, 1, 0)"),
            ("input NCHW", "input NHWC", ".transpose(0, 2, 3, 1)"),
            ("LSTM weight_ih (4H, I): i|f|g|o", "LSTMCell ii, if_, ig, io (I, H)", "split rows, .T")]
    for k, (left, right, how) in enumerate(rows):
        y = 2.8 - k * 0.85
        box(ax, 0.1, y, 3.6, 0.6, left, ORANGE, 9)
        box(ax, 6.2, y, 3.7, 0.6, right, BLUE, 9)
        arrow(ax, (3.7, y + 0.3), (6.2, y + 0.3), how, 8)
    save(fig, "layouts")


def build() -> list[Path]:
    IMAGES.mkdir(exist_ok=True)
    for draw in (split_merge, scan_loop, padded_batch, weight_layouts):
        draw()
    return sorted(IMAGES.glob("diagram-*.png"))


if __name__ == "__main__":
    for path in build():
        print(path)
