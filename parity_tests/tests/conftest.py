"""The one place where the parity suite pins numerics and defines its grid.

Imported by pytest before any test module, so:
- x64 is left as users have it (off): jaxport scopes jax_enable_x64 to each call by
  its dtype argument (jaxport.numerics.dtype_scope), so the suite's float32 numbers
  are the command line's, bit for bit (test_x64_independence);
- float32 matmuls run at full precision on both sides (no TF32, deterministic cuDNN);
- XLA's GPU kernels are deterministic (no atomics in reductions), so that jaxport can be
  compared with itself bit for bit on a GPU as on a CPU;
- torch uses one CPU thread: the same reduction order on every run, and on this small
  shared 2-core machine two threads made the tiny models' eager steps ~10x slower;
- the versions and the device are recorded for the report (and printed in the header).

The grid: example (and the network's two forms) x dtype x device, written once here
(`pytest_generate_tests` parametrizes every test that takes `cell`). GPU cells run where
both torch and JAX see a GPU, and skip with the reason otherwise.
"""
from __future__ import annotations

import os
import platform
import sys
import time

# Read when JAX first initialises its backends, which is later than this.
if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
# Several pytest-xdist workers may share one GPU: none may take 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Four CPU devices for the data-parallel tests (test_data_parallel.py). Everything else
# runs on the first, the default device, and its numbers are bit for bit those of a
# one-device process (checked by test_data_parallel.py's subprocess test).
HOST_DEVICES = 4
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={HOST_DEVICES}"

import jaxport.numerics  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import torchref.numerics  # noqa: E402

jaxport.numerics.pin_numerics()
torchref.numerics.pin_numerics()
torch.set_num_threads(1)

from parity_tests.engine import parity  # noqa: E402
from portcore import registry, specs  # noqa: E402
from parity_tests.engine.sides.runs import Cell  # noqa: E402

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")


def _jax_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


def _gpu_skip_reason() -> str | None:
    missing = []
    if not torch.cuda.is_available():
        missing.append("torch.cuda.is_available() is False")
    if _jax_gpu() is None:
        missing.append(f"JAX sees no GPU (backends: {', '.join(sorted({d.platform for d in jax.devices()}))})")
    return ("GPU cell needs a GPU in both frameworks: " + "; ".join(missing)) if missing else None


GPU_SKIP = _gpu_skip_reason()


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    import flax
    import jaxlib
    import numpy
    import optax
    devices = {"cpu": f"{_cpu_name()}, {os.cpu_count()} cores (torch threads: {torch.get_num_threads()})"}
    if GPU_SKIP is None:
        devices["gpu"] = f"{torch.cuda.get_device_name(0)} (JAX: {_jax_gpu().device_kind})"
    return {"python": platform.python_version(), "torch": torch.__version__, "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "numpy": numpy.__version__, "devices": devices,
            "pinned": "jax_enable_x64 untouched (off; jaxport scopes it per call by dtype); "
                      "jax_default_matmul_precision=highest; "
                      "XLA_FLAGS --xla_gpu_deterministic_ops=true; torch TF32 off (matmul, cuDNN), "
                      "cudnn.deterministic, cudnn.benchmark off; torch.set_num_threads(1)"}


RECORD = pytest.StashKey[parity.Record]()
RECORDING = pytest.StashKey[object]()


def pytest_report_header(config):
    v = config.stash[RECORD].facts["versions"]
    return [f"parity: torch {v['torch']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, "
            f"optax {v['optax']}, numpy {v['numpy']}",
            "parity devices: " + "; ".join(f"{k}: {d}" for k, d in v["devices"].items())
            + ("" if GPU_SKIP is None else f"; gpu cells skip ({GPU_SKIP})")]


def pytest_configure(config):
    # The session's record of comparisons, which the report is written from: owned by
    # the pytest config, active for the whole session, and the `parity_record` fixture.
    record = parity.Record(for_report=True)
    record.facts.update(versions=_versions(), outcomes={}, skips={}, failures=[])
    config.stash[RECORD] = record
    config.stash[RECORDING] = parity.recording(record)
    config.stash[RECORDING].__enter__()
    config.addinivalue_line("markers", "parity_cells(examples=..., forms=..., dtypes=..., slow=...): "
                            "restrict the parity grid that parametrizes `cell`, or send examples to the second tier")
    config.addinivalue_line("markers", "slow: the second tier (`make test-all`): the long evidence, "
                            "free-run ensembles, DDP, faults, resume, the zoo; `make test` leaves it out")


def cells(examples=registry.LADDER, forms=None, dtypes=DTYPES, devices=DEVICES, slow=()):
    """The grid as pytest params: example x form x dtype x device; the examples in
    `slow` go to the second tier."""
    out = []
    for example in examples:
        for form in registry.forms(example):
            if forms is not None and form not in forms:
                continue
            for dtype in dtypes:
                for device in devices:
                    cell = Cell(example, form, dtype, device)
                    marks = [pytest.mark.skip(reason=GPU_SKIP)] if device == "gpu" and GPU_SKIP else []
                    marks += [pytest.mark.slow] if example in slow else []
                    out.append(pytest.param(cell, id=str(cell), marks=marks))
    return out


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("parity_cells")
        metafunc.parametrize("cell", cells(**(marker.kwargs if marker else {})))


def pytest_unconfigure(config):
    if RECORDING in config.stash:
        config.stash[RECORDING].__exit__(None, None, None)


@pytest.fixture(scope="session")
def parity_record(pytestconfig) -> parity.Record:
    return pytestconfig.stash[RECORD]


@pytest.fixture(autouse=True)
def _name_the_comparisons(request, parity_record):
    parity_record.test = request.node.name
    yield
    parity_record.test = ""
    # The suite runs what users run: a test (or the code it calls) that leaves x64
    # switched on would change every later test's float32 numbers.
    assert jax.config.jax_enable_x64 is False, f"{request.node.name} left jax_enable_x64 on"


def pytest_sessionstart(session):
    session.config.stash[RECORD].facts["start"] = time.perf_counter()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" or report.outcome != "passed":
        facts = item.config.stash[RECORD].facts
        facts["outcomes"][report.outcome] = facts["outcomes"].get(report.outcome, 0) + 1
        if report.skipped:
            reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
            facts["skips"][reason] = facts["skips"].get(reason, 0) + 1
        elif report.failed:
            facts["failures"].append(report.nodeid)
    return report


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("JAXPORT_REPORT")
    if not target:
        return
    from parity_tests.engine.reports import report
    record = session.config.stash[RECORD]
    record.facts["seconds"] = time.perf_counter() - record.facts.get("start", time.perf_counter())
    path = report.write(target, gpu=GPU_SKIP is None, record=record)
    print(f"\nparity report written to {path}", file=sys.stderr)
