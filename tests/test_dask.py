"""The runner on Dask distributed (issue 17): the smoke grid through a LocalCluster of two
workers gives the process pool's records; a worker killed by SIGKILL mid-grid loses and
duplicates nothing; a run that raises is retried once, then logged in failures.jsonl while the
others complete, and the command exits 1 naming it (the process pool the same way); a grid
against `dask scheduler` and `dask worker` started as separate processes runs and resumes.

One LocalCluster serves most tests (a module fixture, built by the product's own
``local_cluster_executor``); the functions the tests run in its workers live in this module,
which the workers import by name.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from ablations import runner  # noqa: E402
from ablations.__main__ import main  # noqa: E402
from ablations.arms import Arm, Metric, get_arm, register_arm  # noqa: E402
from ablations.config import load_config  # noqa: E402
from ablations.dask_executor import (  # noqa: E402
    DaskExecutor,
    ExecutorError,
    local_cluster_executor,
    parse_executor,
)
from ablations.failures import FAILURES_FILE, RunError, load_failures  # noqa: E402
from ablations.records import load_records  # noqa: E402
from ablations.sweeplog import load_sweeps  # noqa: E402
from tests.test_runner import _write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "ablations" / "configs" / "smoke.toml"

def _tiny(tmp_path: Path, seeds: int = 2):
    # test_runner's tiny classifier grid: classical attention, adamw and sin-l0.5
    path = _write(tmp_path, seeds=seeds)
    return path, load_config(path)


@pytest.fixture(scope="module")
def dask_ex():
    """A LocalCluster of two single-threaded workers, as `--executor dask --workers 2` builds
    it, left running between tests (run_grid does not shut down an executor it is given)."""
    ex = local_cluster_executor("classifier", workers=2, dashboard=":0", announce=False)
    yield ex
    ex.shutdown()


def _comparable(record: dict) -> str:
    # everything but wall-clock figures: provenance, timing metrics, the curve's seconds
    timing = {m.name for m in get_arm(record["arm"]).metrics if m.timing}
    r = {k: v for k, v in record.items() if k != "provenance"}
    r["metrics"] = {k: v for k, v in r["metrics"].items() if k not in timing}
    r["curve"] = [{k: v for k, v in c.items() if k != "sec"} for c in r["curve"]]
    return json.dumps(r, sort_keys=True)


def test_executor_values_are_checked_before_anything_runs():
    assert parse_executor("processes") == "processes" and parse_executor("dask") == "dask"
    assert parse_executor("dask://127.0.0.1:08786") == "dask://127.0.0.1:8786"
    for bad in ("threads", "dask://", "dask://host", "dask://host:0", "dask://:8786",
                "tcp://127.0.0.1:8786"):
        with pytest.raises(ExecutorError, match="expected processes, dask"):
            parse_executor(bad)
    with pytest.raises(ExecutorError, match="workers=2 does not apply"):
        parse_executor("dask://127.0.0.1:8786", workers=2)
    with pytest.raises(SystemExit):
        main(["run", str(SMOKE), "--executor", "dask:/x"])


def test_smoke_grid_on_a_local_cluster_equals_the_process_pool(tmp_path, dask_ex):
    """Bit for bit, but for wall-clock figures: same workers, same threads per worker."""
    pool = load_config(SMOKE, tmp_path / "processes")
    dask = load_config(SMOKE, tmp_path / "dask")
    assert runner.run_grid(pool, "processes", workers=2, progress=False)["ran"] == 15
    assert runner.run_grid(dask, dask_ex, progress=False)["ran"] == 15
    a = {r["key"]: _comparable(r) for r in load_records(pool.results / runner.RUNS_FILE)}
    b = {r["key"]: _comparable(r) for r in load_records(dask.results / runner.RUNS_FILE)}
    assert a == b and len(a) == 15
    devices = {r["provenance"]["device"] for r in load_records(dask.results / "runs.jsonl")}
    assert devices == {f"cpu ({platform.processor() or platform.machine()}, 1 threads)"}
    (sweep,) = load_sweeps(dask.results)
    assert (sweep["executor"], sweep["workers"], sweep["ran"], sweep["failed"]) == (
        "dask", 2, 15, 0)
    assert load_sweeps(pool.results)[0]["executor"] == "processes"


def _stall_once(marker: Path, victim: str, spec):
    """A run function: the first attempt at ``victim`` writes its worker's pid to ``marker``
    and hangs (until the test kills the worker); every other attempt runs as usual."""
    if spec.run_id == victim and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(120)
    return runner.run_one(spec)


def test_a_worker_killed_mid_grid_loses_and_duplicates_nothing(tmp_path, dask_ex):
    _, cfg = _tiny(tmp_path, seeds=3)
    victim = cfg.specs[1].run_id
    marker = tmp_path / "victim.pid"
    killed = []

    def kill_when_stalled():
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)
        time.sleep(0.2)  # the pid is written whole
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)  # a real SIGKILL of the worker process mid-run
        killed.append(pid)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    counts = runner.run_grid(cfg, dask_ex, progress=False,
                             run_fn=functools.partial(_stall_once, marker, victim))
    killer.join(timeout=5)
    assert killed and counts["ran"] == len(cfg.specs) == 6 and counts["failed"] == 0
    keys = [r["key"] for r in load_records(cfg.results / runner.RUNS_FILE)]
    lines = (cfg.results / runner.RUNS_FILE).read_text().splitlines()
    assert len(lines) == len(keys) == len(set(keys)) == 6
    assert sorted(keys) == sorted(s.key for s in cfg.specs)
    assert not (cfg.results / FAILURES_FILE).exists()
    dask_ex.client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


@dataclass(frozen=True)
class FlakyOptions:
    fail_seed: int = -1  # this seed's runs always raise
    flaky_seed: int = -1  # this seed's runs raise on their first attempt only
    log: str = ""  # a file: each attempt appends its run id


@register_arm
class Flaky(Arm):
    """A test arm without training (registered in the workers too: they import this module,
    the arm's)."""

    name = "flaky"
    options = FlakyOptions
    metrics = (Metric("x", "none", compared=False),)
    baselines = ("adamw",)

    def run(self, spec):
        o = self.parse_options(spec.config)
        tries = 1
        if o.log:
            with open(o.log, "a") as fh:
                fh.write(spec.run_id + "\n")
            tries = Path(o.log).read_text().splitlines().count(spec.run_id)
        if spec.seed == o.fail_seed:
            raise ArithmeticError(f"seed {spec.seed} cannot run\nat all")
        if spec.seed == o.flaky_seed and tries == 1:
            raise RuntimeError("flaky once")
        return {"metrics": {"x": float(spec.seed)}}


FLAKY = """
[grid]
arm = "flaky"
results = "{results}"

[flaky]
fail_seed = 2
flaky_seed = 0
log = "{log}"

[[cells]]
variants = ["adamw", "sin-l0.5"]
seeds = 4
"""


def _flaky(tmp_path: Path) -> Path:
    path = tmp_path / "flaky.toml"
    path.write_text(FLAKY.format(results=tmp_path / "res", log=tmp_path / "attempts.log"))
    return path


@pytest.mark.parametrize("where", ["dask", "processes"])
def test_a_failing_run_is_retried_once_then_logged_while_the_rest_complete(tmp_path, where,
                                                                           request):
    ex = request.getfixturevalue("dask_ex") if where == "dask" else "processes"
    if where == "dask":  # the shared cluster, set up for this arm's runs
        ex = DaskExecutor(ex.client, arm="flaky")
    cfg = load_config(_flaky(tmp_path))
    counts = runner.run_grid(cfg, ex, workers=None if where == "dask" else 1, progress=False)
    failing = [s for s in cfg.specs if s.seed == 2]
    assert (counts["ran"], counts["failed"], counts["stored"]) == (6, 2, 6)
    assert sorted(counts["failed_ids"]) == sorted(s.run_id for s in failing)
    attempts = (tmp_path / "attempts.log").read_text().splitlines()
    assert all(attempts.count(s.run_id) == 2 for s in cfg.specs if s.seed in (0, 2))
    assert all(attempts.count(s.run_id) == 1 for s in cfg.specs if s.seed in (1, 3))
    stored = {r["key"] for r in load_records(cfg.results / runner.RUNS_FILE)}
    assert stored == {s.key for s in cfg.specs if s.seed != 2}
    entries = load_failures(cfg.results)
    assert sorted(e["run_id"] for e in entries) == sorted(counts["failed_ids"])
    for e in entries:
        spec = next(s for s in failing if s.run_id == e["run_id"])
        assert e["spec"] == spec.as_dict() and e["key"] == spec.key and e["attempts"] == 2
        assert e["error"] == "ArithmeticError: seed 2 cannot run at all"
        assert e["traceback"].rstrip().endswith("ArithmeticError: seed 2 cannot run\nat all")
        assert 'File "test_dask.py", line' in e["traceback"]  # named on the import path
        assert str(ROOT) not in e["traceback"] and str(tmp_path) not in e["traceback"]
        assert e["worker"].startswith("tcp://127.0.0.1:" if where == "dask" else
                                      f"{platform.node()} pid ")
        assert e["time"].startswith("20") and len(e["commit"]) >= 40
    assert load_sweeps(cfg.results)[0]["failed"] == 2


def test_the_executor_benchmark_writes_its_tables(tmp_path):
    """The writer of results/bench/executor.* on made-up rows (the timings are not tested)."""
    from ablations.bench_executor import _row, write_outputs

    rows = []
    for kind, extra in (("processes", 0.0), ("dask", 0.15)):
        rows.append(_row(kind, 1, "start", 0, 3.0 + 10 * extra))
        rows.append(_row(kind, 1, "cold", 0, 9.0 + extra, 8.9, 15))
        rows += [_row(kind, 1, "warm", k, 3.0 + k * 0.01 + extra, 2.9, 15) for k in (1, 2, 3)]
        rows.append(_row(kind, 1, "shutdown", 0, 4.0))
    write_outputs(rows, {"cpu": "test"}, tmp_path)
    text = (tmp_path / "executor.md").read_text()
    assert "| processes | 3.00 | 9.00 | 3.02 | 2.90 | 8.0 (7.3–8.7) |" in text
    assert "paired by round" in text and "median +10.0 ms (min +10.0, max +10.0)" in text
    assert (tmp_path / "executor.csv").read_text().startswith(
        "executor,workers,phase,round,runs,wall_s,run_s,overhead_ms_per_run\n")


def test_run_error_pickles_with_its_text():
    import pickle

    err = pickle.loads(pickle.dumps(RunError("ValueError: x", "Traceback ...", "w")))
    assert (str(err), err.traceback, err.worker) == ("ValueError: x", "Traceback ...", "w")


def test_the_command_names_failed_runs_and_exits_1(tmp_path, dask_ex, monkeypatch, capsys):
    """`run --executor dask` (here on the shared cluster): the other runs are stored, the
    failed ones named with their error and the log, exit status 1; a rerun tries them again."""
    from ablations import dask_executor

    # each call an executor over the shared cluster that owns nothing: the cluster stays
    monkeypatch.setattr(dask_executor, "dask_executor",
                        lambda *a, **k: DaskExecutor(dask_ex.client, arm=k["arm"]))
    cfg = _flaky(tmp_path)
    assert main(["run", str(cfg), "--executor", "dask", "--no-report", "--no-progress"]) == 1
    err = capsys.readouterr().err
    failed = sorted(s.run_id for s in load_config(cfg).specs if s.seed == 2)
    head, *named = err.splitlines()[-3:]
    assert head == (f"2 run(s) failed (each tried 2 times) and are not stored (tracebacks in "
                    f"{tmp_path / 'res' / FAILURES_FILE}; rerun to try them again):"), err
    assert sorted(named) == [f"  {r}: ArithmeticError: seed 2 cannot run at all"
                             for r in failed]
    assert len(load_records(tmp_path / "res" / "runs.jsonl")) == 6
    assert main(["run", str(cfg), "--executor", "dask", "--no-report", "--no-progress"]) == 1
    assert sorted(f["run_id"] for f in load_failures(tmp_path / "res")) == sorted(failed * 2)


@dataclass(frozen=True)
class PinnedOptions:
    seconds: float = 0.2


@register_arm
class PinnedDask(Arm):
    """A toy GPU arm: each run reports the GPU its worker was pinned to."""

    name = "pinned_dask"
    options = PinnedOptions
    resources = "gpu"
    metrics = (Metric("device", "none", compared=False),)
    baselines = ("adamw",)

    def run(self, spec):
        time.sleep(self.parse_options(spec.config).seconds)
        return {"metrics": {"device": float(os.environ["CUDA_VISIBLE_DEVICES"]),
                            "pid": float(os.getpid())}}


def test_gpu_runs_ask_for_a_gpu_slot_on_workers_pinned_one_per_gpu(tmp_path, monkeypatch):
    """Two (pretended) GPUs, the host's own list 5,7: two workers of one GPU slot each, pinned
    to 5 and to 7 for their lives; every run holds one slot."""
    monkeypatch.setattr(runner, "_visible_gpus", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    cfg = tmp_path / "pinned.toml"
    cfg.write_text('[grid]\narm = "pinned_dask"\nbaseline_lr = 0.1\n\n[pinned_dask]\n\n'
                   '[[cells]]\nvariants = ["adamw"]\nseeds = 4\n')
    cfg = load_config(cfg, tmp_path / "res")
    ex = local_cluster_executor("pinned_dask", dashboard=":0", announce=False)
    try:
        slots = ex.client.run(lambda dask_worker: dask_worker.state.total_resources)
        assert list(slots.values()) == [{"GPU": 1}, {"GPU": 1}]
        assert runner.run_grid(cfg, ex, progress=False)["ran"] == 4
    finally:
        ex.shutdown()
    recs = load_records(cfg.results / runner.RUNS_FILE)
    by_pid = {r["metrics"]["pid"]: r["metrics"]["device"] for r in recs}
    assert sorted(by_pid.values()) == [5.0, 7.0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.time() > deadline:
            raise AssertionError(f"nothing listens on port {port}")
        time.sleep(0.2)


def test_a_grid_against_a_separate_scheduler_and_worker_runs_and_resumes(tmp_path, capsys):
    """`dask scheduler` and `dask worker` in their own processes, on 127.0.0.1; the command
    connects by `--executor dask://127.0.0.1:PORT`: part of the grid, the rest, then nothing."""
    cfg_path, cfg = _tiny(tmp_path, seeds=2)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen(
            [*dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--nworkers", "1",
             "--memory-limit", "0", "--no-dashboard"], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        argv = ["run", str(cfg_path), "--results", str(cfg.results), "--executor",
                f"dask://127.0.0.1:{port}", "--no-report"]
        _wait_for_port(port)
        assert main([*argv, "--limit", "1", "--no-progress"]) == 0
        assert len(load_records(cfg.results / runner.RUNS_FILE)) == 1
        capsys.readouterr()
        assert main(argv) == 0  # the rest, with the progress bar
        err = capsys.readouterr().err
        assert f"Dask: scheduler tcp://127.0.0.1:{port}" in err and "3/3" in err, err
        stored = (cfg.results / runner.RUNS_FILE).read_bytes()
        assert main([*argv, "--no-progress"]) == 0  # resumed: nothing left to run
        assert capsys.readouterr().out.startswith(f"{cfg.name}: 0 run(s) done now")
        assert (cfg.results / runner.RUNS_FILE).read_bytes() == stored
        keys = [r["key"] for r in load_records(cfg.results / runner.RUNS_FILE)]
        assert sorted(keys) == sorted(s.key for s in cfg.specs)
        assert [s["executor"] for s in load_sweeps(cfg.results)] == ["dask-scheduler"] * 2
    finally:  # the worker process exits with its nanny (Dask watches the parent)
        for p in reversed(procs):
            p.kill()
            p.wait(timeout=30)
