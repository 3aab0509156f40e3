"""`python -m examples compare` is the ladder's verdict for one configuration: exit 0
when jaxport agrees with torch within torch's own rounding noise, 1 when it differs
(a bug that only one step shows is enough), 2 for bad input."""
import pytest

from parity_tests.engine.rungs import ladder
from examples.cli import main
from parity_tests.tests.test_parity_planted_bugs import adam_bias_correction_in_float32, lr_off


def compare(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compare_agrees_and_shows_the_table_horizon_and_verdict(capsys, dtype):
    code, out, _ = compare(capsys, "logistic_regression", "--dtype", dtype, "--epochs", 20)
    assert code == 0, out
    assert "VERDICT: agree" in out and "horizon: step" in out
    rows = [line for line in out.splitlines() if line[:3] in {f"| {n}" for n in range(2, 8)}]
    assert {line.split()[1] for line in rows} == {"2", "3", "4", "5", "6", "7"}
    assert all(line.endswith("| yes |") for line in rows)
    # the table of check_port's report (port_report.rows_table)
    assert "| rung | quantity | max abs | max rel | tolerance | used | ok |" in out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("plant", [lr_off, adam_bias_correction_in_float32])
def test_compare_exits_1_on_a_planted_bug(capsys, monkeypatch, dtype, plant):
    ladder.clear_jax_caches()
    try:
        plant(monkeypatch)
        code, out, _ = compare(capsys, "neural_network", "--dtype", dtype, "--epochs", 2, "--quiet")
    finally:
        monkeypatch.undo()
        ladder.clear_jax_caches()
    assert code == 1, out
    assert "VERDICT: differ - first at rung 4" in out


def test_compare_bad_input_is_exit_2(capsys, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    code, _, err = compare(capsys, "neural_network", "--init", tmp_path / "bad.npz")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
