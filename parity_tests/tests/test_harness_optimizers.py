"""The harness's optimizers and schedules (parity_tests/engine/sides/port_objectives.py,
jaxport/optim.py): each optax transformation equals torch.optim's step leaf by leaf to
float64 roundoff; the schedules' lr tables are torch's schedulers' numbers bit for bit;
correct ports pass with each named optimizer in both dtypes (optimizer state
converted); planted optimizer bugs fail at the step that shows them."""
import dataclasses

import numpy as np
import optax
import pytest
import torch

from examples.own_port import NnxMLP, TorchMLP, make_data
from jaxport.numerics import dtype_scope
import jaxport.optim as po
from parity_tests.engine.port_cli import main
from parity_tests.engine.sides.port_objectives import optimizer_pair
from parity_tests.harness import PortInputError, check_port

SHAPES = [(3, 4), (4,), (2, 1, 3)]
STEP = dict(kind="step", step_size=2, gamma=0.5)
COSINE = dict(kind="cosine", T_max=4, eta_min=1e-3)
CASES = [
    ("sgd", {}), ("sgd", dict(nesterov=True, weight_decay=0.1)), ("sgd", dict(momentum=0.0, schedule=STEP)),
    ("rmsprop", {}), ("rmsprop", dict(momentum=0.5, weight_decay=0.1, options=dict(alpha=0.9))),
    ("adagrad", {}), ("adagrad", dict(weight_decay=0.1, options=dict(lr_decay=0.1, initial_accumulator_value=0.1))),
    ("adadelta", {}), ("adadelta", dict(weight_decay=0.1, options=dict(rho=0.95), schedule=COSINE)),
    ("adam", dict(schedule=COSINE)), ("adamw", dict(schedule=STEP)), ("sgd", dict(nesterov=True, schedule=COSINE)),
]


def _torch_and_optax(pair, steps, seed=0):
    """Both sides' parameters after each of `steps` steps on the same random gradients."""
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=s) for s in SHAPES]
    t_params = [torch.tensor(p, requires_grad=True) for p in start]
    built = pair.torch(t_params)
    opt, scheduler = built if isinstance(built, tuple) else (built, None)
    j_params, out = [np.asarray(p) for p in start], []
    with dtype_scope("float64"):
        state = pair.optax.init(j_params)
        for _ in range(steps):
            grads = [rng.normal(size=s) for s in SHAPES]
            for p, g in zip(t_params, grads):
                p.grad = torch.tensor(g)
            opt.step()
            if scheduler is not None:
                scheduler.step()
            updates, state = pair.optax.update(grads, state, j_params)
            j_params = [np.asarray(optax.apply_updates(p, u)) for p, u in zip(j_params, updates)]
            out.append(([p.detach().numpy().copy() for p in t_params], j_params))
    return out


@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_each_transformation_is_torchs_step_to_float64_roundoff(name, kw):
    """8 steps, every leaf within 1e-12 of torch's (relative to the leaf's largest
    entry); the parameters did move, by more than a roundoff."""
    for t_params, j_params in _torch_and_optax(optimizer_pair(name, steps=8, **kw), 8):
        for t, j in zip(t_params, j_params):
            assert np.max(np.abs(t - j)) <= 1e-12 * np.max(np.abs(t)), (name, kw)
    first = _torch_and_optax(optimizer_pair(name, steps=8, **kw), 1)[0][0][0]
    assert np.max(np.abs(first - np.random.default_rng(0).normal(size=SHAPES[0]))) > 1e-4


def test_optaxs_own_versions_differ_from_torchs():
    """The defaults the jaxport.optim versions exist for: optax.rmsprop's eps inside the
    root and optax.adagrad's 0.1 start are off torch's step by far more than roundoff."""
    for name, theirs in [("rmsprop", optax.rmsprop(1e-2)), ("adagrad", optax.adagrad(1e-2))]:
        pair = optimizer_pair(name, steps=3)
        t, j = _torch_and_optax(dataclasses.replace(pair, optax=theirs), 3)[-1]
        assert max(np.max(np.abs(a - b)) for a, b in zip(t, j)) > 1e-4, name


@pytest.mark.parametrize("schedule, torch_scheduler", [
    (STEP, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    (dict(kind="step", step_size=3, gamma=0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
    (COSINE, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=1e-3)),
    (dict(kind="cosine", T_max=7), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7)),
])
def test_schedule_tables_are_torchs_lrs_bit_for_bit(schedule, torch_scheduler):
    """30 steps (past T_max: torch's cosine turns back up, its recurrence branch by
    branch); the harness's table is what torch's scheduler sets, exactly."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.07)
    scheduler, lrs = torch_scheduler(opt), []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    spec = {k: v for k, v in schedule.items() if k != "kind"}
    table = (po.step_lr_table if schedule["kind"] == "step" else po.cosine_lr_table)(0.07, 30, **spec)
    assert table.tolist() == lrs
    assert len(set(lrs)) > 3


def _mlp(dtype, steps=6, **kw):
    x, y = make_data(32)
    return check_port(TorchMLP(), NnxMLP(), x, y, loss="mse", steps=steps, batch_size=16, dtype=dtype, **kw)


PORTS = [("sgd", dict(lr=0.05, nesterov=True, weight_decay=1e-3, schedule=STEP)), ("rmsprop", dict(lr=1e-3)),
         ("adagrad", dict(lr=0.05)), ("adadelta", dict(weight_decay=1e-3)), ("adam", dict(schedule=COSINE))]


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])   # float32: 2nd tier
@pytest.mark.parametrize("name, kw", PORTS, ids=[p[0] for p in PORTS])
def test_a_correct_port_passes_with_each_optimizer(name, kw, dtype):
    report = _mlp(dtype, optimizer=name, **kw)
    assert report.passed, report.markdown()
    assert {r.rung for r in report.rows} == {2, 3, 4, 5, 6, 7} and max(r.used for r in report.rows) <= 1.0
    # the optimizer's state is compared on NNX's paths under torch's names
    moments = {r.quantity for r in report.rows if r.rung == 4 and "optimizer state" in r.quantity}
    assert moments or (name == "sgd" and not kw.get("momentum", 0.9)), report.markdown()


def _failure(report):
    f = report.first_failure
    assert f is not None, report.markdown()
    return f["rung"], f["step"], f["quantity"]


def _step_lr_sgd(lr, gamma):
    """A torch factory returning (optimizer, scheduler): the scheduler steps after each step."""
    def factory(params):
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, 2, gamma)
    return factory


@pytest.mark.slow    # ~12 s, every optimizer: the second tier
def test_planted_optimizer_bugs_fail_at_the_first_step_they_change():
    """Explicit (torch, optax) pairs with one thing wrong on the JAX side (float64)."""
    lr = 1e-2
    planted = {   # name: (torch factory, optax side, (rung, step, quantity))
        # torch's decay and eps, so only eps's place differs: sqrt(v + eps) for sqrt(v) + eps
        "rmsprop eps inside the root (optax.rmsprop)": (
            lambda ps: torch.optim.RMSprop(ps, lr=lr), optax.rmsprop(lr, decay=0.99, eps=1e-8),
            (4, 0, "parameters after the update")),
        "adagrad's sum from 0.1 (optax's default)": (
            lambda ps: torch.optim.Adagrad(ps, lr=lr), po.torch_adagrad([lr], initial_accumulator_value=0.1),
            (4, 0, "parameters after the update")),
        "adadelta's rho 0.95 for 0.9": (
            lambda ps: torch.optim.Adadelta(ps), po.torch_adadelta([1.0], rho=0.95), (4, 0, "parameters after the update")),
        "nesterov dropped": (
            lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True), optax.sgd(lr, momentum=0.9),
            (4, 0, "parameters after the update")),
        # StepLR halves the lr after two steps, the JAX side's table by 0.45: step 2 (the
        # third, rung 5) is the first to differ
        "StepLR gamma 0.45 for 0.5": (_step_lr_sgd(lr, 0.5), po.torch_sgd(po.step_lr_table(lr, 6, 2, 0.45), 0.9),
                                      (5, 2, "parameters after the update")),
        # optax's schedules compute the lr in float32 even under x64: float32(0.01) is
        # 2.2e-8 relative off torch's double lr, far above the float64 table's 1e-10
        "optax.exponential_decay for StepLR in float64": (
            _step_lr_sgd(lr, 0.5), optax.sgd(optax.exponential_decay(lr, 2, 0.5, staircase=True), momentum=0.9),
            (4, 0, "parameters after the update")),
    }
    for name, (factory, tx, where) in planted.items():
        report = _mlp("float64", optimizer=(factory, tx), locate=False)
        assert _failure(report) == where, (name, report.markdown())
        assert report.first_failure["max_rel"] > 1e-9, name       # 10 x the float64 table's 1e-10
    # the same pairs with the right value pass every rung
    right = [(lambda ps: torch.optim.Adadelta(ps), po.torch_adadelta([1.0], rho=0.9)),
             (lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True), optax.sgd(lr, 0.9, nesterov=True)),
             (_step_lr_sgd(lr, 0.5), po.torch_sgd(po.step_lr_table(lr, 6, 2, 0.5), 0.9))]
    for factory, tx in right:
        report = _mlp("float64", optimizer=(factory, tx))
        assert report.passed, report.markdown()


def test_an_explicit_pairs_state_starts_fresh_in_every_rung():
    """optax.sgd's momentum trace, carried by the NNX side of an explicit pair: rung 5's
    first step starts from a zero trace as torch's does, not from rung 4's two steps
    (left over, it moved step 0 by lr x 0.9 x the old trace)."""
    report = _mlp("float64", steps=4, rungs=(4, 5),
                  optimizer=(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), optax.sgd(0.05, momentum=0.9)))
    assert report.passed, report.markdown()
    assert any(r.rung == 5 for r in report.rows)


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="sgd", momentum=0.0, nesterov=True), "SGD.*Nesterov momentum requires a momentum"),
    (dict(optimizer="adam", momentum=0.9), "optimizer adam takes no momentum"),
    (dict(optimizer="rmsprop", optimizer_options=dict(centered=True)), "optimizer rmsprop takes no centered"),
    (dict(optimizer="adam", schedule=dict(kind="linear")), "unknown schedule"),
    (dict(optimizer="adam", schedule=dict(kind="step", gamma=0.5)), "schedule step takes .*; missing step_size"),
    (dict(optimizer="adam", schedule=dict(kind="cosine", T_max=0)), "T_max must be a positive integer"),
    (dict(optimizer=(lambda ps: torch.optim.SGD(ps, lr=0.1), optax.sgd(0.1)), schedule=STEP), "explicit optimizer pair"),
])
def test_bad_optimizer_settings_are_bad_input(kwargs, message):
    with pytest.raises(PortInputError, match=message):
        _mlp("float64", steps=2, **kwargs)


def test_the_cli_takes_optimizer_flags(tmp_path, capsys):
    path = tmp_path / "port.npz"
    np.savez(path, **dict(zip("xy", make_data(32))))
    base = ["check", "examples.own_port:TorchMLP", "examples.own_port:NnxMLP", "--data", str(path), "--steps", "4",
            "--batch-size", "16"]
    assert main([*base, "--optimizer", "sgd", "--lr", "0.05", "--nesterov", "--weight-decay", "1e-3",
                 "--schedule", "step:step_size=2,gamma=0.5"]) == 0
    out = capsys.readouterr().out
    assert "SGD lr 0.05 momentum 0.9 nesterov weight decay 0.001, StepLR(step_size 2, gamma 0.5) per optimizer step" in out
    assert main([*base, "--optimizer", "rmsprop", "--optimizer-options", "alpha=0.9,eps=1e-6",
                 "--schedule", "cosine:T_max=4"]) == 0
    capsys.readouterr()
    assert main([*base, "--schedule", "cosine:Tmax=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: schedule cosine takes T_max, eta_min; unknown Tmax")
