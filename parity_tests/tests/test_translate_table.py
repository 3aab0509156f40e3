"""docs/translate.md is kept true: its table of functions is the translator's table
(ops.py) row for row, each row's example translates and computes what torch computes
(float64), its table of layers is leaves.py's, and the generated code it shows for the
MNIST network and the GPT is what translate writes today."""
import re
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: F401 (the examples use F)
from torch import nn

from jaxport.translate import translate
from jaxport.translate import ops
from jaxport.translate.leaves import CLASSES
from parity_tests.tests import zoo_gpt as zg
from parity_tests.tests import zoo_mnist as zm
from parity_tests.tests.test_translate import load_source

DOC = Path(__file__).resolve().parents[2] / "docs" / "translate.md"


def _cells(line):
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def function_rows():
    lines = DOC.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| torch | example"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(_cells(ln))
    return rows


def _code(cell):
    return cell.strip("`")


def test_the_function_table_is_the_translators_row_for_row():
    documented = [(", ".join(_code(n) for n in names.split("`, `")), _code(tmpl), layout)
                  for names, _, tmpl, layout in function_rows()]
    assert documented == [(op.name, op.template, op.layout) for op in ops.ALL]


def test_the_layer_table_is_the_translators():
    text = DOC.read_text()
    assert re.findall(r"^\| `nn\.(\w+)` \|$", text, re.M) == list(CLASSES)


@pytest.mark.parametrize("row", function_rows(), ids=lambda r: r[0])
def test_each_rows_example_translates_and_agrees_with_torch(row, tmp_path):
    example = _code(row[1])
    *statements, result = example.split("; ")
    body = "".join(f"        {s}\n" for s in statements) + f"        return {result}\n"
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(f"class Example(nn.Module):\n    def forward(self, x):\n{body}", namespace)   # noqa: S102
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    source = translate(namespace["Example"]().double(), (x,))
    with jax.enable_x64(True):
        got = np.asarray(load_source(source, tmp_path).make_model(dtype=np.float64)(np.asarray(x)))
    want = namespace["Example"]()(x).numpy()
    assert got.shape == want.shape and got.dtype.kind == want.dtype.kind, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6 if "float()" in example else 1e-12, atol=1e-12)


@pytest.mark.parametrize("marker, model, x, name", [
    ("mnist", zm.torch_net, torch.zeros(2, 1, 28, 28), "parity_tests.tests.zoo_mnist:torch_net"),
    ("gpt", zg.GPT, torch.zeros(2, 16, dtype=torch.long), "parity_tests.tests.zoo_gpt:GPT"),
])
def test_the_generated_code_shown_is_what_translate_writes(marker, model, x, name):
    text = DOC.read_text()
    shown = text.split(f"<!-- generated:{marker} -->\n```python\n", 1)[1].split("\n```", 1)[0]
    assert shown == translate(model(), x, source_name=name).rstrip()


def test_the_readme_links_the_page():
    assert "(docs/translate.md)" in (DOC.parents[1] / "README.md").read_text()
