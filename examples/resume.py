"""`run --checkpoint FILE --checkpoint-every K` and `run --resume FILE`: where a run
starts (--init, the default initialisation, or a checkpoint) and the one call of the
backend's `fit`. The checkpoint file: portcore/checkpoint.py.

A resumed run takes its example, backend, dtype and training flags from the checkpoint;
--epochs N (default: the interrupted run's) counts from the run's start, so it ends
where the uninterrupted run would, bit for bit. A flag that would change the run
(--dtype, --seed, --shuffle, --model, --batch-size, --lr, --init) and disagrees with the
checkpoint is refused, as is a checkpoint of another example or format version.
"""
from __future__ import annotations

import numpy as np

from examples.usage import UsageError
from portcore import checkpoint, registry, schedule, specs, weights

# Flags that define the run: a resumed run takes them from the checkpoint.
KEPT = ("dtype", "seed", "shuffle", "model", "batch_size", "lr")
# What `run` means when a flag is not given and there is no checkpoint to take it from.
DEFAULTS = {"dtype": "float32", "device": "cpu", "seed": specs.DEFAULT_SEED, "model": "class",
            "devices": 1, "shuffle": False}


def resolve(args) -> None:
    """Fill in what the command line left out, from the checkpoint (--resume) or the
    defaults; args.resumed is (meta, params, opt_state) or None."""
    args.resumed = None
    if args.resume is None:
        if args.name is None or args.backend is None:
            raise UsageError("the following arguments are required: " + ", ".join(
                n for n, v in (("NAME", args.name), ("--backend", args.backend)) if v is None))
        for flag, value in DEFAULTS.items():
            setattr(args, flag, value if getattr(args, flag) is None else getattr(args, flag))
    else:
        _from_checkpoint(args)
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("--checkpoint-every needs --checkpoint FILE")


def _from_checkpoint(args) -> None:
    where = f"--resume {args.resume}"
    if args.init is not None:
        raise UsageError(f"{where}: --init not applicable (the weights come from the checkpoint)")
    meta, params, opt_state = checkpoint.load(args.resume)
    if args.name is not None and args.name != meta["example"]:
        raise UsageError(f"{where}: a checkpoint of {meta['example']}, not {args.name}")
    for flag in KEPT:
        given = getattr(args, flag)
        if given is not None and given != meta[flag]:
            raise UsageError(f"{where}: a checkpoint of a run with --{flag.replace('_', '-')} {meta[flag]}, "
                             f"which a resumed run keeps (given: {given})")
        setattr(args, flag, meta[flag])
    args.name = meta["example"]
    for flag in ("backend", "device", "devices"):           # how, not what: may change
        setattr(args, flag, meta[flag] if getattr(args, flag) is None else getattr(args, flag))
    args.epochs = meta["epochs"] if args.epochs is None else args.epochs
    if args.epochs < meta["epoch"]:
        raise UsageError(f"--epochs {args.epochs}: the checkpoint {args.resume} is at epoch {meta['epoch']} already")
    if args.checkpoint is None:                                 # keep checkpointing where it was
        args.checkpoint, args.checkpoint_every = args.resume, args.checkpoint_every or meta["checkpoint_every"]
    args.resumed = (meta, params, opt_state)


def initial_params(args, backend) -> dict:
    if args.resumed is not None:
        return args.resumed[1]
    if args.init is not None:
        return weights.load(args.init, registry.exchange_shapes(args.name))
    return backend.training.default_params(args.name, args.seed, dtype=args.dtype, form=args.model)


def train(args, backend, config, params, frames=False, stop_on_divergence=False):
    """Fit from `params` (or the checkpoint's state); returns (FitResult, metrics) in the
    exchange format. The batch order is drawn as the run goes, so any number of epochs
    fits in memory; a resumed run's recorded epochs count from the run's start."""
    x, y = registry.make_data(args.name, args.seed)
    meta, _, opt_state = args.resumed or ({"epoch": 0, "order_state": None}, None, None)
    order = schedule.EpochOrder(len(x), config.epochs, config.shuffle, args.seed, start=meta["epoch"],
                                rng_state=meta["order_state"])
    saver = None if args.checkpoint is None else checkpoint.Checkpointer(str(args.checkpoint), args.checkpoint_every, {
        "example": args.name, "backend": args.backend, "dtype": args.dtype, "optimizer": config.optimizer,
        "device": args.device, "devices": args.devices, "seed": args.seed, "shuffle": config.shuffle,
        "model": args.model, "batch_size": config.batch_size, "lr": config.lr, "epochs": config.epochs})
    kw = dict(dtype=args.dtype, device=args.device, form=args.model)
    record = registry.get(args.name)
    # A classifier's frames are its logits on the training AND the held-out images: fit
    # gets both, appended, but its batch order indexes only the first len(x) rows, so
    # training never sees the held-out ones (test_deep_cli checks the run is unchanged).
    fx, fy = (np.concatenate([a, b]) for a, b in zip((x, y), record.held_out(args.seed))) \
        if frames and record.held_out else (x, y)
    result = backend.training.fit(args.name, params, fx, fy, order, config, frames=frames,
                                  progress=not args.quiet, stop_on_divergence=stop_on_divergence,
                                  devices=args.devices, opt_state=opt_state, checkpoint=saver, **kw)
    if meta["epoch"]:
        kept = np.arange(result.epochs_run) if result.recorded_epochs is None else result.recorded_epochs
        result.recorded_epochs = kept + meta["epoch"]
    final_loss, _ = backend.training.loss_and_grads(args.name, result.params, x, y, **kw)
    metrics = {"final_loss": final_loss}
    if record.metric == "accuracy":
        metrics["accuracy"] = specs.accuracy(backend.training.predict(args.name, result.params, x, **kw), y)
    if record.metric == "class_accuracy":     # on the held-out images, the model in eval mode
        xh, yh = record.held_out(args.seed)
        logits = backend.training.predict(args.name, result.params, xh, **kw)
        metrics["accuracy"] = specs.class_accuracy(logits, yh)
        metrics["held_out_loss"] = specs.cross_entropy(logits, yh)
    return result, metrics
