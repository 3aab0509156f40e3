"""The house's layers (docs/design.md, "Layers of the house"), read from the source:
the neutral core imports no framework and nothing above it, each backend only its own
framework, no import cycles between modules (lazy imports inside functions count), no
use of another module's private names, and no module over MAX_LINES lines."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("portcore", "jaxport", "torchref", "examples", "parity_tests")
# What each package may import, besides the standard library, numpy and itself.
ALLOWED = {
    "portcore": {"safetensors"},            # the weights file format, not a framework
    "jaxport": {"portcore", "jax", "flax", "optax", "tqdm"},
    "torchref": {"portcore", "torch", "tqdm"},
}
# jaxport.translate reads torch models and checks what it writes with the harness: the one
# bridge from jaxport to torch. The code it writes (and torchops, which that code calls)
# imports what jaxport may.
BRIDGES = {"jaxport.translate": {"torch", "parity_tests"}}
BRIDGE_RUNTIME = {"jaxport.translate.torchops"}
FRAMEWORKS = {"jax", "jaxlib", "flax", "optax", "torch", "matplotlib", "scipy", "PIL", "safetensors", "tqdm"}
MAX_LINES = 300


def modules() -> dict[str, Path]:
    """Every module of the packages and their subpackages (parity_tests.engine), by its
    dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = modules()
            for a in node.names:   # `from pkg import module` imports the module
                full = f"{node.module}.{a.name}"
                out.append((full, []) if full in mods else (node.module, [a.name]))
    return out


def test_one_import_style_package_qualified():
    """No relative imports and no bare imports of the suite's own modules: one module
    is one object (a bare `import parity` beside `parity_tests.engine.parity` would
    give two records)."""
    bare = {name.rsplit(".", 1)[-1] for name in modules() if name.startswith("parity_tests.")}
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{name}: relative import from {'.' * node.level}{node.module or ''}")
            elif isinstance(node, ast.Import):
                bad += [f"{name}: import {a.name}" for a in node.names if a.name in bare]
            elif isinstance(node, ast.ImportFrom) and node.module in bare:
                bad.append(f"{name}: from {node.module} import ...")
    assert not bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_only_what_they_may(package):
    bad = []
    for name, path in modules().items():
        if name.split(".")[0] != package:
            continue
        for module, _ in imports(path):
            top = module.split(".")[0]
            bridge = next((set(v) for k, v in BRIDGES.items() if name.startswith(k) and name not in BRIDGE_RUNTIME),
                          set())
            if top in PACKAGES + tuple(FRAMEWORKS) and top != package and top not in ALLOWED[package] | bridge:
                bad.append(f"{name} imports {module}")
    assert not bad


def test_no_import_cycles():
    mods = modules()
    graph = {name: {m for m, _ in imports(path) if m in mods and m != name} for name, path in mods.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for node in graph:
        if node not in state:
            visit(node, [node])
    # A package's __init__ importing its own submodules lazily (example_module) is not a cycle.
    cycles = [c for c in cycles if not any(m in PACKAGES for m in c)]
    assert not cycles


def test_no_module_uses_another_modules_private_names():
    mods, bad = modules(), []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name): a.name for a in node.names if a.name in mods})
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in mods:
                        aliases[a.asname or a.name] = full
                    elif node.module in mods and a.name.startswith("_"):
                        bad.append(f"{name}: from {node.module} import {a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != name
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert not bad


def test_no_module_is_over_the_size_limit():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long
