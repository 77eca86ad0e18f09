"""[grid].replicates: a grid that repeats another's runs by other code paths, paired run by run."""

from __future__ import annotations

import pandas as pd
import pytest

from ablations.config import ConfigError, load_config
from ablations.report import replication_table


def _runs(losses):
    return pd.DataFrame([{"attention": "none", "variant": v, "lr": 1e-3, "seed": s, "task": "",
                          "loss": x} for (v, s), x in losses.items()])


def test_each_run_is_paired_with_its_twin_and_the_contrasts_sit_side_by_side():
    here = _runs({("adamw", 0): 1.0, ("adamw", 1): 2.0, ("sin", 0): 1.5, ("sin", 1): 2.1,
                  ("sin", 2): 9.0})  # seed 2 has no twin: not paired
    twin = _runs({("adamw", 0): 1.1, ("adamw", 1): 2.0, ("sin", 0): 1.2, ("sin", 1): 2.4,
                  ("cos", 0): 5.0})  # a variant this grid did not run: no row
    t = replication_table(here, twin, ["loss", "absent"], "adamw").set_index("variant")
    assert list(t.index) == ["adamw", "sin"] and set(t["metric"]) == {"loss"}
    assert t.loc["adamw", "pairs"] == 2 and t.loc["sin", "pairs"] == 2
    assert t.loc["adamw", "mean_diff"] == pytest.approx(-0.05)
    assert t.loc["adamw", "max_abs_diff"] == pytest.approx(0.1)
    assert t.loc["adamw", "max_rel_diff"] == pytest.approx(0.1 / 1.1)
    assert t.loc["sin", "max_abs_diff"] == pytest.approx(0.3)
    assert t.loc["sin", "contrast"] == pytest.approx((0.5 + 0.1) / 2)       # this grid
    assert t.loc["sin", "contrast_twin"] == pytest.approx((0.1 + 0.4) / 2)  # the twin's
    assert pd.isna(t.loc["adamw", "contrast"])


def test_replicates_must_name_a_config_next_to_it(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[grid]\narm = "classifier"\nreplicates = "nope.toml"\n\n'
                    '[[cells]]\nvariants = ["adamw"]\n')
    with pytest.raises(ConfigError, match=r"grid\.toml: \[grid\]\.replicates must name a "
                                          r"config file next to it, got 'nope\.toml'"):
        load_config(path)
    (tmp_path / "nope.toml").write_text(path.read_text().replace('replicates = "nope.toml"\n',
                                                                 ""))
    assert load_config(path).replicates == tmp_path / "nope.toml"


def test_a_twin_grid_that_does_not_load_is_named_in_the_report(tmp_path):
    from types import SimpleNamespace

    from ablations.report import _replication_section

    twin = tmp_path / "twin.toml"
    twin.write_text("[grid]\narm = 'classifier'\n")  # no cells: does not load
    ctx = SimpleNamespace(cfg=SimpleNamespace(replicates=twin, results=tmp_path))
    text = "".join(_replication_section(ctx))
    assert "twin.toml" in text and "does not load" in text and "[[cells]]" in text
