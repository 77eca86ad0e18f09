"""The compile-time bench (ablations.bench_compile): its figures on a tiny model and its
one-line errors."""

from __future__ import annotations

import csv

import pytest

from ablations import bench_compile


@pytest.mark.parametrize("args, message", [
    (["--lengths", "12,x"], "--lengths must be comma-separated integers, got '12,x'"),
    (["--scopes", "model,block"], "--scopes takes model and/or layer, got 'model,block'"),
    (["--lengths", "1"], "--lengths must hold lengths >= 2"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
])
def test_bad_options_fail_before_any_work(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        bench_compile.main([*args, "--out", str(tmp_path)])
    assert err.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_layer_scope_on_a_tiny_model(tmp_path):
    # (the model scope takes the same code path with the other compiled function; one scope
    # keeps this test to one child process's compilation)
    assert bench_compile.main(["--preset", "tiny", "--lengths", "16", "--steps", "1",
                               "--scopes", "layer",
                               "--out", str(tmp_path)]) == 0
    with open(tmp_path / "compile_scope.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["scope"], r["length"]) for r in rows] == [("layer", "16")]
    # one graph, shared by both layers of the model
    assert [int(r["graphs"]) for r in rows] == [1]
    for r in rows:
        assert float(r["compile_s"]) > 0 and float(r["step_ms"]) > 0
        # compiled against eager, to float32 rounding
        assert float(r["grad_max_abs_diff"]) <= 1e-5 * max(1.0, float(r["grad_max_abs"]))
    md = (tmp_path / "compile_scope.md").read_text()
    assert "Total compile time over the lengths: layer " in md and "- commit: " in md
