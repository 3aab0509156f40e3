"""Runs of any length: the lazily drawn order is batch_order's, chunked runs are the
one-program run bit for bit, long runs keep a bounded record, and jaxport never shares
a caller's buffer."""
import numpy as np
import pytest

from portcore import registry, schedule, specs
from examples import outcome
from jaxport import training as jax_training
from jaxport.programs import DEFAULT
from jaxport.state import device_array
from torchref import training as torch_training

BACKENDS = {"torch": torch_training, "jax": jax_training}


@pytest.mark.parametrize("shuffle", [False, True])
def test_epoch_order_draws_batch_orders_rows_bit_for_bit(shuffle):
    order = specs.batch_order(7, 10, shuffle, seed=3)
    lazy = schedule.EpochOrder(7, 10, shuffle, seed=3)
    for size in (1, 3, 10, 50):
        chunks = list(lazy.chunks(size))
        assert [len(c) for c in chunks] == [min(size, 10 - s) for s in range(0, 10, size)]
        assert np.array_equal(np.concatenate(chunks), order)
    assert np.array_equal(np.concatenate(list(schedule.order_chunks(order, 4))), order)
    assert schedule.order_size(lazy) == schedule.order_size(order) == (10, 7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("example", [pytest.param("neural_network", marks=pytest.mark.slow), "logistic_regression"])
def test_chunked_run_is_the_one_program_run_bit_for_bit(backend, example):
    """Chunks of 4 and of 1 epoch, with a shorter last chunk, against one chunk: every
    step's loss, every frame and every fitted parameter identical, shuffled order and
    a partial last batch included. jax: one compilation for all full chunks."""
    x, y = registry.make_data(example, seed=2)
    config = registry.get(example).defaults.replace(epochs=11, batch_size=30, shuffle=True)
    order = specs.batch_order(len(x), config.epochs, True, seed=2)
    fit = BACKENDS[backend].fit
    whole = fit(example, registry.shared_init(example), x, y, order, config, frames=True)
    assert whole.step_losses.shape == (11 * 4,) and whole.frames.shape[0] == 11
    before = DEFAULT.compile_count
    for size in (4, 1):
        chunked = fit(example, registry.shared_init(example), x, y, schedule.EpochOrder(len(x), 11, True, 2),
                      config, frames=True, chunk_epochs=size)
        assert np.array_equal(chunked.step_losses, whole.step_losses)
        assert np.array_equal(chunked.epoch_losses, whole.epoch_losses)
        assert np.array_equal(chunked.frames, whole.frames)
        for name in whole.params:
            assert np.array_equal(chunked.params[name], whole.params[name]), name
    if backend == "jax":            # size 4: chunks of 4 and one of 3; size 1: one program
        assert DEFAULT.compile_count == before + 3


@pytest.mark.parametrize("example", registry.LADDER)
def test_tutorial_runs_stay_one_program(example):
    """Chunking starts past schedule.CHUNK_STEPS: the tutorial's runs compile one
    program of all their epochs, as before."""
    x, y = registry.make_data(example)
    config = registry.get(example).defaults
    DEFAULT.clear()                    # only this run's programs: other tests (any order, any worker) compile others
    jax_training.fit(example, registry.shared_init(example), x, y, schedule.EpochOrder(len(x), config.epochs, False),
                     config)
    shapes = [k[-1] for k in DEFAULT.compiled()
              if k[0] == example and k[2] == config and not k[3] and k[4] == "float32"]
    assert shapes == [(config.epochs, 1, 100)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_run_keeps_a_bounded_record(backend, monkeypatch):
    """Shrunk limits stand in for --epochs 100000000: chunks of 8 steps, 5 kept epochs.
    The record keeps the first and last epoch and their frames; the step count and the
    first non-finite loss are found in every chunk, kept or not."""
    example = "linear_regression"
    x, y = registry.make_data(example)
    config = registry.get(example).defaults.replace(epochs=41, batch_size=50)          # 2 steps an epoch
    full = BACKENDS[backend].fit(example, registry.shared_init(example), x, y,
                                 specs.batch_order(len(x), 41, False), config, frames=True)
    monkeypatch.setattr(schedule, "CHUNK_STEPS", 8)
    monkeypatch.setattr(schedule, "MAX_RECORDED_EPOCHS", 5)
    order = schedule.EpochOrder(len(x), 41, False)
    r = BACKENDS[backend].fit(example, registry.shared_init(example), x, y, order, config, frames=True)
    assert r.recorded_epochs.tolist() == [0, 10, 20, 30, 40] and r.epochs_run == 41
    assert r.step_losses.shape == (10,) and r.epoch_losses.shape == (5,) and r.frames.shape == (5, 100)
    kept = [0, 10, 20, 30, 40]
    assert np.array_equal(r.epoch_losses, full.epoch_losses[kept])
    assert np.array_equal(r.frames, full.frames[kept])
    assert outcome.first_nonfinite_step(r) is None
    # lr 1e6 overflows within a few steps; stopping after that chunk: 4 epochs run.
    bad = BACKENDS[backend].fit(example, registry.shared_init(example), x, y, order, config.replace(lr=1e6),
                                stop_on_divergence=True)
    step = outcome.first_nonfinite_step(bad)
    assert bad.epochs_run == 4 and step is not None and 1 <= step < 8
    assert np.isfinite(full.step_losses).all()


def test_first_nonfinite_step_covers_loss_and_parameters():
    ok = specs.FitResult(np.array([3.0, 2.0, 1.0, 0.5]), np.array([2.5, 0.75]),
                         {"w": np.array([1.0])}, None, 0.0)
    assert outcome.first_nonfinite_step(ok) is None
    ok.step_losses[2] = np.inf
    assert outcome.first_nonfinite_step(ok) == 2
    ok.step_losses[2] = 1.0
    ok.params["w"][0] = np.nan          # the last update did it: the loss never saw it
    assert outcome.first_nonfinite_step(ok) == 3


def _aligned(shape, dtype=np.float32):
    """An array on a 64-byte boundary: the buffers device_put may adopt without a copy."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + size].view(dtype).reshape(shape)


def test_jaxport_never_shares_a_callers_buffer():
    x = _aligned((100, 1))
    x[:, 0] = np.linspace(-1, 1, 100)
    on_device = device_array(x, "float32", "cpu")
    x[:] = 123.0                                       # the caller reuses its array
    assert np.array_equal(np.asarray(on_device)[:, 0], np.linspace(-1, 1, 100).astype(np.float32))
    # And through the public API: the caller's edit after a call changes nothing returned.
    params = {k: _aligned(v.shape) for k, v in registry.shared_init("linear_regression").items()}
    for k, v in registry.shared_init("linear_regression").items():
        params[k][...] = v
    x[:] = np.linspace(-1, 1, 100)[:, None]
    y = 2 * x.copy()
    loss, grads, new, _ = jax_training.train_step("linear_regression", params, {}, x, y,
                                                  registry.get("linear_regression").defaults)
    kept = {k: v.copy() for k, v in new.items()}
    for a in (x, *params.values()):
        a[...] = np.nan
    assert all(np.array_equal(new[k], kept[k]) for k in new) and np.isfinite(loss)
