"""The report's free-run sections: the criterion, a table of every free run the suite
judged (horizon, per-step use of the bound, statistics), a plot per network cell, and
the portability record that `make portability` leaves in docs/portability-cpu.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity_tests.engine.bounds import criterion, ensemble
from parity_tests.engine.reports.port_report import table_head, table_row
from portcore import registry


def section(path: Path, curves: dict) -> list:
    out = ["## Free-running runs (rungs 6-7): the criterion", "",
           "Long training runs are chaotic in both dtypes, so a free run is judged against the reference's "
           f"own noise: an ensemble of {ensemble.MEMBERS} torch runs rounded differently at every step. Before "
           "the horizon (the first step at which the ensemble's spread in the loss exceeds the single-step "
           f"tolerance, float64 {criterion.LOSS_TOL['float64']}, float32 {criterion.LOSS_TOL['float32']}) every "
           f"step's loss within min(max({criterion.SPREAD_MULTIPLE:g} x spread, one loss evaluation's rounding), "
           "that tolerance); after it, the outcome statistics as one more draw of the ensemble (its range widened "
           f"by {criterion.STAT_MARGIN:g} x itself on each side). The whole criterion, the members and the float32 "
           "bound of rungs 2-5: [design.md, the parity ladder](design.md#the-parity-ladder).", "",
           *table_head("example", "form", "dtype", "device", "config", "steps", "horizon", "per-step used (max)",
                       "final loss: jaxport, torch, ensemble range")]
    plots = {}
    for (example, form, dtype, device, config), v in sorted(curves.items()):
        h = v["horizon"]
        used = float(np.max(v["diff"][:h] / np.maximum(v["allowed"][:h], 1e-300))) if h else 0.0
        finals = v["members"][:, -1] if v["steps"] else np.zeros(1)
        out.append(table_row(example, form, dtype, device, config, v["steps"], h if h < v["steps"] else "never",
                             f"{used:.2f}", f"{v['jax'][-1]:.5g}, {v['torch'][-1]:.5g}, "
                             f"[{finals.min():.5g}, {finals.max():.5g}]"))
        if config == "default" and registry.get(example).chaotic:
            plots[(example, form, dtype, device)] = v
    out += [""] + _ensemble_size(plots)
    for (example, form, dtype, device), v in plots.items():
        suffix = "" if form == "class" else f"-{form}"
        image = path.parent / "images" / f"{path.stem}-{example}{suffix}-{device}-{dtype}.png"
        plot(image, f"{example} ({form}), {dtype}, {device}", v)
        out += [f"![{example} {form} {dtype} {device}: ensemble, torch and jaxport](images/{image.name})", ""]
    return out + _portability(path.parent / "portability-cpu.json")


def _ensemble_size(plots: dict) -> list:
    """How the statistical bound moves with the ensemble's size: the accepted interval of
    the final loss from the first 4, 8 and all members (torch's own run included)."""
    out = ["How the outcome bound moves with the ensemble's size (final step loss; the "
           "accepted interval from the first M members and torch's run):", "",
           "| cell | horizon | M = 4 | M = 8 | M = 16 | jaxport |", "| --- | --- | --- | --- | --- | --- |"]
    for (example, form, dtype, device), v in plots.items():
        finals, ref = v["members"][:, -1], float(v["torch"][-1])
        cells = ["[{:.5g}, {:.5g}]".format(*criterion.interval(np.append(finals[:m], ref)))
                 for m in (4, 8, len(finals))]
        out.append(f"| {example} {form} {dtype} {device} | {v['horizon']} | {' | '.join(cells)} "
                   f"| {float(v['jax'][-1]):.5g} |")
    return out + ["", "A run that never turns chaotic has an interval a few ulps wide: it is judged per step "
                  "instead. The interval widens with M as the range of M draws does (the expected range of "
                  "M + 1 normal draws, torch's included, is 2.3, 3.0 and 3.6 standard deviations for M = 4, 8, 16), so "
                  "more members make the bound looser, never tighter: the margin (the range on each side) "
                  "is what keeps a 17th draw inside.", ""]


def plot(image: Path, title: str, v: dict) -> None:
    """Top: the loss curves (ensemble grey, torch black, jaxport red). Bottom: per step
    |member - torch| (grey), |jaxport - torch| (red), the bound up to the horizon."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    steps, h = np.arange(v["steps"]), v["horizon"]
    for i, member in enumerate(v["members"]):
        top.plot(steps, member, color="0.7", lw=0.6, label="torch ensemble (1 ulp per step)" if i == 0 else None)
        d = np.abs(member - v["torch"])
        bottom.plot(steps[d > 0], d[d > 0], ".", ms=1, color="0.6", label="|member - torch|" if i == 0 else None)
    top.plot(steps, v["torch"], color="k", lw=1, label="torch")
    top.plot(steps, v["jax"], color="tab:red", lw=0.8, ls="--", label="jaxport")
    top.set(yscale="log", ylabel="loss")
    top.legend(fontsize=8)
    d = v["diff"]
    bottom.plot(steps[d > 0], d[d > 0], ".", ms=2.5, color="tab:red", label="|jaxport - torch|")
    bottom.plot(steps[:h], v["allowed"][:h], color="tab:blue", lw=1.2, label="bound before the horizon")
    if h < v["steps"]:
        for ax in (top, bottom):
            ax.axvline(h, color="tab:green", lw=1.2, ls=":")
        bottom.text(h, max(d.max(), 1e-30), f" horizon (step {h})",
                    color="tab:green", va="top", fontsize=8)
    bottom.set(yscale="log", xlabel="training step", ylabel="|loss difference| (zeros not drawn)")
    bottom.legend(fontsize=8, loc="lower right")
    top.set_title(f"{title}: free run, jaxport against torch's own ensemble")
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image, dpi=80)
    plt.close(fig)


def _portability(record: Path) -> list:
    if not record.is_file():
        return ["## Portability", "", "No record yet: `make portability` writes docs/portability-cpu.json.", ""]
    return json.loads(record.read_text()).get("markdown", []) + [""]
