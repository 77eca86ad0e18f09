"""What one epoch would cost on a QPU: circuit executions × shots, at stated shot rates.

Circuits per epoch. Every attention score s is one circuit C(a·s; w) (PAPER.md: Φ_ijh for
every query i, key j, head h, layer). A training step needs its forward value and, for
backpropagation, ∂Φ/∂α_g of every gate angle α_g = a_q·s + w_g (∂Φ/∂s = Σ_g a_q(g) ∂Φ/∂α_g,
∂Φ/∂w_g = ∂Φ/∂α_g, ∂Φ/∂a_q = Σ_{g on q} s ∂Φ/∂α_g): by the parameter-shift rule (Mitarai et
al. 2018; Schuld et al. 2019) two shifted circuits per gate, so 1 + 2G circuits per score,
G = 2·depth·n gates that carry the data (every Ry and Rz). Evaluation (forward only) adds one
circuit per score of the test and validation passes. Each circuit runs S shots.

Time per shot on the device: the circuit's duration from the backend's calibrated gate and
measurement durations (ablations.quantum.checks.transpiled_facts) plus the repetition delay
between shots (the backend's ``default_rep_delay``); a per-circuit overhead (loading and
binding each parameter set) and a per-step latency (a step's circuits depend on the
parameters the previous step produced, so every step is at least one job round trip) are
assumptions stated in the table, varied over a range.
"""

from __future__ import annotations

__all__ = ["SCENARIOS", "epoch_circuits", "qpu_rows", "LLM_SHAPE", "GSM8K_TOKENS"]

#: assumed per-circuit overhead (s) and per-step latency (s): (name, overhead, latency, what)
SCENARIOS = (
    ("shot-limited", 0.0, 0.0, "shots back to back: duration + repetition delay only"),
    ("session", 1e-3, 2.0, "1 ms per circuit (parameter binding and loading), 2 s per step "
     "(one job round trip inside a reserved session)"),
    ("fair-share queue", 1e-3, 60.0, "as session, but each step's job waits ~1 min in the "
     "shared queue (open-plan queues are often far longer)"),
)

#: Llama-3.2-1B (PAPER.md's LLM): 16 layers, 32 query heads
LLM_SHAPE = {"layers": 16, "heads": 32}
#: mean tokens per GSM8K training example (question + answer), from the llm-paper grid's
#: records (results/llm-paper/runs.jsonl: tokens_per_s × train_seconds / steps = 217 with the
#: SmolLM2 tokenizer; Llama 3's is of similar length on English text); 7,473 examples
GSM8K_TOKENS = {"examples": 7473, "tokens": 217}


def epoch_circuits(*, sequences: int, eval_sequences: int, heads: int, layers: int,
                   seq_len: float, n_qubits: int, depth: int, causal: bool = False) -> dict:
    """Circuits of one epoch: forward scores, parameter-shift circuits, evaluation."""
    pairs = seq_len * (seq_len + 1) / 2 if causal else seq_len**2
    scores = sequences * heads * layers * pairs
    gates = 2 * depth * n_qubits
    return {"scores": scores, "gates": gates,
            "train_circuits": scores * (1 + 2 * gates),
            "eval_circuits": eval_sequences * heads * layers * pairs}


def qpu_rows(model: str, circ: dict, steps: int, shots: tuple[int, ...], shot_s: float,
             simulator_s: float | None, simulator_what: str) -> list[dict]:
    """One row per (shots, scenario): circuits, shots and projected seconds of one epoch."""
    rows = []
    total = circ["train_circuits"] + circ["eval_circuits"]
    for S in shots:
        for name, overhead, latency, what in SCENARIOS:
            sec = total * (S * shot_s + overhead) + steps * latency
            rows.append({"model": model, "shots": S, "scenario": name, "assumption": what,
                         "circuits_per_epoch": total, "shots_per_epoch": total * S,
                         "qpu_seconds": sec, "qpu_years": sec / 3.156e7,
                         "simulator_seconds": simulator_s, "simulator": simulator_what,
                         "ratio_to_simulator": sec / simulator_s if simulator_s else None})
    return rows
