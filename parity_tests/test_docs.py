"""The docs stay true: docs/guide.md matches the code it quotes, every test it cites
exists, and the pictures and links it shows are there."""
import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
README = ROOT / "README.md"
CITATION = re.compile(r"`(parity_tests/test_\w+\.py)::([\w:]+)`")
MAX_IMAGE_BYTES = 500_000
# Written by `make report`, not by `make docs`: a link to them may come before them.
REPORT_OUTPUTS = re.compile(r"(^|/)(parity-[\w-]+\.(md|png))$")


def load_build():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guide_is_up_to_date():
    assert load_build().is_up_to_date(), \
        "docs/guide.md is stale against the source or the template: run `make docs`"


def test_extract_cuts_definitions_by_name_with_their_comments():
    build = load_build()
    text = build.extract("jaxport/losses.py", ["LOG_CLAMP", "_bce_terms"])
    assert text.startswith("# torch.nn.BCELoss clamps") and "LOG_CLAMP = -100.0" in text
    assert "@jax.custom_vjp\ndef _bce_terms(p, y):" in text and "def _bce_fwd" not in text
    nested = build.extract("jaxport/training.py", ["_train_program.run.step"])
    assert nested.startswith("def step(carry, batch):")            # dedented
    with pytest.raises(build.BuildError, match="defines no no_such_name"):
        build.extract("jaxport/losses.py", ["no_such_name"])


def defined_tests(path: Path) -> set[str]:
    """Test names in a file: functions, and Class::method (parametrized ones count once)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{m.name}" for m in node.body
                         if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def differences_table() -> list[str]:
    text = GUIDE.read_text().split("## The differences at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return rows[2:]                                                 # after header and ---


def test_every_table_row_cites_a_test():
    rows = differences_table()
    assert len(rows) >= 15
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 4, row
        assert CITATION.search(cells[3]), f"no test cited for: {cells[0]}"


def test_every_cited_test_exists():
    citations = {m.groups() for doc in (GUIDE, README) if doc.is_file()
                 for m in CITATION.finditer(doc.read_text())}
    assert len(citations) >= 20
    missing = []
    for file, name in sorted(citations):
        path = ROOT / file
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"cited but not defined: {', '.join(missing)}"


def local_links(doc: Path) -> list[tuple[str, Path]]:
    """(target, resolved path) of every relative link and image in a Markdown file."""
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        target = target.split("#", 1)[0]
        if target and "://" not in target and not target.startswith("mailto:"):
            out.append((target, (doc.parent / target).resolve()))
    return out


@pytest.mark.parametrize("doc", [GUIDE, README], ids=lambda p: p.name)
def test_links_and_images_resolve_and_images_are_small(doc):
    if not doc.is_file():
        pytest.skip(f"{doc.name} not written yet")
    broken = [t for t, path in local_links(doc) if not path.exists() and not REPORT_OUTPUTS.search(t)]
    assert not broken, f"{doc.name} links to missing files: {', '.join(broken)}"
    images = [path for t, path in local_links(doc) if path.suffix in (".gif", ".png") and path.exists()]
    for path in images:
        assert path.stat().st_size <= MAX_IMAGE_BYTES, f"{path.name}: {path.stat().st_size} bytes"
