"""check_port's NNX side as rungs 2-5 see it (the candidate side of rungs/port_rungs.py).

A candidate side starts every step from torch's state (arrays with torch's names,
optimizer moments, the step count), returns its gradients in torch's names and layout,
and its parameters, state and moments in its own names, where it also views torch's:

- `step(state, x, y)` -> (loss, gradients, parameters and state after, moments after);
- `view(arrays, moments)` -> torch's (parameters and state, moments) in its names;
- `loss_and_grads(arrays, x, y)` -> the loss and gradients at torch's arrays;
- `outputs(x)` -> the model's output at the shared start, in torch's layout;
- `layer_of(name)` -> the layer a compared name belongs to; `fresh()`: a new run;
- for rungs 6-7: `split(arrays)` -> torch's fitted arrays as (parameters, running
  statistics) in its names; `fitted(state)` the same of its own fitted state;
  `fitted_model(state, x, y)` -> its predictions (torch's layout) and eval-mode loss;
  `run(x, y, batches)` -> (per-step losses, fitted state) of its own whole run.

Here: the NNX clone's pure step (port_nnx.NnxRunner), torch's arrays converted onto
NNX's paths, gradients pulled back entry by entry (port_models.pullback_index), moments
moved the same way (exact: LSTM's two torch biases are one NNX bias). The examples'
candidate (example_sides.JaxportSide) is jaxport's own compiled step.
"""
from __future__ import annotations

import numpy as np

from parity_tests.engine.sides.port_models import (Port, nnx_to_torch_entries, path_text, torch_arrays,
                                                   torch_to_nnx_entries)
from parity_tests.engine.sides.port_nnx import NnxRunner


class PortCandidate:
    def __init__(self, port: Port, runner: NnxRunner):
        self.port, self.runner, self.dtype = port, runner, port.dtype
        self.torch_shapes = {n: tuple(p.shape) for n, p in port.torch_model.named_parameters()}
        self.index = port.pullback_index(list(self.torch_shapes))
        # NNX paths of torch's buffers (running statistics, counters) that are NNX state
        self.state_paths = set(port.to_nnx(torch_arrays(port.torch_model))) - set(runner.shapes)
        self.key_paths: dict = {}      # text -> NNX path (see texts)
        self.compares_moments = runner.opt_kind is not None  # an explicit pair's state has no map to torch's
        self.own_opt_state = None      # an explicit pair's optax state, carried between steps

    def texts(self, flat: dict, moment: str | None = None) -> dict:
        """{NNX path: array} keyed by text ("norm.scale", "norm.scale (exp_avg)"), the
        names parity.check reports; each remembered for the failing layer's name."""
        texts = {path_text(path) + (f" ({moment})" if moment else ""): path for path in flat}
        self.key_paths.update(texts)
        return {text: flat[path] for text, path in texts.items()}

    def layer_of(self, name) -> str | None:
        return self.port.layer_of(self.key_paths.get(name, name)) or None

    def fresh(self) -> None:
        self.own_opt_state = None      # an explicit pair starts from its fresh state

    def loss_and_grads(self, arrays: dict, x, y) -> tuple:
        """The loss and gradients at torch's arrays (a step with a fresh optimizer)."""
        self.fresh()
        return self.step((arrays, {}, 0), x, y)[:2]

    def outputs(self, x) -> np.ndarray:
        return self.port.output_in_torch_layout(self.runner.predict(self.runner.params(), x))

    def _on_nnx(self, moments: dict) -> dict:
        """torch's moments ({"exp_avg": {torch name: array}}) moved entry by entry onto NNX's paths."""
        return {key: torch_to_nnx_entries(self.index, d, self.runner.shapes, np.float64) for key, d in moments.items()}

    def _moment_texts(self, moments: dict) -> dict:
        return {k: v for key, d in moments.items() for k, v in self.texts(d, key).items()}

    def _parts(self, nnx_arrays: dict) -> tuple[dict, dict]:
        """NNX-path arrays split into (parameters, state: running statistics, counters)."""
        return ({p: v for p, v in nnx_arrays.items() if p in self.runner.shapes},
                {p: v for p, v in nnx_arrays.items() if p in self.state_paths})

    def view(self, arrays: dict, moments: dict) -> tuple:
        """torch's parameters and state (running statistics, a dropout counter)
        converted onto NNX's paths, its moments moved entry by entry; a spread of them
        too (where NNX sums two torch arrays, it sums their spreads)."""
        state = {p: v for p, v in self.port.to_nnx(arrays).items() if p in self.runner.shapes or p in self.state_paths}
        return self.texts(state), (self._moment_texts(self._on_nnx(moments)) if self.compares_moments else {})

    def step(self, state: tuple, x, y) -> tuple:
        """NNX's step from torch's state. An explicit optimizer pair's state does not
        convert: NNX then carries its own optax state between teacher-forced steps."""
        arrays, moments, count = state
        nnx_all = self.port.to_nnx(arrays)
        params, rest = self._parts(nnx_all)[0], self.runner.rest_with(nnx_all)
        if self.runner.opt_kind is None:
            j = self.runner.step(params, x, y, rest=rest, opt_state=self.own_opt_state)
            self.own_opt_state = j[4]
        else:
            j = self.runner.step(params, x, y, moments=self._on_nnx(moments), count=count, rest=rest)
        grads = nnx_to_torch_entries(self.index, j[1], self.torch_shapes)
        after = self.texts({**j[2], **self.runner.rest_arrays(j[3], self.state_paths)})
        moments_after = self._moment_texts(self.runner.moments(j[4])) if self.compares_moments else {}
        return j[0], grads, after, moments_after

    # ---- the whole run (rungs 6-7) -------------------------------------------------
    def run(self, x, y, batches: list) -> tuple:
        """NNX's own run from the shared weights: (losses, (fitted params, fitted rest))."""
        params, rest, state, losses = self.runner.params(), self.runner.rest, None, []
        for idx in batches:
            loss, _, params, rest, state = self.runner.step(params, x[idx], y[idx], rest=rest, opt_state=state)
            losses.append(loss)
        return np.array(losses), (params, rest)

    def split(self, arrays: dict) -> tuple[dict, dict]:
        params, state = self._parts(self.port.to_nnx(arrays))
        return self.texts(params), self.texts(state)

    def fitted(self, state) -> tuple[dict, dict]:
        params, rest = state
        return self.texts(params), self.texts(self.runner.rest_arrays(rest, self.state_paths))

    def fitted_model(self, state, x, y) -> tuple:
        params, rest = state
        return (self.port.output_in_torch_layout(self.runner.predict(params, x, rest=rest)),
                self.runner.eval_loss(params, x, y, rest=rest))
