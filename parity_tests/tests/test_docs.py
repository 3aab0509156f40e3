"""The docs stay true: both editions of the guide (docs/guide.md, docs/guide.zh.md) match
the code they quote, every test they cite exists, the two carry the same sections, code
and table of differences, and the pictures and links they show are there."""
import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
GUIDE_ZH = ROOT / "docs" / "guide.zh.md"
GUIDES = [GUIDE, GUIDE_ZH]
README = ROOT / "README.md"
# The hand-written pages the README links to (usage, parity, speed, data parallel,
# check your own port, design) and the report: what moved out of the README is
# checked where it now lives.
PAGES = sorted(p for p in (ROOT / "docs").glob("*.md") if "template" not in p.name and p not in (GUIDE, GUIDE_ZH))
# The heading above the differences table, per edition.
TABLE_HEADING = {GUIDE: "## The differences at a glance", GUIDE_ZH: "## 差异一览"}
TUTORIAL = "站在PyTorch的肩膀上去探索深度学习世界"
TUTORIAL_URL = "https://weikunhan.github.io/blogs/technologies_learning/standing_on_the_shoulders_of_pytorch_to_study_deep_learning/"
# What a porter needs most, each as a word that must appear in a cited test's name.
TOPICS = ["dropout", "batchnorm", "conv2d", "lstm", "gru", "schedule", "donated", "vmap", "checkpoint"]
CITATION = re.compile(r"`(parity_tests/tests/test_\w+\.py)::([\w:]+)`")
MAX_IMAGE_BYTES = 500_000
# Written by `make report`, not by `make docs`: a link to them may come before them.
REPORT_OUTPUTS = re.compile(r"(^|/)(parity-[\w-]+\.(md|png))$")


def load_build():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guide_is_up_to_date():
    stale = load_build().stale()
    assert not stale, (f"{', '.join(p.name for p in stale)} stale against the source or the "
                       "templates: run `make docs`")


def test_build_covers_both_editions():
    build = load_build()
    assert set(build.EDITIONS) == {"en", "zh"}
    assert {guide for _, guide in build.EDITIONS.values()} == set(GUIDES)


def test_extract_cuts_definitions_by_name_with_their_comments():
    build = load_build()
    text = build.extract("jaxport/losses.py", ["LOG_CLAMP", "_bce_terms"])
    assert text.startswith("# torch.nn.BCELoss clamps") and "LOG_CLAMP = -100.0" in text
    assert "@jax.custom_vjp\ndef _bce_terms(p, y):" in text and "def _bce_fwd" not in text
    nested = build.extract("jaxport/programs.py", ["train_program.run.step"])
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


def differences_table(doc: Path) -> list[list[str]]:
    """The rows of a guide's differences table, as lists of cells."""
    text = doc.read_text().split(TABLE_HEADING[doc] + "\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]   # after header and ---
    return [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in rows]


def cited(cell: str) -> list[tuple[str, str]]:
    return [m.groups() for m in CITATION.finditer(cell)]


@pytest.mark.parametrize("doc", GUIDES, ids=lambda p: p.name)
def test_every_table_row_cites_a_test(doc):
    rows = differences_table(doc)
    assert len(rows) >= 30, f"{doc.name}: {len(rows)} differences"
    for cells in rows:
        assert len(cells) == 4, cells
        tests = cited(cells[3])
        assert tests and all(name.split("::")[-1].startswith("test_") for _, name in tests), \
            f"no test cited for: {cells[0]}"


def test_both_editions_have_the_same_rows_sections_and_code():
    en, zh = (differences_table(doc) for doc in GUIDES)
    assert [cited(r[3]) for r in en] == [cited(r[3]) for r in zh]      # same tests, same order
    headings = {doc: re.findall(r"^(#{2,3}) ", doc.read_text(), re.M) for doc in GUIDES}
    assert headings[GUIDE] == headings[GUIDE_ZH] and headings[GUIDE].count("##") >= 15
    # The same code, cut from the same places, in the same order.
    blocks = {doc: re.findall(r"\[`([\w./-]+)`\]\(\.\./[\w./-]+\)( · [^\n]*)?", doc.read_text()) for doc in GUIDES}
    assert blocks[GUIDE] == blocks[GUIDE_ZH] and len(blocks[GUIDE]) >= 40


@pytest.mark.parametrize("doc", GUIDES, ids=lambda p: p.name)
def test_guide_names_the_tutorial_and_covers_what_porters_meet(doc):
    text = doc.read_text()
    assert TUTORIAL in text and TUTORIAL_URL in text and "Weikun Han" in text
    names = " ".join(name.lower() for row in differences_table(doc) for _, name in cited(row[3]))
    missing = [topic for topic in TOPICS if topic not in names]
    assert not missing, f"{doc.name}: no tested difference about {missing}"


def test_every_cited_test_exists():
    citations = {m.groups() for doc in (*GUIDES, README, *PAGES) if doc.is_file()
                 for m in CITATION.finditer(doc.read_text())}
    assert len(citations) >= 50
    missing = []
    for file, name in sorted(citations):
        path = ROOT / file
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"cited but not defined: {', '.join(missing)}"


def local_links(doc: Path) -> list[tuple[str, Path]]:
    """(target, resolved path) of every relative link and image in a Markdown file."""
    out = []
    prose = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)    # code (`h[0](add)`) is no link
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        target = target.split("#", 1)[0]
        if target and "://" not in target and not target.startswith("mailto:"):
            out.append((target, (doc.parent / target).resolve()))
    return out


@pytest.mark.parametrize("doc", [*GUIDES, README, *PAGES], ids=lambda p: p.name)
def test_links_and_images_resolve_and_images_are_small(doc):
    if not doc.is_file():
        pytest.skip(f"{doc.name} not written yet")
    broken = [t for t, path in local_links(doc) if not path.exists() and not REPORT_OUTPUTS.search(t)]
    assert not broken, f"{doc.name} links to missing files: {', '.join(broken)}"
    images = [path for t, path in local_links(doc) if path.suffix in (".gif", ".png") and path.exists()]
    for path in images:
        assert path.stat().st_size <= MAX_IMAGE_BYTES, f"{path.name}: {path.stat().st_size} bytes"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_short_and_every_section_link_lands_on_a_heading():
    """The README is read in five minutes (about 250 lines); the sections moved out of
    it are reached by links whose anchors exist in their new pages."""
    assert len(README.read_text().splitlines()) <= 270
    bad = []
    for doc in (README, *PAGES):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if "#" not in target or "://" in target:
                continue
            file, _, name = target.partition("#")
            page = (doc.parent / file).resolve() if file else doc
            if page.suffix == ".md" and page.is_file():
                headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
                if name not in headings:
                    bad.append(f"{doc.name}: {target}")
    assert not bad, f"links to missing headings: {', '.join(bad)}"
