"""The runner on Dask distributed: the same grid from a laptop to a cluster.

Dask's ``Client.get_executor()`` is a ``concurrent.futures.Executor``, which is what
:func:`ablations.runner.run_grid` takes; this module builds one for a grid and nothing more (no
scheduler of ours). ``python -m ablations run CONFIG --executor dask`` starts a
``LocalCluster``; ``--executor dask://HOST:PORT`` connects to a running scheduler
(``dask scheduler``, ``dask worker``, or ``dask_jobqueue.SLURMCluster``: README, "Sweeps
beyond one machine").

* Workers: the runner's one rule (:func:`ablations.runner.worker_layout`): for a CPU arm one
  worker per core (or ``workers``), for a GPU arm ``runs_per_gpu`` per visible GPU; each worker
  a process with one Dask thread, so it holds one run at a time, as a process-pool worker does.
* Resources: a GPU arm's every run asks for one ``GPU`` (a worker resource), so its runs go only
  to workers started with ``--resources GPU=1`` and never more at once than such slots; on one
  machine each local worker holds one slot, pinned to its GPU (``CUDA_VISIBLE_DEVICES`` set by
  its name, ``i % GPUs``, before torch touches CUDA), which packs ``runs_per_gpu`` runs on each
  GPU as the process pool does.
* Threads: before each run the worker sets torch's threads as a process-pool worker sets
  them (one per run for a CPU arm, a share of the cores for packed GPU workers) and imports the
  arm's module (an arm registered outside the built-ins runs there too): on a CPU the records
  equal the process pool's bit for bit.
* Records: the tasks return records; only this process appends them (``runs.jsonl`` and its
  resume stay as they are). Keys are not content hashes (``pure=False``): a run that the runner
  retries is a new task.
* Failures: a run that raises comes back as :class:`ablations.failures.RunError`, and the runner
  retries it once, then logs it. A worker that dies (killed, out of memory) is restarted by its
  nanny and its run is rescheduled by the scheduler, up to
  ``distributed.scheduler.allowed-failures`` times (Dask's default 3); past that the run fails
  with Dask's ``KilledWorker`` and is logged like any failure.
* The dashboard's address is printed when the executor starts (the ``dask`` extra brings
  bokeh, which serves it).

Dask is imported inside the functions that need it: importing this module costs nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
from typing import Any

__all__ = ["ExecutorError", "parse_executor", "dask_executor", "DaskExecutor",
           "local_cluster_executor", "connect_executor"]

SCHEME = "dask://"
#: environment variables through which Dask's nanny caps a worker's threads at one
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: how long to wait for a scheduler to answer
CONNECT_TIMEOUT = "10s"


class ExecutorError(ValueError):
    """The Dask executor cannot start (no scheduler at the address, Dask not installed); the
    message names the value and what to do."""


def parse_executor(text: str, workers: int | None = None) -> str:
    """``processes``, ``dask`` or ``dask://HOST:PORT`` (port 1–65535), normalised; anything
    else raises :class:`ExecutorError` listing the valid forms, as does a number of
    ``workers`` with a scheduler's address (its workers are those started for it)."""
    value = str(text).strip()
    if value in ("processes", "dask"):
        return value
    if value.startswith(SCHEME):
        host, sep, port = value[len(SCHEME):].rpartition(":")
        if sep and host and "/" not in host and port.isdigit() and 0 < int(port) < 65536:
            if workers is not None:
                raise ExecutorError(f"executor {value}: workers={workers} does not apply; a "
                                    "running scheduler's workers are those started for it "
                                    "(dask worker ...)")
            return f"{SCHEME}{host}:{int(port)}"
    raise ExecutorError(f"executor {text!r}: expected processes, dask (a local cluster) or "
                        "dask://HOST:PORT (a running scheduler, e.g. dask://127.0.0.1:8786)")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError("the Dask executor needs Dask distributed: pip install "
                            "'qsgd[dask]'") from None
    return distributed


#: the GPU id this worker process pinned itself to (None: not pinned)
_pinned: str | None = None


class _InWorker:
    """``fn(*args)`` in a Dask worker, after setting the process up as the runner's pool sets
    a worker up: pinned to its GPU by the worker's name (``devices``), torch's threads
    (``threads``; 0 leaves them), the arm's module imported. Picklable."""

    def __init__(self, fn, modules: tuple[str, ...], threads: int, devices: tuple[str, ...]):
        self.fn, self.modules, self.threads, self.devices = fn, modules, threads, devices

    def __call__(self, *args, **kwargs):
        from .runner import _import_all

        global _pinned
        if self.devices and _pinned is None:
            from distributed import get_worker

            name = get_worker().name  # a local cluster's workers are 0, 1, …; a restarted
            _pinned = self.devices[int(name) % len(self.devices)]  # one keeps its name
            os.environ["CUDA_VISIBLE_DEVICES"] = _pinned
        if self.threads:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        _import_all(self.modules)
        return self.fn(*args, **kwargs)


class DaskExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` over a Dask ``client`` for ``arm``'s runs: each task
    set up by :class:`_InWorker` (``threads``, ``devices``), a GPU arm's asking for one ``GPU``
    resource. ``owned``: the client and cluster closed by :meth:`shutdown` (none: both are the
    caller's). ``kind``: how the sweep log names it."""

    def __init__(self, client, *, arm: str = "classifier", threads: int = 1,
                 devices: tuple[str, ...] = (), owned: tuple = (), kind: str = "dask",
                 resources: str | None = None):
        from .arms import get_arm

        a = get_arm(arm)
        self.client, self.kind, self._owned = client, kind, owned
        self._gpu = (resources or a.resources) == "gpu"
        resources = {"resources": {"GPU": 1}} if self._gpu else {}
        self._inner = client.get_executor(pure=False, **resources)
        self._setup = ((type(a).__module__,), int(threads), tuple(devices))
        self.workers = len(client.scheduler_info()["workers"])

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard (None when it serves none: bokeh missing)."""
        info = self.client.scheduler_info()
        return self.client.dashboard_link if "dashboard" in info.get("services", {}) else None

    def submit(self, fn, /, *args, **kwargs):
        return self._inner.submit(_InWorker(fn, *self._setup), *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking runs; ``cancel_futures`` or not ``wait``: cancel those not finished.
        Then close what this executor owns (its client, its local cluster)."""
        self._inner.shutdown(wait=wait and not cancel_futures)
        for thing in self._owned:
            thing.close()
        self._owned = ()


def _announce(ex: DaskExecutor, where: str) -> None:
    link = ex.dashboard_link
    print(f"Dask: {where}, {ex.workers} worker(s); dashboard "
          + (link if link else "not served (pip install bokeh>=3.1)"), file=sys.stderr,
          flush=True)


def local_cluster_executor(arm: str = "classifier", workers: int | None = None,
                           runs_per_gpu: int = 1, dashboard: str = ":8787",
                           announce: bool = True, resources: str | None = None
                           ) -> DaskExecutor:
    """A ``LocalCluster`` laid out by :func:`ablations.runner.worker_layout` (one thread per
    worker process; a GPU arm's workers one ``GPU`` slot each) and an executor over it that
    closes it on shutdown. ``dashboard``: the dashboard's address (``:0``: any free port;
    Dask takes another port when 8787 is taken and warns). ``resources``: the grid's (None:
    the arm's)."""
    import logging

    from .runner import worker_layout

    distributed = _distributed()
    import dask

    n, threads, devices = worker_layout(arm, workers, runs_per_gpu, resources)
    from .arms import get_arm

    gpu = (resources or get_arm(arm).resources) == "gpu"
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if threads == 0:  # torch's default threads, as an unpacked process-pool worker has them
        environ = {k: v for k, v in environ.items() if k not in THREAD_VARS}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        # memory_limit 0: a worker is not paused or killed at a share of the host's memory,
        # like a process-pool worker (a run's memory is the arm's business)
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, memory_limit=0,
            resources={"GPU": 1} if gpu else None, dashboard_address=dashboard,
            silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    ex = DaskExecutor(client, arm=arm, threads=threads, devices=tuple(devices),
                      owned=(client, cluster), kind="dask", resources=resources)
    if announce:
        _announce(ex, "local cluster")
    return ex


def connect_executor(address: str, arm: str = "classifier", announce: bool = True,
                     resources: str | None = None) -> DaskExecutor:
    """An executor over the scheduler at ``address`` (``dask://HOST:PORT`` or
    ``tcp://HOST:PORT``); its workers are whoever joins it. CPU runs get one torch thread
    each, GPU runs the worker's own setting; a GPU arm warns when no worker offers a ``GPU``
    resource yet (its runs wait for one). ``resources``: the grid's (None: the arm's)."""
    import warnings

    from .arms import get_arm

    distributed = _distributed()
    tcp = "tcp://" + address[len(SCHEME):] if address.startswith(SCHEME) else address
    try:
        client = distributed.Client(tcp, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise ExecutorError(f"executor {address}: no Dask scheduler answers at {tcp} "
                            f"({' '.join(str(err).split())[:200]}); start one with "
                            "`dask scheduler` and its workers with `dask worker "
                            f"{tcp}`") from None
    gpu = (resources or get_arm(arm).resources) == "gpu"
    ex = DaskExecutor(client, arm=arm, threads=0 if gpu else 1, owned=(client,),
                      kind="dask-scheduler", resources=resources)
    if gpu:
        workers = client.scheduler_info()["workers"].values()
        if not any(w.get("resources", {}).get("GPU") for w in workers):
            warnings.warn(f"no worker of the scheduler at {tcp} offers a GPU resource yet: "
                          f"the {arm} arm's runs wait for one (dask worker {tcp} --nthreads 1 "
                          "--resources GPU=1, one per GPU and CUDA_VISIBLE_DEVICES)",
                          RuntimeWarning, stacklevel=2)
    if announce:
        _announce(ex, f"scheduler {tcp}")
    return ex


def dask_executor(kind: str, *, arm: str = "classifier", workers: int | None = None,
                  runs_per_gpu: int = 1, **kwargs: Any) -> DaskExecutor:
    """The executor ``kind`` names (:func:`parse_executor`): ``dask`` a local cluster of
    ``workers`` (``runs_per_gpu`` per GPU for a GPU arm), ``dask://HOST:PORT`` a running
    scheduler."""
    kind = parse_executor(kind, workers)
    if kind == "dask":
        return local_cluster_executor(arm, workers, runs_per_gpu, **kwargs)
    if not kind.startswith(SCHEME):
        raise ExecutorError(f"executor {kind!r} is not a Dask one")
    return connect_executor(kind, arm, **kwargs)
