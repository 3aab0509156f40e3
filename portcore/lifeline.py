"""Child processes die with their parent, however the parent dies (SIGKILL, the OOM
killer, a closed terminal): nothing in the parent runs then, so its `finally` cannot
end them. Used by torchref/parallel.py's DDP ranks (run_child); stdlib only.

Linux: prctl(PR_SET_PDEATHSIG, SIGKILL) makes the kernel kill the child when its
parent exits. Elsewhere, and as a second line everywhere, a child compares
os.getppid() with the parent it was started by: a reparented child's parent is no
longer that pid. The parent's pid is passed in, not read in the child, since the
parent may already be dead (and the child reparented) before prctl takes effect.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 0.5            # how often the watchdog (non-Linux) looks at the parent


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a child started by `parent_pid`."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):       # no prctl: the watchdog below only
            _watch(parent_pid)
    else:
        # No parent-death signal: a thread also covers a rank blocked in a collective.
        _watch(parent_pid)
    exit_if_orphaned(parent_pid)                # the parent died before prctl


def run_child(parent_pid: int, module: str, function: str, payload: bytes, *extra) -> None:
    """A spawned child's target: die_with_parent first, then module.function(*args,
    *extra) with args = pickle.loads(payload). The target is this light module and its
    arguments bytes, so that spawn's unpickling imports nothing heavy before the prctl:
    importing torch takes seconds on a loaded machine, and a parent killed then would
    leave the child running until it got there."""
    die_with_parent(parent_pid)
    getattr(importlib.import_module(module), function)(*pickle.loads(payload), *extra)


def exit_if_orphaned(parent_pid: int) -> None:
    """The parent check for a child's loop: end at once (no cleanup to wait for: the
    parent that would read the result is gone)."""
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch(parent_pid: int) -> None:
    def loop():
        while True:
            exit_if_orphaned(parent_pid)
            time.sleep(POLL_S)
    threading.Thread(target=loop, name="lifeline", daemon=True).start()
