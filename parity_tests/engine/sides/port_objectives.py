"""Optimizers and learning-rate schedules by name, each built twice (torch, optax) with
torch's semantics and torch's defaults, for the harness (parity_tests/harness.py);
the losses are port_losses.py.

Defaults differ between the libraries and are pinned here to torch's:
- sgd: momentum 0.9 unless given (the house's default; 0 is plain SGD), nesterov,
  weight_decay coupled (g + wd p), dampening 0.
- adam: betas and eps torch's; jaxport.optim.torch_adam (torch's bias-correction
  arithmetic in double). adamw: torch's decay 1e-2 (optax.adamw's is 1e-4), decoupled
  (torch_adam's weight_decay).
- rmsprop (alpha .99, eps 1e-8 outside the root), adagrad (eps 1e-10, sum from 0),
  adadelta (lr 1.0, rho .9, eps 1e-6): jaxport.optim's, torch's order of operations.
- schedule: {"kind": "step", "step_size": k, "gamma": g} (StepLR) or {"kind": "cosine",
  "T_max": T, "eta_min": 0} (CosineAnnealingLR), stepped after every optimizer step
  (a per-epoch schedule is a per-step one with the steps of an epoch: StepLR's
  step_size x batches per epoch). torch runs its own scheduler; optax takes the lrs
  from a table of torch's recurrence in Python double (jaxport.optim.step_lr_table).
An explicit (torch factory, optax transformation) pair runs as given; its factory may
return (optimizer, scheduler). Its state is not converted between the sides (the
teacher-forced rung then feeds only the parameters, see port_rungs.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import optax

import jaxport.optim as jo


class PortInputError(ValueError):
    """Bad input to the harness (unknown loss, shapes that do not fit): exit status 2."""


@contextlib.contextmanager
def refused(message, errors=Exception):
    """Any of `errors` raised inside (the user's model or loss failing on the input)
    as a PortInputError saying message(error); a PortInputError passes as it is."""
    try:
        yield
    except PortInputError:
        raise
    except errors as error:                                 # noqa: BLE001 (the user's code)
        raise PortInputError(message(error)) from None


@dataclass(frozen=True)
class OptimizerPair:
    """One optimizer on both sides: `torch(params)` builds torch's optimizer (or
    (optimizer, scheduler)), `optax` is the transformation; `kind` says how torch's
    state maps onto optax's: "adam" (ScaleByAdamState), "torch" (jaxport.optim.TorchState,
    slot by slot), None (it does not: an explicit pair)."""
    label: str
    torch: object
    optax: optax.GradientTransformation
    kind: str | None


# torch's keyword arguments and defaults per optimizer (sgd's momentum: the house's 0.9)
SPECS = {
    "sgd": dict(lr=1e-2, momentum=0.9, nesterov=False, weight_decay=0.0),
    "adam": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
    "adamw": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, initial_accumulator_value=0.0),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0),
}
TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad",
               "adadelta": "Adadelta"}
# torch's scheduler class, its keywords' defaults (None: required), the lr table in double
SCHEDULES = {"step": ("StepLR", {"step_size": None, "gamma": 0.1}, jo.step_lr_table),
             "cosine": ("CosineAnnealingLR", {"T_max": None, "eta_min": 0.0}, jo.cosine_lr_table)}


def _settings(name: str, lr, momentum, weight_decay, nesterov, options) -> dict:
    given = {k: v for k, v in dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                   nesterov=nesterov or None).items() if v is not None}
    given.update(options or {})
    unknown = sorted(set(given) - set(SPECS[name]))
    if unknown:
        raise PortInputError(f"optimizer {name} takes no {', '.join(unknown)} (it takes {', '.join(SPECS[name])})")
    return {**SPECS[name], **given}


def _schedule(schedule, lr: float, steps: int):
    """(torch scheduler factory, lr table in double, label) of a schedule spec."""
    import torch  # noqa: PLC0415
    if schedule is None:
        return None, np.array([lr]), ""
    spec = dict(schedule) if isinstance(schedule, dict) else {}
    kind = spec.pop("kind", None)
    if kind not in SCHEDULES:
        raise PortInputError(f"unknown schedule {schedule!r} (use {{'kind': 'step', 'step_size': k, 'gamma': g}} "
                             "or {'kind': 'cosine', 'T_max': T, 'eta_min': 0})")
    cls, defaults, lr_table = SCHEDULES[kind]
    unknown = sorted(set(spec) - set(defaults))
    missing = sorted(k for k, v in defaults.items() if v is None and k not in spec)
    if unknown or missing:
        raise PortInputError(f"schedule {kind} takes {', '.join(defaults)}"
                             + (f"; unknown {', '.join(unknown)}" if unknown else "")
                             + (f"; missing {', '.join(missing)}" if missing else ""))
    spec = {**defaults, **spec}
    first = next(iter(defaults))               # step_size / T_max: a positive integer
    if not isinstance(spec[first], (int, np.integer)) or isinstance(spec[first], bool) or spec[first] < 1:
        raise PortInputError(f"schedule {kind}: {first} must be a positive integer, not {spec[first]!r}")
    table = lr_table(lr, steps, **spec)
    label = f", {cls}(" + ", ".join(f"{k} {v:g}" for k, v in spec.items()) + ") per optimizer step"
    return lambda opt: getattr(torch.optim.lr_scheduler, cls)(opt, **spec), table, label


def _optax(name: str, s: dict, lrs: np.ndarray, steps: int) -> optax.GradientTransformation:
    if name in ("adam", "adamw"):
        return jo.torch_adam(lrs, *s["betas"], s["eps"], s.get("weight_decay", 0.0))
    if name == "sgd":
        return jo.torch_sgd(lrs, s["momentum"], s["nesterov"], s["weight_decay"])
    if name == "rmsprop":
        return jo.torch_rmsprop(lrs, s["alpha"], s["eps"], s["weight_decay"], s["momentum"])
    if name == "adagrad":
        return jo.torch_adagrad(jo.adagrad_lrs(lrs, s["lr_decay"], steps), s["eps"], s["weight_decay"],
                                s["initial_accumulator_value"])
    return jo.torch_adadelta(lrs, s["rho"], s["eps"], s["weight_decay"])


def optimizer_pair(optimizer, lr=None, momentum=None, weight_decay=None, nesterov=False, options=None,
                   schedule=None, steps: int = 1) -> OptimizerPair:
    """A named optimizer (SPECS: torch's keyword arguments, `options` for the rest) and
    schedule on both sides, or an explicit (torch optimizer factory, optax
    transformation) pair."""
    import torch  # noqa: PLC0415
    if isinstance(optimizer, tuple) and len(optimizer) == 2:
        if schedule is not None or options:
            raise PortInputError("an explicit optimizer pair takes no schedule or options: build them into the pair "
                                 "(the torch factory may return (optimizer, scheduler))")
        return OptimizerPair("explicit pair", optimizer[0], optimizer[1], None)
    if not isinstance(optimizer, str) or optimizer not in SPECS:
        raise PortInputError(f"unknown optimizer {optimizer!r} (use {', '.join(SPECS)} or a (torch, optax) pair)")
    s = _settings(optimizer, lr, momentum, weight_decay, nesterov, options)
    scheduler, lrs, schedule_label = _schedule(schedule, float(s["lr"]), steps)
    cls = getattr(torch.optim, TORCH_NAMES[optimizer])

    def factory(params):
        opt = cls(params, **s)
        return (opt, scheduler(opt)) if scheduler is not None else opt
    settings = ", ".join(f"{k}={v}" for k, v in s.items())
    # torch's own checks of the values (nesterov needs momentum ...)
    with refused(lambda error: f"{TORCH_NAMES[optimizer]}({settings}): {error}", (ValueError, TypeError)):
        factory([torch.zeros(1, requires_grad=True)])
    shown = " ".join(k if v is True else f"{k.replace('_', ' ')} {v:g}" if isinstance(v, (int, float))
                     else f"{k} {v}" for k, v in s.items()
                     if k == "lr" or v != SPECS[optimizer][k] or (optimizer, k) in (("sgd", "momentum"), ("adamw", "weight_decay")))
    return OptimizerPair(f"{TORCH_NAMES[optimizer]} {shown}{schedule_label}", factory,
                         _optax(optimizer, s, lrs, steps),
                         "adam" if optimizer in ("adam", "adamw") else "torch")
