"""The command lines under bad input and interrupts (issue 13): one line and exit status 2
before anything runs, nothing stored lost or overwritten, SIGINT/SIGTERM as one line and 130
with no worker left behind, one sweep per results folder.

Most tests call ``main()`` in this process with a test arm whose runs sleep (``sleepy``, no
training) and a serial executor; the interrupt and kill tests start real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from ablations import runner
from ablations.__main__ import main

ROOT = Path(__file__).resolve().parent.parent

#: a test arm: each run sleeps ``seconds`` and reports its seed; "sleepy_gpu" asks for GPUs
SLEEPY = '''
import os
import time
from dataclasses import dataclass

from ablations.arms import Arm, Metric, register_arm


@dataclass(frozen=True)
class SleepyOptions:
    seconds: float = 0.0


@register_arm
class Sleepy(Arm):
    name = "sleepy"
    options = SleepyOptions
    metrics = (Metric("x", "none", compared=False),)
    baselines = ("adamw",)

    def run(self, spec):
        time.sleep(self.parse_options(spec.config).seconds)
        return {"metrics": {"x": float(spec.seed)}}


@register_arm
class SleepyGPU(Sleepy):
    name = "sleepy_gpu"
    resources = "gpu"


def device_and_pid(seconds):
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()
'''

GRID = """
[grid]
arm = "{arm}"
results = "{results}"

[{arm}]
seconds = {seconds}

[[cells]]
variants = ["adamw"]
seeds = {seeds}
"""

#: ``python -m ablations`` with the test arm registered first
MAIN = ("import sys, sleepy_arm; from ablations.__main__ import main; "
        "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def sleepy_dir(tmp_path_factory):
    """A folder holding the test arm's module, imported (and so registered) here."""
    d = tmp_path_factory.mktemp("sleepy")
    (d / "sleepy_arm.py").write_text(SLEEPY)
    sys.path.insert(0, str(d))
    import sleepy_arm  # noqa: F401

    yield d
    sys.path.remove(str(d))


def _grid(folder: Path, results: str | Path = "res", seeds: int = 3, seconds: float = 0.0,
          arm: str = "sleepy", name: str = "grid.toml") -> Path:
    path = folder / name
    path.write_text(GRID.format(arm=arm, results=results, seconds=seconds, seeds=seeds))
    return path


class CountingExecutor:
    """Runs in this process and counts what was submitted."""

    def __init__(self):
        self.submitted = 0

    def submit(self, fn, *args):
        import concurrent.futures as cf

        self.submitted += 1
        fut = cf.Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, **_):
        pass


@pytest.fixture
def serial(monkeypatch, sleepy_dir):
    """``run`` without worker processes: the default executor runs in this process."""
    ex = CountingExecutor()
    monkeypatch.setattr(runner, "default_executor", lambda *a, **k: ex)
    return ex


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _strict_lines(path: Path) -> list[dict]:
    # every line parses with a strict JSON parser (bare NaN/Infinity refused)
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- item 1: write only where asked

def test_report_of_one_grid_writes_only_under_its_results_folder(tmp_path, monkeypatch,
                                                                 capsys):
    """`report CONFIG --results DIR` renders DIR and nothing else: the working directory's
    ledger results/README.md and the stored runs stay as they were."""
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "README.md").write_text("the ledger, not to be touched\n")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(ROOT / "results" / "calibration" / "runs.jsonl", out / "runs.jsonl")
    monkeypatch.chdir(work)
    before_work, stored = _tree(work), (out / "runs.jsonl").read_bytes()
    cfg = ROOT / "ablations" / "configs" / "calibration.toml"
    assert main(["report", str(cfg), "--results", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out / 'report.md'}\n"
    assert _tree(work) == before_work
    assert (out / "runs.jsonl").read_bytes() == stored
    assert {"report.md", "runs.csv", "claims.json"} <= set(_tree(out))


def test_run_of_a_grid_outside_results_leaves_the_ledger_alone(tmp_path, monkeypatch, serial,
                                                               capsys):
    """`run CONFIG` whose [grid].results is not under ./results writes its report there and
    does not rewrite ./results/README.md."""
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    ledger = work / "results" / "README.md"
    ledger.write_text("the ledger, not to be touched\n")
    cfg = _grid(tmp_path, results=tmp_path / "res", seeds=2)
    monkeypatch.chdir(work)
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert ledger.read_text() == "the ledger, not to be touched\n"
    assert (tmp_path / "res" / "report.md").is_file() and serial.submitted == 2


# ---------------------------------------------------- item 2: the report fails after the runs

def test_run_whose_report_fails_says_the_runs_are_stored(tmp_path, monkeypatch, serial, capsys):
    import ablations.report

    def broken(cfg):
        raise ValueError("cannot draw\nthis figure")

    monkeypatch.setattr(ablations.report, "render_arm", broken)
    cfg = _grid(tmp_path, results=tmp_path / "res", seeds=3)
    assert main(["run", str(cfg), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err == (f"error: the runs are stored (3 of 3 in {tmp_path / 'res'}), but the report "
                   "failed: ValueError: cannot draw this figure; `python -m ablations report "
                   f"{cfg}` re-renders it\n")
    assert len(_strict_lines(tmp_path / "res" / "runs.jsonl")) == 3
    with pytest.raises(ValueError, match="cannot draw"):  # --debug: the traceback
        main(["run", str(cfg), "--no-progress", "--debug"])


# ------------------------------------------- item 3: the results folder, checked before any run

def _readonly_folder(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").mkdir()
    except PermissionError:
        return ro / "res"
    pytest.skip("this user writes into read-only folders (root)")


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only"])
def test_unusable_results_folder_fails_before_the_first_run(tmp_path, monkeypatch, serial,
                                                            capsys, case):
    blocker = tmp_path / "taken"
    blocker.write_text("someone's file\n")
    results, message = {
        "a file": (blocker, f"results folder {blocker} is a file, not a folder"),
        "under a file": (blocker / "res", f"results folder {blocker / 'res'} cannot be "
                                          "created: Not a directory"),
        "read-only": (None, None),
    }[case]
    if case == "read-only":
        results = _readonly_folder(tmp_path)
        message = f"results folder {results} cannot be created: Permission denied"
    cfg = _grid(tmp_path, results=results)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert serial.submitted == 0, "no run may start"
    assert blocker.read_text() == "someone's file\n"


def test_read_only_results_folder_that_exists(tmp_path, serial, capsys):
    res = _readonly_folder(tmp_path).parent
    cfg = _grid(tmp_path, results=res)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: results folder {res} is not writable: "
                                       "Permission denied\n")
    assert serial.submitted == 0


@pytest.mark.parametrize("where", ["--results", "[grid].results"])
def test_tilde_in_the_results_folder_is_the_home_folder(tmp_path, monkeypatch, serial, capsys,
                                                        where):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    if where == "--results":
        argv = ["run", str(_grid(tmp_path)), "--results", "~/x"]
    else:
        argv = ["run", str(_grid(tmp_path, results="~/x"))]
    assert main([*argv, "--limit", "1", "--no-report", "--no-progress"]) == 0
    assert len(_strict_lines(home / "x" / "runs.jsonl")) == 1
    assert capsys.readouterr().out.endswith(f"-> {home / 'x'}\n")
    assert list(work.iterdir()) == [], "nothing under ./~"


# ----------------------------------------------------- item 5: bad records never crash a command

def test_run_and_report_skip_bad_records_with_their_line(tmp_path, serial, capsys):
    """A `null`, a list and a record without metrics among the stored runs: `run` warns and
    reruns what is missing, `report` renders; nothing stored is rewritten."""
    from ablations.config import load_config

    cfg_path = _grid(tmp_path, results=tmp_path / "res", seeds=3)
    cfg = load_config(cfg_path)
    keys = [s.key for s in cfg.specs]
    res = tmp_path / "res"
    res.mkdir()
    good = runner.run_one(cfg.specs[0])
    runs = res / "runs.jsonl"
    runs.write_text("null\n[1, 2, 3]\n" + json.dumps({"key": keys[1], "run_id": "r1"}) + "\n"
                    + json.dumps(good) + "\n")
    stored = runs.read_bytes()
    assert main(["run", str(cfg_path), "--no-progress", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {runs}:1: skipping a malformed record (not a JSON object but "
                   "null)\n"
                   f"warning: {runs}:2: skipping a malformed record (not a JSON object but "
                   "[1, 2, 3])\n"
                   f"warning: {runs}:3: skipping a malformed record (no metrics)\n")
    assert serial.submitted == 2  # keys[1] (no metrics: not done) and keys[2]
    assert runs.read_bytes().startswith(stored)
    assert main(["report", str(cfg_path)]) == 0
    assert len((res / "runs.csv").read_text().splitlines()) == 1 + 3


# ------------------------------------------------------------ item 7: interrupts and the lock

def _children(pid: int) -> list[int]:
    # the processes whose parent is pid (Linux /proc)
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start_sweep(cfg: Path, sleepy_dir: Path, progress: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-c", MAIN, "run", str(cfg), "--workers", "2", "--no-report",
           *([] if progress else ["--no-progress"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(sleepy_dir)])}
    return subprocess.Popen(cmd, cwd=cfg.parent, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_records(proc: subprocess.Popen, runs: Path, n: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if runs.is_file() and runs.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {n} records in time: {proc.communicate()[1][-2000:]}")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(),
                                reason="reads the process table from /proc (Linux)")


@needs_proc
@pytest.mark.parametrize("sig, to_group, progress", [
    (signal.SIGTERM, False, False),  # `kill PID`
    (signal.SIGINT, True, True),  # Ctrl-C: the whole process group, progress bar on
], ids=["sigterm", "ctrl-c"])
def test_interrupted_sweep_says_what_is_stored_and_leaves_no_worker(tmp_path, sleepy_dir, sig,
                                                                    to_group, progress):
    res = tmp_path / "res"
    cfg = _grid(tmp_path, results=res, seeds=60, seconds=0.3)
    proc = _start_sweep(cfg, sleepy_dir, progress)
    _wait_for_records(proc, res / "runs.jsonl", 2)
    kids = _children(proc.pid)
    assert len(kids) >= 2, "two workers (and the resource tracker) run"
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    records = _strict_lines(res / "runs.jsonl")
    n = len(records)
    line = (f"interrupted: {n} runs stored ({n} this time, 60 in the grid) in {res}; "
            "rerun to resume")
    assert "Traceback" not in err
    assert err.endswith(line + "\n") and (progress or err == line + "\n"), err[-2000:]
    assert len({r["key"] for r in records}) == n >= 2
    assert _gone_within(kids, 5) == []
    assert not (res / ".lock").exists()


@needs_proc
def test_one_sweep_per_results_folder_and_no_worker_outlives_a_killed_one(tmp_path, sleepy_dir,
                                                                          capsys):
    """While a sweep runs, a second on its folder is refused (exit 2, naming the holder); the
    first killed with SIGKILL, its workers exit by themselves and its stale lock blocks no
    one."""
    res = tmp_path / "res"
    cfg = _grid(tmp_path, results=res, seeds=60, seconds=0.3)
    proc = _start_sweep(cfg, sleepy_dir)
    try:
        _wait_for_records(proc, res / "runs.jsonl", 1)
        kids = _children(proc.pid)
        assert len(kids) >= 2
        assert main(["run", str(cfg), "--no-report", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(
            rf"error: results folder {re.escape(str(res))} is in use by another sweep \(pid "
            rf"{proc.pid} on {re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d "
            r"\d\d:\d\d:\d\d UTC\); wait for it to finish, or stop it and rerun\n", err), err
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert _gone_within(kids, 5) == [], "workers exit when their parent dies"
    assert (res / ".lock").is_file(), "a killed holder leaves its lock file"
    stored = (res / "runs.jsonl").read_bytes()
    assert main(["run", str(cfg), "--limit", "0", "--no-report", "--no-progress"]) == 0
    assert (res / "runs.jsonl").read_bytes() == stored and not (res / ".lock").exists()


def test_gpu_workers_each_get_their_own_device(sleepy_dir, monkeypatch):
    """The GPU pool hands one device id to each worker (a plain queue, no manager process)."""
    import sleepy_arm

    monkeypatch.setattr(runner, "_visible_gpus", lambda: 2)
    ex = runner.default_executor(arm="sleepy_gpu")
    try:
        got = [f.result(timeout=120) for f in [ex.submit(sleepy_arm.device_and_pid, 0.5)
                                              for _ in range(4)]]
    finally:
        ex.shutdown()
    by_pid = {}
    for device, pid in got:
        by_pid.setdefault(pid, set()).add(device)
    assert all(len(d) == 1 for d in by_pid.values()), by_pid
    assert {d for ds in by_pid.values() for d in ds} <= {"0", "1"}
    assert len({next(iter(d)) for d in by_pid.values()}) == len(by_pid)


# ------------------------------------------------------ item 10: input errors print one line

def _raiser(err):
    def fn(*args, **kwargs):
        raise err
    return fn


def _input_errors():
    from ablations.arms import ArmError
    from ablations.config import ConfigError
    from ablations.llm.gsm8k import GSM8KFormatError

    return [
        (ConfigError("g.toml: unknown key(s) in [grid]: nme"),
         "g.toml: unknown key(s) in [grid]: nme"),
        (ArmError("[llm].lr must be float, got 'x'"), "[llm].lr must be float, got 'x'"),
        (GSM8KFormatError("test.jsonl:3: not JSON: Expecting value"),
         "test.jsonl:3: not JSON: Expecting value"),
        (FileNotFoundError(2, "No such file or directory", "data/test.jsonl"),
         "no such file: data/test.jsonl"),
    ]


@pytest.mark.parametrize("i", range(4), ids=["config", "arm", "gsm8k", "missing"])
def test_every_cli_prints_an_input_error_as_one_line(tmp_path, monkeypatch, capsys, i):
    """`python -m ablations`, `python -m ablations.llm` and `python -m theory` print an input
    error as `error: <message>` and exit 2; `--debug` raises it with its traceback."""
    import ablations.config
    import ablations.llm.cli
    import ablations.llm.train
    import theory.__main__
    import theory.inputs

    err, message = _input_errors()[i]
    monkeypatch.setattr(ablations.config, "load_config", _raiser(err))
    monkeypatch.setattr(ablations.llm.train, "run", _raiser(err))
    monkeypatch.setattr(theory.inputs, "load_inputs", _raiser(err))
    calls = [(main, ["run", "g.toml"]), (main, ["report", "g.toml"]),
             (ablations.llm.cli.main, ["train"]),
             (theory.__main__.main, ["run", "--quick", "--out", str(tmp_path / "t")])]
    for cli, argv in calls:  # --debug: the traceback
        assert cli(argv) == 2, argv
        assert capsys.readouterr().err == f"error: {message}\n", argv
        with pytest.raises(type(err)):
            cli([*argv, "--debug"])
    assert not (tmp_path / "t").exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    import ablations.config

    monkeypatch.setattr(ablations.config, "load_config", _raiser(KeyError("bug")))
    with pytest.raises(KeyError, match="bug"):
        main(["run", "g.toml"])


def test_config_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[grid]\narm = "classifier"\nname = "caf\xe9"\n'.encode("latin-1"))
    for argv in (["run", str(path)], ["report", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and "UTF-8" in err and err.count("\n") == 1, err


def _read_text(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_utf8_error_names_the_file_being_read(tmp_path):
    """A UnicodeDecodeError names no file; the CLIs find the one being read in its
    traceback, else name the command's input."""
    from ablations.cli_support import input_error_message

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(UnicodeDecodeError) as info:
        _read_text(path)
    assert input_error_message(info.value, source="other.toml") == (
        f"{path}: not UTF-8 text (invalid continuation byte at byte 17); save it as UTF-8")
    with pytest.raises(UnicodeDecodeError) as info:
        b"\xff".decode()
    assert input_error_message(info.value, source="g.toml") == (
        "g.toml: not UTF-8 text (invalid start byte at byte 0); save it as UTF-8")


def test_llm_set_option_errors_are_one_line(capsys):
    from ablations.llm.cli import main as llm_main

    assert llm_main(["train", "--set", "lr=fast"]) == 2
    assert capsys.readouterr().err == "error: --set lr: 'fast' is not a float\n"
    assert llm_main(["train", "--set", "lr"]) == 2
    assert capsys.readouterr().err == "error: --set needs key=value, got 'lr'\n"
    assert llm_main(["train", "--set", "epochs=3"]) == 2
    assert capsys.readouterr().err.startswith("error: --set: unknown key(s) in [llm]: epochs")


def test_bad_counts_are_usage_errors(tmp_path, capsys):
    for argv in (["run", "g.toml", "--limit", "-1"], ["run", "g.toml", "--workers", "0"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "must be >= " in capsys.readouterr().err


def test_warnings_print_as_one_line(tmp_path, capsys):
    import ablations.config

    def warn_then_fail(*args, **kwargs):
        warnings.warn("first line\nsecond line", RuntimeWarning, stacklevel=2)
        raise ablations.config.ConfigError("g.toml: bad")

    import unittest.mock

    with unittest.mock.patch.object(ablations.config, "load_config", warn_then_fail):
        assert main(["run", "g.toml"]) == 2
    assert capsys.readouterr().err == "warning: first line second line\nerror: g.toml: bad\n"
