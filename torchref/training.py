"""The tutorial's training loop, generic over the examples: DataLoader, zero_grad,
backward, step. The backend contract: the same public names and signatures as
jaxport/training.py (parity_tests/tests/test_backend_contract.py checks). Parameters and
optimizer state cross this API as numpy mappings with PyTorch names (see
portcore/weights.py), so jaxport's twin can be fed the same state.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader
from tqdm import tqdm

from portcore import registry, schedule, specs
from torchref import example_module, optim
from torchref.convert import load_numpy, named_parameters, to_numpy
from torchref.data import SharedOrderSampler
from torchref.numerics import torch_device
from torchref.state import opt_state_from_numpy, opt_state_to_numpy, tensor


def build_model(example, params=None, *, dtype="float32", device="cpu", form="class", seed=0):
    """The example's nn.Module. Without params: nn.Linear's own init under manual_seed."""
    model = example_module(example).build_model(form, seed=seed, dtype=dtype).to(torch_device(device))
    if params is not None:
        load_numpy(model, params, example, form)
    return model


def default_params(example, seed=0, *, dtype="float32", form="class") -> dict:
    """torch's default initial parameters for this seed, in the exchange format."""
    return to_numpy(build_model(example, dtype=dtype, form=form, seed=seed), example, form)


def loss_and_grads(example, params, x, y, *, dtype="float32", device="cpu", form="class"):
    """(loss, {name: gradient}) of the example's loss on (x, y) at `params`."""
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    y = tensor(y, registry.get(example).label_dtype(dtype), device)
    loss = example_module(example).loss_fn(model(tensor(x, dtype, device)), y)
    loss.backward()
    grads = {n: p.grad.detach().cpu().numpy() for n, p in named_parameters(model, example, form).items()}
    return loss.item(), grads


def predict(example, params, x, *, dtype="float32", device="cpu", form="class") -> np.ndarray:
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    model.eval()                # BatchNorm on its running statistics, dropout off
    with torch.no_grad():
        return model(tensor(x, dtype, device)).cpu().numpy()


def train_step(example, params, opt_state, x, y, config, *, dtype="float32", device="cpu",
               form="class"):
    """One optimizer step from (params, opt_state) on the batch (x, y).

    Returns (loss before the update, grads, new params, new opt_state), all numpy.
    opt_state None or {} is a fresh optimizer.
    """
    return Stepper(example, config, params, opt_state, dtype=dtype, device=device, form=form).step(x, y)


class Stepper:
    """A model and its optimizer kept between steps, exactly as `fit` keeps them (the
    ladder checks the losses equal fit's bit for bit): the teacher-forced rung's torch
    side. `model` is public so that the suite can hook its layers."""

    def __init__(self, example, config, params, opt_state=None, *, dtype="float32", device="cpu",
                 form="class"):
        self.dtype, self.device, self.example, self.form = dtype, device, example, form
        self.model = build_model(example, params, dtype=dtype, device=device, form=form)
        self.named = named_parameters(self.model, example, form)
        self.optimizer = optim.make_optimizer(config, self.model.parameters())
        self.loss_fn = example_module(example).loss_fn
        self.label_dtype = registry.get(example).label_dtype(dtype)
        self.load(None, opt_state)

    def load(self, params, opt_state=None) -> None:
        """Continue from these parameters (None: keep the model's) and optimizer state
        (None: a fresh optimizer)."""
        if params is not None:      # parameters and buffers (BatchNorm's running stats, dropout step)
            load_numpy(self.model, params, self.example, self.form)
        self.optimizer.state.clear()
        opt_state_from_numpy(self.optimizer, self.named, {k: np.copy(v) for k, v in (opt_state or {}).items()})

    def step(self, xb, yb):
        """(loss before the update, grads, new params, new opt_state), numpy, like train_step."""
        loss = self.loss_fn(self.model(tensor(xb, self.dtype, self.device)), tensor(yb, self.label_dtype, self.device))
        self.optimizer.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in self.named.items()}
        self.optimizer.step()
        return loss.item(), grads, *self.state()

    def state(self) -> tuple[dict, dict]:
        return to_numpy(self.model, self.example, self.form), opt_state_to_numpy(self.optimizer, self.named)


def stepper(example, config, params, opt_state=None, *, dtype="float32", device="cpu",
            form="class") -> Stepper:
    """A Stepper at (params, opt_state)."""
    return Stepper(example, config, params, opt_state, dtype=dtype, device=device, form=form)


def fit(example, params, x, y, order, config, *, dtype="float32", device="cpu", form="class",
        frames=False, progress=False, stop_on_divergence=False, chunk_epochs=None,
        devices=1, opt_state=None, checkpoint=None) -> specs.FitResult:
    """The tutorial's loop over epochs and DataLoader batches, from `params`.

    order: (epochs, N) sample indices (specs.batch_order) or a schedule.EpochOrder,
    drawn a chunk of epochs at a time, the same chunks as jaxport's, so memory stays
    bounded. frames: record the animation's state (module.frame) at the start of every
    kept epoch. stop_on_divergence: stop after the chunk in which a loss became inf/NaN.
    devices: data parallel over that many DistributedDataParallel processes
    (torchref/parallel.py: the global batch split, the loss its global mean); 1 is this
    function's own single-process loop. opt_state: the optimizer's state to start from
    (None: a fresh optimizer). checkpoint: a portcore.checkpoint.Checkpointer, given the
    state at chunk ends (chunks split at its multiples of epochs) and at the end.
    """
    if devices != 1:
        from torchref import parallel
        return parallel.fit(example, params, x, y, order, config, devices=devices, dtype=dtype,
                            device=device, form=form, frames=frames, progress=progress,
                            stop_on_divergence=stop_on_divergence, chunk_epochs=chunk_epochs,
                            opt_state=opt_state, checkpoint=checkpoint)
    ex = example_module(example)
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    data = ex.Dataset(x, y, dtype=dtype, device=device, label_dtype=registry.get(example).label_dtype(dtype))
    sampler = SharedOrderSampler()
    loader = DataLoader(data, batch_size=None,
                        sampler=BatchSampler(sampler, config.batch_size, drop_last=False))
    optimizer = optim.make_optimizer(config, model.parameters())
    named = named_parameters(model, example, form)
    opt_state_from_numpy(optimizer, named, opt_state or {})
    epochs, n = schedule.order_size(order)
    rec = schedule.Recorder(epochs, specs.steps_per_epoch(n, config.batch_size))
    size, every = chunk_epochs or schedule.chunk_epochs(n, config.batch_size), checkpoint and checkpoint.every
    start = time.perf_counter()
    with tqdm(total=epochs, desc=f"torch {example}", unit="epoch", disable=not progress,
              leave=False, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, size, every):
            keep, losses, frame_list = set(rec.rows(rec.epochs_run, len(chunk)).tolist()), [], []
            for e, row in enumerate(chunk):
                if frames and e in keep:
                    with torch.no_grad():
                        frame_list.append(ex.frame(model, data.x).cpu().numpy())
                sampler.row = row
                for xb, yb in loader:
                    loss = ex.loss_fn(model(xb), yb)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.detach())
                bar.update()
            # One device-to-host copy per chunk, not per step.
            rec.add(torch.stack(losses).reshape(len(chunk), -1).cpu().numpy(),
                    np.stack(frame_list) if frame_list else None)
            if checkpoint is not None and checkpoint.due(order, rec.epochs_run):
                checkpoint.write(order, rec.epochs_run, to_numpy(model, example, form),
                                 opt_state_to_numpy(optimizer, named))
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    return rec.result(to_numpy(model, example, form), time.perf_counter() - start)


def clear_caches() -> None:
    """The contract's twin of jaxport's: torchref compiles and caches nothing."""
