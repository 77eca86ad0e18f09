"""Native CPU kernels: ``qsgd/_native_kernels.c`` compiled on first use and called via ctypes.

Two computations of :mod:`qsgd.circuit` and :mod:`qsgd.attention` are loops over a batch whose
per-element work (a few sines and a few hundred flops) eager torch can only do as dozens of
passes over memory: the statevector of a batch of small circuits and the attention's Φ by
transfer matrices. The C file computes each in one pass over blocks of 32 lanes held in L1;
compiled with ``-O3`` (and ``-march=native`` where the compiler takes it) the lane loops
vectorise. The kernels are exact to rounding, like the torch paths they accelerate, and the
tests hold them to those paths in float64.

Build: the compiler is ``$CC``, else the one Python was built with, else ``cc``/``gcc``/
``clang`` on the PATH; the library is cached under ``$QSGD_CACHE`` (default
``$XDG_CACHE_HOME/qsgd`` or ``~/.cache/qsgd``), named by a hash of the source, the compiler,
its flags and the CPU, and written atomically (several processes may build at once). Without
a compiler, or with ``QSGD_NATIVE=0`` in the environment, :func:`library` returns None and every
caller uses its torch path (same results to rounding); :func:`unavailable_reason` says why.

Threads: built with OpenMP (``-fopenmp``, tried first), the kernels split their ranges over
the OpenMP threads of the process; the libgomp the process has loaded is torch's (loaded with
torch, before the kernels), so they run on torch's own thread pool and follow
``torch.set_num_threads``, with no Python in the way and no second pool competing for the cores.
Without OpenMP, :func:`run_parallel` splits a call's range over ``torch.get_num_threads()``
Python threads (ctypes releases the GIL). The kernels' reductions are per fixed-size chunk, so
results do not depend on the thread count either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["library", "kernel", "unavailable_reason", "run_parallel", "CHUNK", "BLOCK"]

#: lanes per block and scores per partial sum in the C file (QB, CHUNK there)
BLOCK = 32
CHUNK = 4096

_SOURCE = Path(__file__).with_name("_native_kernels.c")
_BASE_FLAGS = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno"]
_lock = threading.Lock()
_state: dict[str, object] = {}

_i64, _i32 = ctypes.c_int64, ctypes.c_int32
_P = ctypes.c_void_p
_SIGNATURES = {
    "qsgd_state": [_i64, _i64, _i32, _i32, _P, _P, _i64, _P, _i32, _i32, _P, _P],
    "qsgd_chain_fwd": [_i64, _i64, _i32, _i32, _P, _P, _P, _P, _i32, _i32, _P],
    "qsgd_chain_bwd": [_i64, _i64, _i64, _i32, _i32, _P, _P, _P, _P, _i32, _i32, _P, _P, _P],
    "qsgd_line_state_fwd": [_i64, _i64, _i32, _i32, _P, _P, _P, _P, _i32, _i32, _P, _i32, _P],
    "qsgd_line_state_bwd": [_i64, _i64, _i64, _i32, _i32, _P, _P, _P, _P, _i32, _i32, _P, _i32,
                            _P, _P, _P],
    "qsgd_reduce": [_i64, _i64, _P, _i64, _i64, _P, _i64, _i64, _P],
    "qsgd_attn_fwd": [_i64, _i64, _i64, _i64, _i64, _P, _P, _i32, ctypes.c_double,
                      ctypes.c_double, _i32, _i32, _P, _P, _P, _i32, _i32, _P, _P, _P, _P],
    "qsgd_attn_bwd": [_i64, _i64, _i64, _i64, _i64, _P, ctypes.c_double, ctypes.c_double, _i32,
                      _i32, _P, _P, _P, _i32, _i32, _P, _P, _P, _P, _P, _P],
    "qsgd_sincos_array": [_i64, _P, _P, _P],
}


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0],
                 "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_tag() -> str:
    """What -march=native depends on: the CPU's feature flags where the OS lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    if os.environ.get("QSGD_CACHE"):
        return Path(os.environ["QSGD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qsgd"


def _build(cc: str, out: Path) -> str | None:
    """Compile the kernels to ``out`` (atomically); None on success, else the reason."""
    out.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *_BASE_FLAGS, *extra, str(_SOURCE), "-o", tmp, "-lm"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            res, last = None, str(err)
        if res is not None and res.returncode == 0:
            os.replace(tmp, out)
            return None
        if res is not None:
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["failed"]
            last = last[0]
        os.unlink(tmp)
    return f"compiling {_SOURCE.name} failed: {last}"


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if os.environ.get("QSGD_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "switched off by QSGD_NATIVE=0"
    if not _SOURCE.exists():
        return None, f"{_SOURCE.name} is not installed"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), cc.encode(), " ".join(_BASE_FLAGS).encode(),
                 platform.machine().encode(), _cpu_tag().encode()):
        key.update(part)
        key.update(b"\0")
    path = _cache_dir() / f"qsgd_kernels_{key.hexdigest()[:20]}.so"
    if not path.exists():
        try:
            reason = _build(cc, path)
        except OSError as err:
            reason = f"cannot write the kernel cache {path.parent}: {err}"
        if reason is not None:
            return None, reason
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, f"cannot load {path.name}: {err}"
    for name, args in _SIGNATURES.items():
        for suf in ("f32", "f64"):
            fn = getattr(lib, f"{name}_{suf}")
            fn.argtypes, fn.restype = args, None
    lib.qsgd_openmp.argtypes, lib.qsgd_openmp.restype = [], ctypes.c_int
    lib.qsgd_exp_array_f32.argtypes, lib.qsgd_exp_array_f32.restype = [_i64, _P, _P], None
    lib.qsgd_mt_bernoulli_f32.argtypes = [_P, _i64, ctypes.c_double, _P]
    lib.qsgd_mt_bernoulli_f32.restype = None
    return lib, None


def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on the first call of the process), or None when they are
    unavailable (:func:`unavailable_reason`)."""
    with _lock:
        if "lib" not in _state:
            _state["lib"], _state["reason"] = _load()
        return _state["lib"]  # type: ignore[return-value]


def kernel(name: str, dtype: torch.dtype) -> Callable[..., None]:
    """The compiled kernel ``name`` for ``dtype``: ``{name}_f64`` for float64, else
    ``{name}_f32`` (the library holds both of every kernel; :func:`library` must not be None)."""
    return getattr(library(), f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")


def unavailable_reason() -> str | None:
    """Why :func:`library` is None (None when it is not)."""
    library()
    return _state["reason"]  # type: ignore[return-value]


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, kept for the process (one per size asked for)."""
    with _lock:
        pools = _state.setdefault("pools", {})
        if workers not in pools:
            pools[workers] = ThreadPoolExecutor(max_workers=workers,
                                                thread_name_prefix="qsgd-native")
        return pools[workers]


def run_parallel(call: Callable[[int, int], None], stop: int, *, grain: int) -> None:
    """``call(start, end)`` over ``range(stop)``. Kernels built with OpenMP split the range
    over torch's own threads themselves (one call); otherwise the range is cut into pieces on
    multiples of ``grain``, one per thread (``torch.get_num_threads()``), the first in this
    thread, the others on a pool of Python threads (ctypes releases the GIL)."""
    if _state.get("openmp") is None:
        lib = library()
        _state["openmp"] = bool(lib is not None and lib.qsgd_openmp())
    if _state["openmp"]:
        call(0, stop)
        return
    threads = max(1, min(torch.get_num_threads(), -(-stop // grain)))
    if threads == 1:
        call(0, stop)
        return
    units = -(-stop // grain)
    cuts = [min(stop, (units * k // threads) * grain) for k in range(threads + 1)]
    futures = [_pool(threads - 1).submit(call, cuts[k], cuts[k + 1])
               for k in range(1, threads)]
    call(cuts[0], cuts[1])
    for f in futures:
        f.result()
