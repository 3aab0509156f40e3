"""Checkpoints of a training run, in the exchange format, for `run --checkpoint` and
`run --resume` (examples/resume.py). Framework-neutral: both backends' `fit` call a
Checkpointer at chunk ends, and it is picklable, so a torch DDP rank 0 writes it too.

A checkpoint is one weights file (.npz or .safetensors, read without pickle):
- the model's state under its state_dict names, as `--save` writes it: the weights
  and the buffers, among them BatchNorm's running statistics and the shared dropout's
  step counter (the dropout masks' counter, so a resumed run drops the same units);
- the optimizer state under "optimizer/" + its exchange name ("optimizer/step",
  "optimizer/exp_avg/<param>", "optimizer/momentum_buffer/<param>", ...);
- "checkpoint/meta": a JSON object as uint8 bytes (one entry both formats hold): the
  format version, the example, dtype, optimizer and the run's flags, the epochs done
  (`epoch`) and asked for (`epochs`), and the shuffling generator's state after
  `epoch` epochs (numpy's PCG64 state; null for an unshuffled order).
Written atomically (weights.save), every `every` epochs and at the end of the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from portcore import registry, schedule, weights

VERSION = 1
META = "checkpoint/meta"
OPTIMIZER = "optimizer/"
# An optimizer's state, by moment: what torch.optim and jaxport's optax chains keep.
MOMENTS = {"adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


@dataclass(frozen=True)
class Checkpointer:
    """Writes `path` every `every` epochs (None: at the end only) and at the end.
    meta: the run's description (example, dtype, optimizer, flags), written with each."""
    path: str
    every: int | None
    meta: dict

    def due(self, order, epochs_run: int) -> bool:
        epoch, _ = schedule.order_state(order, epochs_run)
        finished = epochs_run == schedule.order_size(order)[0]
        return finished or bool(self.every) and epoch % self.every == 0

    def write(self, order, epochs_run: int, params: dict, opt_state: dict) -> bool:
        """Write the checkpoint after `epochs_run` epochs of this run; a state holding
        inf or NaN (a diverged run) is not written, the last good one stays."""
        if not all(np.all(np.isfinite(v)) for v in (*params.values(), *opt_state.values())):
            return False
        epoch, rng_state = schedule.order_state(order, epochs_run)
        meta = {**self.meta, "version": VERSION, "epoch": epoch, "order_state": rng_state,
                "checkpoint_every": self.every}
        weights.save(self.path, {**params, **{OPTIMIZER + k: v for k, v in opt_state.items()},
                                 META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
        return True


def load(path) -> tuple[dict, dict, dict]:
    """(meta, params, opt_state) of a checkpoint, checked against its example: a file
    that is not a checkpoint, is truncated, is of another version, or whose arrays do
    not fit its example, dtype or optimizer raises weights.WeightsError (one line)."""
    arrays = weights.load(path)
    if META not in arrays:
        raise weights.WeightsError(f"{path}: not a checkpoint (no {META} entry; a weights file goes to --init)")
    try:
        meta = json.loads(arrays.pop(META).tobytes().decode())
        version, example, dtype, optimizer = (meta[k] for k in ("version", "example", "dtype", "optimizer"))
    except (ValueError, KeyError, TypeError) as e:
        raise weights.WeightsError(f"{path}: a damaged checkpoint ({type(e).__name__}: {e})") from None
    if version != VERSION:
        raise weights.WeightsError(f"{path}: a version {version} checkpoint; this program reads version {VERSION}")
    if example not in registry.TRAINABLE:
        raise weights.WeightsError(f"{path}: a checkpoint of {example!r}, which is not an example here")
    record = registry.get(example)
    if optimizer != record.defaults.optimizer:
        raise weights.WeightsError(f"{path}: a checkpoint with optimizer {optimizer}; {example} trains with "
                                   f"{record.defaults.optimizer}")
    opt_state = {k[len(OPTIMIZER):]: v for k, v in arrays.items() if k.startswith(OPTIMIZER)}
    params = {k: v for k, v in arrays.items() if not k.startswith(OPTIMIZER)}
    if "step" in opt_state:
        opt_state["step"] = opt_state["step"].reshape(())      # files hold arrays of 1 dimension at least
    try:
        weights.check_params(params, record.exchange_shapes())
        weights.check_params(opt_state, expected_opt_state(example))
    except weights.WeightsError as e:
        raise weights.WeightsError(f"{path}: a checkpoint of {example} ({optimizer}) that does not fit it: "
                                   f"{str(e).split(': ', 1)[1]}") from None
    wrong = sorted({str(v.dtype) for k, v in {**params, **opt_state}.items() if k != "step"} - {dtype})
    if wrong:
        raise weights.WeightsError(f"{path}: a {dtype} checkpoint holding {', '.join(wrong)} arrays")
    weights.check_finite({**params, **opt_state}, path)
    return meta, params, opt_state


def expected_opt_state(example: str) -> dict:
    """The exchange names and shapes of the example's optimizer state after a step."""
    config, shapes = registry.get(example).defaults, registry.get(example).param_shapes()
    moments = MOMENTS[config.optimizer] if config.optimizer == "adam" or config.momentum else ()
    expected = {f"{m}/{name}": shape for m in moments for name, shape in shapes.items()}
    return {**expected, "step": ()} if config.optimizer == "adam" else expected
