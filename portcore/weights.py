"""The exchange format: a flat mapping of PyTorch state_dict names to numpy arrays in
PyTorch layout, stored as .npz (read without pickle) or .safetensors."""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SUFFIXES = (".npz", ".safetensors")


class WeightsError(ValueError):
    """A weights file or mapping that does not fit the model."""


def check_params(params: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """Raise WeightsError naming every missing, extra or mis-shaped parameter."""
    problems = []
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    for name, shape in expected.items():
        if name in params and tuple(np.shape(params[name])) != tuple(shape):
            problems.append(f"{name} has shape {tuple(np.shape(params[name]))}, "
                            f"expected {tuple(shape)}")
    for name, value in params.items():
        if name in expected and not np.issubdtype(np.asarray(value).dtype, np.floating):
            problems.append(f"{name} has dtype {np.asarray(value).dtype}, expected floating point")
    if problems:
        raise WeightsError("parameters do not fit the model: " + "; ".join(problems))


def load(path: str | os.PathLike, expected: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Read a weights file; with `expected`, also check names and shapes."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format (use .npz or .safetensors)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                params = {k: f[k] for k in f.files}
        else:
            from safetensors.numpy import load_file
            params = load_file(str(path))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise WeightsError(f"{path}: not a readable {path.suffix} weights file ({e})") from None
    except Exception as e:  # safetensors raises its own SafetensorError
        if type(e).__name__ != "SafetensorError":
            raise
        raise WeightsError(f"{path}: not a readable .safetensors file ({e})") from None
    if expected is not None:
        check_params(params, expected)
        check_finite(params, path)
    return params


def check_finite(params: dict, source) -> None:
    """Initial weights with inf or NaN would train to NaN: name each such parameter."""
    bad = []
    for name, value in params.items():
        value = np.asarray(value)
        if not np.all(np.isfinite(value)):
            counts = [f"{int(k(value).sum())} {label}" for k, label in
                      ((np.isnan, "NaN"), (np.isposinf, "+inf"), (np.isneginf, "-inf")) if k(value).any()]
            bad.append(f"{name} ({', '.join(counts)})")
    if bad:
        raise WeightsError(f"{source}: non-finite initial weights: {'; '.join(bad)}")


def check_writable(path: str | os.PathLike) -> None:
    """Raise OSError unless a file can be written at `path`, by the same means as
    atomic_write: a temporary file in its directory, then a rename over `path`."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no such directory {path.parent}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)


def save(path: str | os.PathLike, params: dict) -> None:
    """Write atomically: a failed write never leaves a partial file behind."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format (use .npz or .safetensors)")
    arrays = {k: np.ascontiguousarray(v) for k, v in params.items()}

    def write(tmp):
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            from safetensors.numpy import save_file
            save_file(arrays, tmp)
    atomic_write(path, write)


def temp_prefix(path: Path, pid: int | None = None) -> str:
    """A writer's temporary files: hidden, beside the target, named after it and the
    writer's pid (`.fit.npz.tmp-1234-...`), so that a reader globbing the target's
    name never sees one, and a stale one (its writer killed) can be told by its pid."""
    return f".{path.name}.tmp-{os.getpid() if pid is None else pid}-"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, flush it to the disk,
    then rename it over `path`: under a crash or SIGKILL at any moment a reader finds
    the old file or the new one, never part of one. Every output file goes through
    here (--save, --history, --gif, --plot, --checkpoint, data --out, bench --json)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    remove_stale_temps(path)
    # The target's suffix kept: savefig and Pillow pick the format from it.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(path), suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes 0600; outputs are ordinary files
    try:
        write(tmp)
        _fsync(tmp, os.O_RDONLY)            # the data on the disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        _fsync(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))   # the rename itself
    except OSError:                         # some file systems cannot sync a directory
        pass


def _fsync(path, flags) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of `path` left by writers that were killed (SIGKILL
    skips every cleanup): those whose pid no longer runs. A live writer's are kept."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.tmp-*-*"):
        try:
            pid = int(tmp.name[len(f".{path.name}.tmp-"):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            try:
                tmp.unlink()
            except OSError:
                pass


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                         # another user's process: alive
        return True
    return True
