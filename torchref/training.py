"""The tutorial's training loop, generic over the examples: DataLoader, zero_grad,
backward, step. Parameters and optimizer state cross this API as numpy mappings with
PyTorch names (see portcore/weights.py), so jaxport's twin can be fed the same state.

Twin: jaxport/training.py.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import optim
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler
from tqdm import tqdm

from portcore import schedule, specs
from torchref import example_module
from torchref.convert import load_numpy, named_parameters, to_numpy
from torchref.numerics import torch_device, torch_dtype


class ArrayDataset(Dataset):
    """Wraps the shared numpy arrays; indexable by a list of indices, so a whole batch
    is one tensor gather instead of `batch_size` calls and a collate."""

    def __init__(self, x, y, dtype="float32", device="cpu"):
        self.x = torch.as_tensor(np.asarray(x), dtype=torch_dtype(dtype), device=torch_device(device))
        self.y = torch.as_tensor(np.asarray(y), dtype=torch_dtype(dtype), device=torch_device(device))

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def __len__(self):
        return len(self.x)


class SharedOrderSampler(Sampler):
    """Visits the samples in the shared order: `fit` sets `row`, one epoch's row of the
    order, before each pass. DataLoader(shuffle=...) semantics, with jaxport drawing
    the same permutations."""

    row: np.ndarray = np.zeros(0, np.int64)

    def __iter__(self):
        return iter(self.row.tolist())

    def __len__(self):
        return len(self.row)


def build_model(example, params=None, *, dtype="float32", device="cpu", form="class", seed=0):
    """The example's nn.Module. Without params: nn.Linear's own init under manual_seed."""
    model = example_module(example).build_model(form, seed=seed, dtype=dtype).to(torch_device(device))
    if params is not None:
        load_numpy(model, params, example, form)
    return model


def default_params(example, seed=0, *, dtype="float32", form="class") -> dict:
    """torch's default initial parameters for this seed, in the exchange format."""
    return to_numpy(build_model(example, dtype=dtype, form=form, seed=seed), example, form)


def make_optimizer(config: specs.TrainConfig, parameters):
    if config.optimizer == "sgd":
        return optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return optim.Adam(parameters, lr=config.lr, betas=config.betas, eps=config.eps)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _tensors(x, dtype, device):
    """Floats in the run's dtype; integer arrays (class labels) as int64, what
    nn.CrossEntropyLoss takes."""
    x = np.asarray(x)
    kind = torch.int64 if np.issubdtype(x.dtype, np.integer) else torch_dtype(dtype)
    return torch.as_tensor(x, dtype=kind, device=torch_device(device))


def loss_and_grads(example, params, x, y, *, dtype="float32", device="cpu", form="class"):
    """(loss, {name: gradient}) of the example's loss on (x, y) at `params`."""
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    loss = example_module(example).loss_fn(model(_tensors(x, dtype, device)), _tensors(y, dtype, device))
    loss.backward()
    grads = {n: p.grad.detach().cpu().numpy() for n, p in named_parameters(model, example, form).items()}
    return loss.item(), grads


def predict(example, params, x, *, dtype="float32", device="cpu", form="class") -> np.ndarray:
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    model.eval()                # BatchNorm on its running statistics, dropout off
    with torch.no_grad():
        return model(_tensors(x, dtype, device)).cpu().numpy()


# Optimizer state in the exchange format: "step" and "exp_avg/<param>",
# "exp_avg_sq/<param>" for Adam; "momentum_buffer/<param>" for SGD with momentum.
def _state_to_numpy(optimizer, named) -> dict:
    out = {}
    for name, p in named.items():
        for key, value in optimizer.state.get(p, {}).items():
            if key == "step":
                out["step"] = np.asarray(float(value))
            elif value is not None:
                out[f"{key}/{name}"] = value.detach().cpu().numpy().copy()
    return out


def _state_from_numpy(optimizer, named, state: dict) -> None:
    for name, p in named.items():
        entry = {}
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if f"{key}/{name}" in state:
                # A copy: the optimizer updates its moments in place, and the
                # caller's arrays must stay as they were.
                entry[key] = torch.tensor(state[f"{key}/{name}"], dtype=p.dtype, device=p.device)
        if "step" in state:
            entry["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        if entry:
            optimizer.state[p] = entry


def train_step(example, params, opt_state, x, y, config, *, dtype="float32", device="cpu",
               form="class"):
    """One optimizer step from (params, opt_state) on the batch (x, y).

    Returns (loss before the update, grads, new params, new opt_state), all numpy.
    opt_state None or {} is a fresh optimizer.
    """
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    named = named_parameters(model, example, form)
    optimizer = make_optimizer(config, model.parameters())
    _state_from_numpy(optimizer, named, opt_state or {})
    loss = example_module(example).loss_fn(model(_tensors(x, dtype, device)), _tensors(y, dtype, device))
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in named.items()}
    optimizer.step()
    return loss.item(), grads, to_numpy(model, example, form), _state_to_numpy(optimizer, named)


def fit(example, params, x, y, order, config, *, dtype="float32", device="cpu", form="class",
        frames=False, progress=False, stop_on_divergence=False, chunk_epochs=None,
        devices=1) -> specs.FitResult:
    """The tutorial's loop over epochs and DataLoader batches, from `params`.

    order: (epochs, N) sample indices (specs.batch_order) or a schedule.EpochOrder,
    drawn a chunk of epochs at a time, the same chunks as jaxport's, so memory stays
    bounded. frames: record the animation's state (module.frame) at the start of every
    kept epoch. stop_on_divergence: stop after the chunk in which a loss became inf/NaN.
    devices: data parallel over that many DistributedDataParallel processes
    (torchref/parallel.py: the global batch split, the loss its global mean); 1 is this
    function's own single-process loop.
    """
    if devices != 1:
        from torchref import parallel
        return parallel.fit(example, params, x, y, order, config, devices=devices, dtype=dtype,
                            device=device, form=form, frames=frames, progress=progress,
                            stop_on_divergence=stop_on_divergence, chunk_epochs=chunk_epochs)
    ex = example_module(example)
    model = build_model(example, params, dtype=dtype, device=device, form=form)
    data = ex.Dataset(x, y, dtype=dtype, device=device)
    sampler = SharedOrderSampler()
    loader = DataLoader(data, batch_size=None,
                        sampler=BatchSampler(sampler, config.batch_size, drop_last=False))
    optimizer = make_optimizer(config, model.parameters())
    epochs, n = schedule.order_size(order)
    rec = schedule.Recorder(epochs, specs.steps_per_epoch(n, config.batch_size))
    start = time.perf_counter()
    with tqdm(total=epochs, desc=f"torch {example}", unit="epoch", disable=not progress,
              leave=False, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, chunk_epochs or schedule.chunk_epochs(n, config.batch_size)):
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
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    return rec.result(to_numpy(model, example, form), time.perf_counter() - start)
