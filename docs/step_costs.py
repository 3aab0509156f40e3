"""Measure what one training step costs, five ways, on the tutorial's neural_network.

    python docs/step_costs.py            # about 30 s; writes docs/step_costs.json

The guide's section on nnx.Optimizer quotes docs/step_costs.json (docs/build.py renders
it as a table; it does not rerun this, so the guide stays reproducible byte for byte).
Rerun it by hand on a machine you want numbers for, then `python docs/build.py`.

The run: 1 -> 200 -> 100 -> 1 ReLU MLP, MSE, Adam lr 0.01, 1000 full-batch steps on the
tutorial's 100 points, float32, CPU. Each way: one warm-up run (compiles), then the
median of REPEATS timed runs of 1000 steps, each ended by waiting for the result
(block_until_ready / .item()), so asynchronous dispatch cannot hide work. torch runs
on one thread, as the project's benchmark does on this shared 2-core machine.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "step_costs.json"
STEPS, REPEATS, LR = 1000, 3, 0.01


def data():
    x = np.linspace(-10, 10, 100, dtype=np.float32)[:, None]                  # (100, 1)
    y = np.sin(x) + 0.5 * np.random.default_rng(0).random(x.shape, np.float32)
    return x, y.astype(np.float32)


def timed(run) -> float:
    run()                                                                     # warm-up: compiles
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_eager(x, y):
    import torch
    torch.set_num_threads(1)
    x, y = torch.as_tensor(x), torch.as_tensor(y)

    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1, 200), torch.nn.ReLU(), torch.nn.Linear(200, 100),
                                    torch.nn.ReLU(), torch.nn.Linear(100, 1))
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        for _ in range(STEPS):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss.item()
    return run


def jax_ways(x, y):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    x, y = jnp.asarray(x), jnp.asarray(y)

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden_1, self.hidden_2 = nnx.Linear(1, 200, rngs=rngs), nnx.Linear(200, 100, rngs=rngs)
            self.output = nnx.Linear(100, 1, rngs=rngs)

        def __call__(self, x):
            return self.output(nnx.relu(self.hidden_2(nnx.relu(self.hidden_1(x)))))

    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    def fresh():
        model = MLP(nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    def stateful(step_factory):
        def run():
            model, optimizer = fresh()
            step = step_factory(model, optimizer)
            for _ in range(STEPS):
                loss = step()
            loss.block_until_ready()
        return run

    graph_step = nnx.jit(train_step)
    tree_step = nnx.jit(train_step, graph=False)
    ways = {
        "nnx_jit": stateful(lambda m, o: lambda: graph_step(m, o)),
        "nnx_cached_partial": stateful(lambda m, o: nnx.cached_partial(graph_step, m, o)),
        "nnx_jit_graph_false": stateful(lambda m, o: lambda: tree_step(m, o)),
    }

    tx = optax.adam(LR)
    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))

    def pure_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jit_step = jax.jit(pure_step, donate_argnums=(0, 1))        # reuse the old buffers

    def functional():
        p, s = jax.tree.map(jnp.copy, params), tx.init(params)
        for _ in range(STEPS):
            p, s, loss = jit_step(p, s)
        loss.block_until_ready()

    @jax.jit
    def whole_run(params):
        def body(carry, _):
            p, s, _ = pure_step(*carry)
            return (p, s), None
        (p, s), _ = jax.lax.scan(body, (params, tx.init(params)), length=STEPS)
        return p

    ways["jax_jit_functional"] = functional
    ways["lax_scan_whole_run"] = lambda: jax.block_until_ready(whole_run(params))
    return ways


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def main() -> int:
    import flax
    import jax
    import optax
    import torch
    x, y = data()
    results = {"torch_eager": timed(torch_eager(x, y))}
    for name, run in jax_ways(x, y).items():
        results[name] = timed(run)
        print(f"{name}: {results[name]:.3f} s", file=sys.stderr)
    OUT.write_text(json.dumps({
        "steps": STEPS, "repeats": REPEATS, "machine": machine(),
        "load_average": round(os.getloadavg()[0], 2),
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "flax": flax.__version__,
                     "optax": optax.__version__},
        "seconds": {k: round(v, 4) for k, v in results.items()},
    }, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
