"""The first-compile gate of the LLM arm (ablations/llm/compile_gate.py): the first process of
a host compiles alone, the others wait for it, then go side by side; a failed first
compilation leaves the way open; the tag names what is compiled."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from ablations.llm import compile_gate
from ablations.llm.compile_gate import first_compile, gate_paths

fcntl = pytest.importorskip("fcntl")


def _child(root, tag, out, no_gate=False):
    if no_gate:  # the control: what the test sees when nothing holds the process back
        compile_gate.fcntl = None
    (root / "child.started").touch()
    first_compile(tag, lambda: out_write(out), root)


def out_write(path):
    with open(path, "a") as fh:
        fh.write("ran\n")


def _held(tmp_path, no_gate):
    tmp_path.mkdir()
    # whether a child process reaching the gate while this one holds it is held there
    lock, done = gate_paths("graphs", tmp_path)
    out = tmp_path / "child.txt"
    ctx = mp.get_context("spawn")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # this process is "compiling first"
        child = ctx.Process(target=_child, args=(tmp_path, "graphs", out, no_gate))
        child.start()
        deadline = time.monotonic() + 60
        while not (tmp_path / "child.started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        held = not out.exists()
        done.touch()  # the first compilation finished
        fcntl.flock(fh, fcntl.LOCK_UN)
    child.join(timeout=60)
    assert child.exitcode == 0 and out.read_text() == "ran\n"
    return held


def test_a_process_waits_while_another_compiles_first(tmp_path):
    assert _held(tmp_path / "gate", no_gate=False)
    assert not _held(tmp_path / "control", no_gate=True)  # without the gate it runs at once


def test_the_first_through_marks_it_done_and_a_failure_does_not(tmp_path):
    lock, done = gate_paths(("model", 64), tmp_path)
    with pytest.raises(RuntimeError, match="out of memory"):
        first_compile(("model", 64), lambda: (_ for _ in ()).throw(RuntimeError("out of memory")),
                      tmp_path)
    assert not done.exists()  # the next process compiles
    assert first_compile(("model", 64), lambda: 7, tmp_path) == 7
    assert done.exists()
    assert first_compile(("model", 64), lambda: 8, tmp_path) == 8  # done: straight through
    # the lock is free afterwards: another holder gets it at once
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_tags_name_what_is_compiled(tmp_path):
    a, b = gate_paths(("smollm2", 64, "fp16"), tmp_path), gate_paths(("smollm2", 64, "bf16"),
                                                                      tmp_path)
    assert a != b and a == gate_paths(("smollm2", 64, "fp16"), tmp_path)
    assert all(p.parent == tmp_path for p in a)


def test_without_fcntl_the_function_is_simply_called(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_gate, "fcntl", None)
    assert first_compile("x", lambda: 3, tmp_path) == 3
    assert not any(tmp_path.iterdir())


def test_a_process_held_too_long_compiles_without_the_gate(tmp_path, capsys):
    lock, done = gate_paths("stuck", tmp_path)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a first compiler that never finishes
        t0 = time.monotonic()
        assert first_compile("stuck", lambda: 5, tmp_path, wait_s=0.5) == 5
        assert time.monotonic() - t0 >= 0.5
    out = capsys.readouterr().out
    assert f"another process compiles these graphs first ({lock}): waiting" in out
    assert "still held after 0.5 s: compiling side by side" in out
    assert not done.exists()  # it did not compile first: no marker
