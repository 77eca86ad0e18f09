"""Configs, the runner's resume/kill safety, determinism, and the smoke path end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from ablations.arms.classifier import TIMING_METRICS
from ablations.config import ConfigError, RunSpec, load_config
from ablations.records import is_dirty
from ablations.runner import append_record, load_records, run_grid, run_one

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "ablations" / "configs" / "smoke.toml"

TINY = """
[grid]
arm = "classifier"
results = "{results}"

[classifier]
seq_len = 10
n_train = 100
n_test = 60
epochs = 2
batch_size = 50
d_model = 16
d_ff = 16
{extra}

[[cells]]
attention = {attention}
variants = {variants}
seeds = {seeds}
"""


def _write(tmp_path, extra="", attention='"classical"', variants='["adamw", "sin-l0.5"]',
           seeds=2, name="grid.toml"):
    path = tmp_path / name
    path.write_text(TINY.format(results=tmp_path / "res", extra=extra, attention=attention,
                                variants=variants, seeds=seeds))
    return path


class SerialExecutor:
    """A drop-in Executor that runs in this process (any concurrent.futures.Executor works)."""

    def __init__(self):
        import concurrent.futures as cf

        self._cf = cf

    def submit(self, fn, *args):
        fut = self._cf.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as err:  # pragma: no cover
            fut.set_exception(err)
        return fut

    def shutdown(self, **_):
        pass


def test_config_expands_cells_with_shared_seeds(tmp_path):
    cfg = load_config(_write(tmp_path, attention='["classical", "quantum"]', seeds=3))
    assert len(cfg.specs) == 2 * 2 * 3
    assert {s.seed for s in cfg.specs} == {0, 1, 2}
    assert len({s.key for s in cfg.specs}) == len(cfg.specs)


def test_malformed_toml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[grid]\narm = "classifier"\nname = \n')
    with pytest.raises(ConfigError, match=r"bad\.toml: malformed TOML: .*line 3"):
        load_config(path)


def test_unknown_variant_lists_valid_ids(tmp_path):
    with pytest.raises(ConfigError, match=r"grid\.toml: cells\[0\]: unknown variant 'sine-l0.5'; "
                                          r"valid ids: adamw, anneal"):
        load_config(_write(tmp_path, variants='["sine-l0.5"]'))


def test_unknown_option_key_is_a_typo(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[classifier\]: epoch "):
        load_config(_write(tmp_path, extra="epoch = 3"))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: nowhere.toml"):
        load_config("nowhere.toml")


def test_changed_option_changes_the_key():
    a = RunSpec("classifier", "adamw", "classical", 0, 1e-3, (("epochs", 2),))
    b = RunSpec("classifier", "adamw", "classical", 0, 1e-3, (("epochs", 3),))
    assert a.key != b.key and a.run_id != b.run_id


def test_numerics_version_is_part_of_the_key(tmp_path, monkeypatch):
    # a code change that alters metrics bumps the arm's NUMERICS: stored runs become stale
    from ablations.arms.classifier import Classifier as arm

    old = RunSpec("classifier", "adamw", "classical", 0, 1e-3, (("epochs", 2),))
    assert "numerics" not in old.as_dict()  # version 0 keeps the keys of arms without one
    path = _write(tmp_path, variants='["adamw"]', seeds=1)
    first = load_config(path).specs[0]
    assert first.numerics == arm.numerics >= 1 and first.as_dict()["numerics"] == arm.numerics
    monkeypatch.setattr(arm, "numerics", arm.numerics + 1)
    bumped = load_config(path).specs[0]
    assert bumped.key != first.key and bumped.as_dict()["config"] == first.as_dict()["config"]


def test_same_spec_same_metrics_bit_for_bit(tmp_path):
    cfg = load_config(_write(tmp_path, variants='["gauss-l0.5"]', seeds=1))
    r1, r2 = run_one(cfg.specs[0]), run_one(cfg.specs[0])
    timing = set(TIMING_METRICS)
    m1 = {k: v for k, v in r1["metrics"].items() if k not in timing}
    m2 = {k: v for k, v in r2["metrics"].items() if k not in timing}
    assert json.dumps(m1) == json.dumps(m2)
    assert [c["test_acc"] for c in r1["curve"]] == [c["test_acc"] for c in r2["curve"]]
    assert set(r1["provenance"]) >= {"commit", "utc", "python", "torch", "device",
                                     "wall_seconds"}


def test_a_cpu_run_names_the_cpu_on_a_host_with_a_gpu(tmp_path, monkeypatch):
    # the classifier trains on the CPU: a GPU on the host is not its device
    import torch

    cfg = load_config(_write(tmp_path, variants='["adamw"]', seeds=1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    device = run_one(cfg.specs[0])["provenance"]["device"]
    assert device.startswith("cpu (") and device.endswith(" threads)"), device


def test_rerun_skips_finished_runs_and_ignores_torn_lines(tmp_path):
    cfg = load_config(_write(tmp_path))
    counts = run_grid(cfg, SerialExecutor(), progress=False, limit=3)
    assert counts["ran"] == 3
    runs = cfg.results / "runs.jsonl"
    with open(runs, "a") as fh:
        fh.write('{"key": "torn-in-the-middle", "metr')  # a run killed mid-write
    with pytest.warns(RuntimeWarning, match="torn record"):
        counts = run_grid(cfg, SerialExecutor(), progress=False)
    assert counts["ran"] == 1 and counts["done_before"] == 3
    with pytest.warns(RuntimeWarning):
        keys = [r["key"] for r in load_records(runs)]
    assert sorted(keys) == sorted(s.key for s in cfg.specs)


def test_a_dirty_record_is_rerun_and_its_clean_rerun_supersedes_it(tmp_path):
    """A record from a tree with uncommitted changes is not done: the next sweep reruns it,
    the clean record wins, and that expected repeat of its key is not warned about (any
    other repeat is)."""
    cfg = load_config(_write(tmp_path))
    run_grid(cfg, SerialExecutor(), progress=False, limit=2)
    runs = cfg.results / "runs.jsonl"
    lines = runs.read_text().splitlines()
    first = json.loads(lines[0])

    def load_records_of(rec):  # as the loader decodes it (strict-JSON NaN strings)
        path = tmp_path / "one.jsonl"
        path.write_text(json.dumps(rec) + "\n")
        return load_records(path)[0]["metrics"]

    flagged = [
        dict(first, provenance={**first["provenance"], "dirty": True}),
        dict(
            json.loads(lines[1]),
            provenance={
                **json.loads(lines[1])["provenance"],
                "commit": json.loads(lines[1])["provenance"]["commit"] + "-dirty",
            },
        ),
    ]
    runs.write_text("".join(json.dumps(r) + "\n" for r in flagged))
    counts = run_grid(cfg, SerialExecutor(), progress=False)
    assert counts["done_before"] == 0 and counts["ran"] == len(cfg.specs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dirty-then-clean repeats are expected
        recs = {r["key"]: r for r in load_records(runs)}
    assert set(recs) == {s.key for s in cfg.specs}
    assert not any(is_dirty(r) for r in recs.values())

    def untimed(metrics):
        return {k: v for k, v in metrics.items() if k not in TIMING_METRICS}

    rerun = recs[first["key"]]["metrics"]  # same code, same numbers
    assert json.dumps(untimed(rerun), sort_keys=True, default=str) == json.dumps(
        untimed(load_records_of(first)), sort_keys=True, default=str
    )
    append_record(runs, flagged[0])  # a dirty record after a clean one: warned, and it wins
    with pytest.warns(RuntimeWarning, match=rf"key {first['key']} is stored on line \d+ too"):
        assert is_dirty({r["key"]: r for r in load_records(runs)}[first["key"]])


def test_an_interrupted_sweep_counts_no_dirty_record_as_stored(tmp_path):
    """Interrupted before any run ends: the runs it says are stored are the clean ones, and
    none of them ran this time (a dirty record is not done, before or after)."""
    from ablations.runner import SweepInterrupted

    cfg = load_config(_write(tmp_path))
    run_grid(cfg, SerialExecutor(), progress=False, limit=2)
    runs = cfg.results / "runs.jsonl"
    first, second = (json.loads(x) for x in runs.read_text().splitlines())
    first["provenance"]["dirty"] = True
    runs.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")

    def interrupt(spec):
        raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as caught:
        run_grid(cfg, SerialExecutor(), progress=False, run_fn=interrupt)
    assert (caught.value.counts["stored"], caught.value.counts["ran"]) == (1, 0)


def test_a_session_checkpoints_its_sweep_line_so_a_killed_one_keeps_its_figures(
        tmp_path, monkeypatch):
    """After a stored run, once CHECKPOINT_S has passed, the session appends a partial sweep
    line; the final line supersedes them (one session, one entry); a session killed before
    its final line leaves its last checkpoint, which the report marks."""
    from ablations import sweeplog
    from ablations.report import render_arm

    cfg = load_config(_write(tmp_path))
    monkeypatch.setattr(sweeplog, "CHECKPOINT_S", 0.0)  # a checkpoint after every run
    run_grid(cfg, SerialExecutor(), progress=False)
    path = cfg.results / sweeplog.SWEEPS_FILE
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    n = len(cfg.specs)
    assert [x.get("partial", False) for x in lines] == [True] * n + [False]
    assert [x["ran"] for x in lines] == [*range(1, n + 1), n]
    assert len({x["started"] for x in lines}) == 1
    (session,) = sweeplog.load_sweeps(cfg.results)
    assert session == lines[-1] and "partial" not in session
    # killed before the final line: the last checkpoint stands for the session
    path.write_text("".join(json.dumps(x) + "\n" for x in lines[:-2]))
    (session,) = sweeplog.load_sweeps(cfg.results)
    assert session["partial"] is True and session["ran"] == n - 1
    row = next(x for x in render_arm(cfg).read_text().splitlines() if x.startswith("| 20"))
    assert f"| {n - 1} (killed: its last checkpoint) |" in row


def test_a_run_stored_just_after_a_checkpoint_reaches_the_log_before_the_session_ends(
        tmp_path, monkeypatch):
    """Runs stored less than CHECKPOINT_S after the previous line are written by the timer
    once the period is up, while the session still trains (here: waits in on_record), so a
    session killed then still counts them; with nothing stored since, no line is added."""
    from ablations import sweeplog

    cfg = load_config(_write(tmp_path))
    n = len(cfg.specs)
    monkeypatch.setattr(sweeplog, "CHECKPOINT_S", 0.4)
    path = cfg.results / sweeplog.SWEEPS_FILE
    seen = []

    def slow_last(record):  # every run is stored at once; the session then lingers
        seen.append(record)
        if len(seen) == n:
            time.sleep(1.5)

    run_grid(cfg, SerialExecutor(), progress=False, on_record=slow_last)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    partial = [x for x in lines if x.get("partial")]
    assert lines[-1].get("partial") is None and lines[-1]["ran"] == n
    assert partial and partial[-1]["ran"] == n  # the last runs are in a checkpoint
    ran = [x["ran"] for x in partial]
    assert ran == sorted(set(ran))  # a checkpoint only after a new run: none repeats


def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path):
    """Kill a real `python -m ablations run` mid-grid, rerun it, and count the records."""
    cfg_path = _write(tmp_path, seeds=12)  # enough runs that the kill lands mid-grid
    cfg = load_config(cfg_path)
    runs = cfg.results / "runs.jsonl"
    cmd = [sys.executable, "-m", "ablations", "run", str(cfg_path), "--workers", "1",
           "--no-report", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(load_records(runs)) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(load_records(runs))
    assert 2 <= n_before < len(cfg.specs), "the kill should land mid-grid"
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    keys = [r["key"] for r in load_records(runs)]
    assert len(keys) == len(set(keys)) == len(cfg.specs)


def test_changed_config_never_mixes_old_runs(tmp_path):
    cfg = load_config(_write(tmp_path, seeds=1))
    run_grid(cfg, SerialExecutor(), progress=False)
    cfg2 = load_config(_write(tmp_path, seeds=1, extra="label_noise = 0.1"))
    counts = run_grid(cfg2, SerialExecutor(), progress=False)
    assert counts["done_before"] == 0 and counts["ran"] == len(cfg2.specs)


def test_append_record_writes_whole_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    for i in range(3):
        append_record(path, {"key": str(i), "run_id": str(i), "metrics": {"x": float("nan")}})
    assert [r["key"] for r in load_records(path)] == ["0", "1", "2"]


# ------------------------------------------------------------------ records on disk (issue 13)

def _refuse(token):
    raise ValueError(f"not strict JSON: {token}")


def test_non_finite_numbers_are_strict_json_and_read_back(tmp_path):
    import math

    import numpy as np

    record = {"key": "k", "run_id": "r", "metrics": {
        "nan": math.nan, "inf": math.inf, "minus_inf": -math.inf, "np_nan": np.float32("nan"),
        "np_inf": np.float64("inf"), "one": np.float32(1.0), "n": np.int64(3)},
        "curve": [{"loss": math.nan}, {"loss": 0.5}], "config": {"tags": ["a"]}}
    path = tmp_path / "runs.jsonl"
    append_record(path, record)
    line = path.read_text()
    assert json.loads(line, parse_constant=_refuse)["metrics"]["nan"] == "NaN"
    assert '"inf": "Infinity"' in line and '"minus_inf": "-Infinity"' in line
    (back,) = load_records(path)
    m = back["metrics"]
    assert math.isnan(m["nan"]) and math.isnan(m["np_nan"]) and math.isnan(back["curve"][0]["loss"])
    assert m["inf"] == m["np_inf"] == math.inf and m["minus_inf"] == -math.inf
    assert (m["one"], m["n"], back["curve"][1], back["config"]) == (1.0, 3, {"loss": 0.5},
                                                                    {"tags": ["a"]})
    assert json.dumps(back, sort_keys=True) == json.dumps(
        {**record, "metrics": {**record["metrics"], "np_nan": math.nan, "np_inf": math.inf,
                               "one": 1.0, "n": 3}}, sort_keys=True)


@pytest.mark.parametrize("grid", ["calibration", "classifier"])
def test_stored_runs_with_bare_nan_load_as_before(grid):
    """The records of the committed runs.jsonl files written before records were strict (bare
    NaN) read as the plain JSON reader reads them: same records, same order, NaN where NaN
    was (the strict records appended since have their own test above; a key stored twice, a
    dirty record and its clean rerun, reads as its newer line)."""
    import re
    import warnings

    path = ROOT / "results" / grid / "runs.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    bare = [i for i, line in enumerate(lines) if re.search(r"[:\[,]\s*(NaN|-?Infinity)\b", line)]
    assert bare, "the file has no record of the old form left"
    old = [json.loads(lines[i]) for i in bare]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in them to warn about
        new = load_records(path)
    keys = [json.loads(line)["key"] for line in lines]
    assert [r["key"] for r in new] == list(dict.fromkeys(keys))  # first-stored order
    by_key = {r["key"]: r for r in new}
    kept = [o for i, o in zip(bare, old) if keys.count(keys[i]) == 1]
    assert kept, "no record of the old form is read as it is"
    assert json.dumps([by_key[o["key"]] for o in kept], sort_keys=True) == json.dumps(
        kept, sort_keys=True)


def test_bad_lines_are_skipped_naming_their_line(tmp_path):
    """Only a last line without its newline is torn; other bad lines are malformed; a record
    needs key, run_id and a metrics object; a repeated key warns with both lines and the newer
    record wins."""
    path = tmp_path / "runs.jsonl"
    rec = {"key": "a", "run_id": "ra", "metrics": {"x": 1.0}}
    path.write_text("\n".join([
        json.dumps(rec),
        "null",
        "[1, 2, 3]",
        '{"key": "b", "run_id": "rb"}',
        '{"key": "c", "run_id": "rc", "metrics": 5}',
        '{"run_id": "rd", "metrics": {}}',
        '{"key": "e", "metr',
        json.dumps({**rec, "metrics": {"x": 2.0}}),
        json.dumps({"key": "f", "run_id": "rf", "metrics": {}}),
        '{"key": "g", "run_id": "rg", "met']))
    with pytest.warns(RuntimeWarning) as caught:
        records = load_records(path)
    assert [str(w.message) for w in caught] == [f"{path}:{n}: {m}" for n, m in [
        (2, "skipping a malformed record (not a JSON object but null)"),
        (3, "skipping a malformed record (not a JSON object but [1, 2, 3])"),
        (4, "skipping a malformed record (no metrics)"),
        (5, "skipping a malformed record (metrics is not an object: 5)"),
        (6, "skipping a malformed record (no key)"),
        (7, "skipping a malformed record (not JSON: Unterminated string starting at)"),
        (8, "key a is stored on line 1 too; keeping line 8 (the newer)"),
        (10, "skipping a torn record (a run killed mid-write)")]]
    assert records == [{**rec, "metrics": {"x": 2.0}},
                       {"key": "f", "run_id": "rf", "metrics": {}}]


def test_results_folder_is_checked_and_locked_before_any_run(tmp_path):
    """run_grid refuses a folder held by another sweep (naming it) and one that is a file,
    before it submits anything; a lock file left by a dead holder blocks nothing."""
    from ablations.records import ResultsError, results_lock

    cfg = load_config(_write(tmp_path, variants='["adamw"]', seeds=1))

    class NoRuns(SerialExecutor):
        def submit(self, fn, *args):
            raise AssertionError("no run may start")

    cfg.results.mkdir(parents=True)
    with results_lock(cfg.results):  # another sweep holds the folder
        with pytest.raises(ResultsError, match=rf"results folder {cfg.results} is in use by "
                                               rf"another sweep \(pid {os.getpid()} on "):
            run_grid(cfg, NoRuns(), progress=False)
    assert not (cfg.results / ".lock").exists()
    (cfg.results / ".lock").write_text("pid 999999999 on elsewhere since long ago\n")
    assert run_grid(cfg, NoRuns(), progress=False, limit=0)["ran"] == 0
    assert not (cfg.results / ".lock").exists()
    import dataclasses

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError, match="is a file, not a folder"):
        run_grid(dataclasses.replace(cfg, results=blocker), NoRuns(), progress=False)
    assert blocker.read_text() == "x"


def test_the_runner_records_no_run_of_code_it_cannot_name(tmp_path, monkeypatch):
    """Outside a git checkout the commit must come from $QSGD_COMMIT (a 40-digit hash);
    otherwise nothing runs. Records carry the commit, a dirty flag, the task and protocol."""
    from ablations import provenance as prov

    path = _write(tmp_path, variants='["adamw"]', seeds=1,
                  extra="").read_text().replace('[grid]\n', '[grid]\nprotocol = "calibrated"\n')
    (tmp_path / "p.toml").write_text(path)
    cfg = load_config(tmp_path / "p.toml")
    monkeypatch.setattr(prov, "_git", lambda *a: None)  # as on a copy without .git
    for env in ("", "HEAD", "abc123", "b" * 40 + "x"):
        prov.commit_info.cache_clear()
        monkeypatch.setenv("QSGD_COMMIT", env)
        with pytest.raises(prov.ProvenanceError, match=r"cannot name the code's commit"):
            run_grid(cfg, SerialExecutor(), progress=False)
    assert not (cfg.results / "runs.jsonl").exists()
    prov.commit_info.cache_clear()
    monkeypatch.setenv("QSGD_COMMIT", "a" * 40 + "-dirty")
    run_grid(cfg, SerialExecutor(), progress=False)
    (rec,) = load_records(cfg.results / "runs.jsonl")
    assert rec["provenance"]["commit"] == "a" * 40 + "-dirty" and rec["provenance"]["dirty"]
    assert rec["protocol"] == "calibrated" and "task" not in rec
    # a declared commit wins over a git history that travelled with a copy (it may be stale)
    monkeypatch.undo()
    monkeypatch.setenv("QSGD_COMMIT", "c" * 40)
    prov.commit_info.cache_clear()
    assert prov.commit_info() == ("c" * 40, False)
    prov.commit_info.cache_clear()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_appending_runs_to_results_does_not_mark_the_code_dirty(tmp_path, monkeypatch):
    """A grid appends to its tracked results/<grid>/runs.jsonl while it runs: that is data,
    and the records after the first must name the same clean commit; a changed code file
    outside results/ is dirty."""
    from ablations import provenance as prov

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results" / "g").mkdir(parents=True)
    (tmp_path / "results" / "g" / "runs.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(prov, "_ROOT", tmp_path)
    monkeypatch.delenv("QSGD_COMMIT", raising=False)
    with open(tmp_path / "results" / "g" / "runs.jsonl", "a") as fh:
        fh.write("{}\n")
    prov.commit_info.cache_clear()
    sha, dirty = prov.commit_info()
    assert len(sha) == 40 and not dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    prov.commit_info.cache_clear()
    assert prov.commit_info() == (sha, True)
    prov.commit_info.cache_clear()


def test_machine_info_is_one_helper_for_every_bench():
    import platform

    from ablations.provenance import commit, machine_info

    info = machine_info(("pytest", "no-such-dist-qsgd"), device="cpu", cpu=None,
                        torch="custom")
    assert info["commit"] == commit() and info["python"] == platform.python_version()
    assert info["pytest"] == pytest.__version__ and info["no-such-dist-qsgd"] == "not installed"
    assert "cpu" not in info                                  # None leaves the key out
    assert info["torch"] == "custom" and info["device"] == "cpu"
    keys = list(info)
    assert keys.index("torch") < keys.index("platform") < keys.index("device")  # in place
    assert all(isinstance(v, str) for v in info.values())
    assert not any("/work/" in v or "/home/" in v for v in info.values())  # no machine paths


def test_prune_drops_only_dirty_records_no_report_reads(tmp_path):
    from ablations.records import load_records, prune_dirty

    def rec(key, dirty, loss):
        return json.dumps({"key": key, "run_id": key, "metrics": {"loss": loss},
                           "provenance": {"commit": "a" * 40 + ("-dirty" if dirty else ""),
                                          "dirty": dirty}}) + "\n"

    path = tmp_path / "runs.jsonl"
    lines = [rec("k1", True, 1.0),    # superseded by the clean k1 below: dropped
             rec("k2", False, 2.0),   # clean: kept
             rec("k1", False, 1.5),
             rec("k3", True, 3.0),    # dirty, its key in the grid, nothing newer: kept
             rec("old", True, 4.0),   # dirty, a key the grid no longer has: dropped
             rec("old2", False, 5.0),  # clean, an older config's: kept (reports count it)
             "not json\n"]            # a line it does not understand: kept as it is
    path.write_text("".join(lines))
    assert prune_dirty(path, {"k1", "k2", "k3"}) == (1, 1)
    assert path.read_text() == "".join(lines[1:4] + lines[5:])
    assert prune_dirty(path, {"k1", "k2", "k3"}) == (0, 0)  # nothing left to drop
    with pytest.warns(RuntimeWarning, match="malformed"):
        assert {r["key"]: r["metrics"]["loss"] for r in load_records(path)} == {
            "k1": 1.5, "k2": 2.0, "k3": 3.0, "old2": 5.0}
    assert prune_dirty(tmp_path / "absent.jsonl", set()) == (0, 0)
