"""The LLM bench's Hugging Face peer (ablations/llm/bench.py) on a CPU, tiny random model,
float32, eager: it trains on the arm's packed rows with the arm's loss (same scored tokens,
document-causal attention from restarting position ids, same gradients from the same
weights), and the bench writes its row, the loss check and every arm row's ratio_to_peer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ablations import llm
from qsgd.models.llama import IGNORE
from tests import test_llm

pytest.importorskip("transformers")

# the LLM arm's fixtures: a generated GSM8K of 24 training and 6 test examples; one thread
data_dir, _one_thread = test_llm.data_dir, test_llm._one_thread


def _session(data_dir):
    from ablations.llm.session import epoch_batches, open_session
    from ablations.llm.train import reset_weights

    o = llm.LLMOptions.from_dict({**test_llm.TINY, "data_dir": str(data_dir), "amp": False})
    sess = open_session(o, 0)
    reset_weights(sess)
    return sess, epoch_batches(sess, 0)


def _arm_args(b, s):
    return b.ids[s], b.pos[s], b.doc[s], b.loss_idx[s], b.loss_tgt[s], b.n_loss[s]


def test_peer_labels_score_the_tokens_the_arm_scores(data_dir):
    from ablations.llm.bench import _peer_labels

    _, b = _session(data_dir)
    lab = _peer_labels(b, torch.device("cpu"))
    tgt = torch.from_numpy(b.packed.tgt)
    assert lab.shape == tgt.shape
    assert ((lab != IGNORE).flatten(1).sum(1).numpy() == b.packed.n_loss).all()
    # HF shifts inside its loss: position j's target is label j + 1
    assert torch.equal(lab[..., 1:], tgt[..., :-1]) and (lab[..., 0] == IGNORE).all()


def test_peer_computes_the_arms_loss_and_gradients_on_packed_rows(data_dir):
    from ablations.llm.bench import _hf_model, _peer_labels

    sess, b = _session(data_dir)
    assert int(b.doc[0].max()) >= 1  # several examples share a row: the mask matters
    hf = _hf_model(sess)
    lab = _peer_labels(b, sess.device)
    for s in range(b.steps):
        arm = sess.model.loss(*_arm_args(b, s), None)
        peer = hf(input_ids=b.ids[s], position_ids=b.pos[s], labels=lab[s]).loss
        assert float(peer.detach()) == pytest.approx(float(arm.detach()), rel=1e-5), s
        if s == 0:
            arm.backward()
            peer.backward()
    grads = dict(hf.named_parameters())
    for name, p in sess.model.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-4, atol=1e-6)
    # plain causal attention over the whole row (no position ids) is another loss, by far
    # more than the tolerance above (small random weights: attention matters little)
    with torch.no_grad():
        causal = float(hf(input_ids=b.ids[0], labels=lab[0]).loss)
        arm0 = float(sess.model.loss(*_arm_args(b, 0), None))
    assert abs(causal - arm0) > 10 * 1e-5 * arm0


def _bench(data_dir, out, *extra):
    from ablations.llm.cli import main

    sets = [f"--set={k}={v}" for k, v in {**test_llm.TINY, "data_dir": str(data_dir),
                                          "amp": False, "eval_questions": 0}.items()]
    assert main(["bench", *sets, "--variants", "adamw,sin-l0.5", *extra,
                 "--out", str(out)]) == 0
    with open(out / "throughput_bench.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_bench_writes_the_peer_row_the_loss_check_and_ratio_to_peer(data_dir, tmp_path):
    from ablations.llm.bench import BENCH_COLUMNS, PEER

    rows = _bench(data_dir, tmp_path / "b")
    assert list(rows[0]) == BENCH_COLUMNS
    check = next(r for r in rows if r["config"].startswith("check: HF peer vs arm loss"))
    peer_loss, arm_loss = (float(x) for x in check["value"].split(" vs "))
    assert peer_loss == pytest.approx(arm_loss, abs=2e-5)
    peer, = [r for r in rows if r["config"].startswith(PEER)]
    assert "eager" in peer["config"] and peer["variant"] == "adamw"
    assert float(peer["tokens_per_s"]) > 0 and float(peer["ratio_to_peer"]) == 1.0
    arm = [r for r in rows if r["config"].startswith("arm loop")]
    assert [r["variant"] for r in arm] == ["adamw", "sin-l0.5"]
    for r in arm:
        assert float(r["ratio_to_peer"]) == pytest.approx(
            float(r["tokens_per_s"]) / float(peer["tokens_per_s"]), rel=1e-3)
        assert r["peak_mem_mib"] == ""  # CUDA only
    # the same loop (adamw is AdamW), the same rows, loss and schedule: the same epoch
    assert float(peer["mean_train_loss"]) == pytest.approx(float(arm[0]["mean_train_loss"]),
                                                           rel=1e-4)
    # the matrix-product floor: its own row, with a ratio to the peer, explained in the md
    floor, = [r for r in rows if r["config"].startswith("floor: ")]
    assert float(floor["ratio_to_peer"]) == pytest.approx(
        float(floor["tokens_per_s"]) / float(peer["tokens_per_s"]), rel=1e-3)
    assert "fp32" in floor["config"] and floor["value"].endswith("TFLOP/s")
    md = (tmp_path / "b" / "throughput_bench.md").read_text()
    assert "The `floor` row times the step's matrix products alone" in md
    # the figure beside the table, linked from it
    assert (tmp_path / "b" / "throughput_bench.png").stat().st_size > 5000
    assert "](throughput_bench.png)" in md
    assert "ratio_to_peer" in md and "one FLOP count for every row" in md
    # provenance: the commit and the command that made the report, which reproduces it
    machine = md.split("## Machine", 1)[1]
    assert "- commit: " in machine and "- torch: " in machine
    assert "- command: `python -m ablations.llm bench " in machine and "--out" in machine
    rows = _bench(data_dir, tmp_path / "n", "--no-peer")
    assert not [r for r in rows if r["config"].startswith(("HF", "check: HF"))]
    assert all(r["ratio_to_peer"] == "" for r in rows)


def test_matmul_floor_counts_the_step_s_products():
    """The floor's FLOPs are the decoder's and the LM head's of train_flops (no attention) at
    the rows it was given; its rate is FLOPs over its seconds."""
    from ablations.llm.bench import matmul_floor
    from qsgd.models.llama import PRESETS

    shape = PRESETS["tiny"]
    f = matmul_floor(shape, 96, 40, torch.device("cpu"), torch.float32, reps=2)
    assert f["flops"] == pytest.approx(shape.train_flops(96, 40, 0.0), rel=1e-12)
    assert f["seconds"] > 0 and f["tflops"] == pytest.approx(f["flops"] / f["seconds"] / 1e12)


def test_bench_help_documents_the_peer(capsys):
    from ablations.llm.cli import main

    with pytest.raises(SystemExit) as err:
        main(["bench", "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    assert "--no-peer" in text and "ratio_to_peer" in text and "torch.compile" in text


def test_segments_take_the_median_and_the_spread():
    from ablations.llm.bench import _segments

    res = [dict(seconds=s, steps=5) for s in (1.2, 0.9, 1.0)]
    assert _segments(res) == (1.0, 5, "30.0%")  # (1.2 - 0.9) / 1.0
    assert _segments(res[:1]) == (1.2, 5, "0.0%")


def test_bench_interleaves_the_rows_in_rotating_rounds(data_dir, tmp_path, monkeypatch):
    from ablations.llm import bench

    calls = []
    real_epoch, real_time = bench.train_epoch, bench.HFPeer.time

    def slow_first(key, res):
        # a row's first segment (the rehearsal's) 10^4 times slower: it must not count
        if sum(c[0] == key for c in calls) == 1:
            res = {**res, "seconds": res["seconds"] * 1e4}
        return res

    def spy_epoch(sess, b, variant, lr, noise_seed, o, max_steps=0):
        calls.append((variant.id, max_steps))
        res = real_epoch(sess, b, variant, lr, noise_seed, o, max_steps=max_steps)
        return slow_first(variant.id, res)

    def spy_time(self, steps=0):
        calls.append(("peer", steps))
        return slow_first("peer", real_time(self, steps))

    monkeypatch.setattr(bench, "train_epoch", spy_epoch)
    monkeypatch.setattr(bench.HFPeer, "time", spy_time)
    rows = _bench(data_dir, tmp_path / "r", "--rounds", "2", "--steps", "2")
    # 2 timed steps in 2 rounds: one step a segment, after the untimed rehearsal of every row
    # (the same one step each); round 2 starts one row further on
    rehearsal = [("peer", 1), ("adamw", 1), ("sin-l0.5", 1)]
    assert calls == rehearsal + [("peer", 1), ("adamw", 1), ("sin-l0.5", 1),
                                 ("adamw", 1), ("sin-l0.5", 1), ("peer", 1)]
    assert list(rows[0]) == bench.BENCH_COLUMNS
    assert bench.BENCH_COLUMNS.index("spread") == bench.BENCH_COLUMNS.index("step_ms") + 1
    peer, = [r for r in rows if r["config"].startswith(bench.PEER)]
    arm = [r for r in rows if r["config"].startswith("arm loop")]
    assert [r["variant"] for r in arm] == ["adamw", "sin-l0.5"]  # one row per variant
    for r in [peer, *arm]:
        assert "first 1 step, median of 2 rounds" in r["config"]
        assert r["spread"].endswith("%") and float(r["spread"][:-1]) >= 0
        # the rehearsal's 10^4-times-slower segment is none of the timed ones
        assert float(r["spread"][:-1]) < 1000
        # 1 of the epoch's 9 steps timed: the epoch's seconds are 9 times the median step's
        assert float(r["epoch_s"]) == pytest.approx(9 * float(r["step_ms"]) / 1e3, abs=0.01)
    for r in arm:
        assert float(r["ratio_to_peer"]) == pytest.approx(
            float(r["tokens_per_s"]) / float(peer["tokens_per_s"]), rel=1e-3)
    # the first round's step from the base weights: peer and arm train on the same loss
    assert float(peer["mean_train_loss"]) == pytest.approx(float(arm[0]["mean_train_loss"]),
                                                           rel=1e-4)
    md = (tmp_path / "r" / "throughput_bench.md").read_text()
    assert "2 interleaved rounds" in md and "rotating by one row" in md
    assert "untimed rehearsal round of 1 step a row" in md


def test_bench_profiles_the_arm_and_the_peer(data_dir, tmp_path, capsys):
    out = tmp_path / "p"
    _bench(data_dir, out, "--rounds", "1", "--steps", "2", "--profile", "2")
    printed = capsys.readouterr().out
    for name in ("profile_arm.txt", "profile_peer.txt"):
        text = (out / name).read_text()
        assert "aten::" in text and "Self CPU" in text, name
        assert str(out / name) in printed


def test_kernel_categories_sorts_a_profile_s_kernels_by_what_they_do(tmp_path):
    from ablations.llm.bench import _kernel_table, kernel_categories, write_kernels_csv

    # kernel names as a profile of the arm at 1B printed them (microseconds of 2 steps)
    kernels = [("nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTN", 900.0),
               ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", 600.0),
               ("triton_tem_fused_flex_attention_backward_transpose_view_3", 390.0),
               # the peer's cuDNN attention: its name says wgmma, yet it is no product
               ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3", 610.0),
               ("adamw_kernel", 8000.0),
               ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>", 40.0),
               ("triton_red_fused__log_softmax__to_copy_prepare_softmax_2", 900.0),
               ("triton_poi_fused__unsafe_view_cat_mul_silu_silu_backward_5", 300.0),
               ("triton_poi_fused__unsafe_view_cat_mul_silu_silu_backward_5", 300.0),
               ("triton_per_fused__to_copy_add_div_expand_mul_pow_sum_4", 60.0),
               ("Memset (Device)", 10.0), ("some_vendor_kernel", 4.0),
               ("void at::native::vectorized_elementwise_kernel<4, FillFunctor<float>>", 6.0)]
    rows = kernel_categories(kernels, steps=2)
    by = {r["category"]: r for r in rows}
    assert by["matrix products"]["ms_per_step"] == pytest.approx(0.75)
    assert by["matrix products"]["largest"].endswith("NTN")
    assert by["attention"]["launches_per_step"] == 1
    assert by["attention"]["ms_per_step"] == pytest.approx(0.5)
    assert by["attention"]["largest"].startswith("cudnn_generated")
    assert by["optimizer and clipping"]["ms_per_step"] == pytest.approx(4.02)
    assert by["loss"]["ms_per_step"] == pytest.approx(0.45)  # not counted as elementwise
    el = by["Inductor's elementwise kernels and norms"]
    assert el["ms_per_step"] == pytest.approx(0.33) and el["launches_per_step"] == 1.5
    assert "silu_backward" in el["largest"]
    assert by["copies and fills"]["ms_per_step"] == pytest.approx(0.008)  # FillFunctor too
    assert by["other"]["largest"] == "some_vendor_kernel"
    assert [r["category"] for r in rows][0] == "optimizer and clipping"  # by time
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    table = _kernel_table(kernels, 2, wall_s=0.01)
    assert "6.06 ms of kernels a step against 5.00 ms of wall clock" in table
    assert "| optimizer and clipping | 4.02 | 66.3% | 1 | `adamw_kernel` |" in table
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        kernel_categories(kernels, steps=0)

    path = write_kernels_csv(kernels, 2, tmp_path / "profile_kernels.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kernel"] for r in rows][:2] == [
        "adamw_kernel", "nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTN"]
    silu = next(r for r in rows if "silu_backward" in r["kernel"])
    assert (silu["category"], float(silu["us"]), silu["launches"], silu["steps"]) == (
        "Inductor's elementwise kernels and norms", 600.0, "2", "2")
    assert len(rows) == len(kernels) - 1  # the two launches of one kernel are one row


def test_paired_ratio_is_the_median_of_the_rounds_adamw_over_variant():
    from ablations.llm.bench import _paired

    ref = [dict(seconds=s) for s in (1.0, 2.0, 1.0)]   # adamw's rounds (drift in round 2)
    var = [dict(seconds=s) for s in (1.1, 2.2, 0.9)]
    out = _paired(var, ref)
    assert out["paired_ratio"] == round(1 / 1.1, 4)  # median of 1/1.1, 2/2.2, 1/0.9
    assert out["paired_range"] == f"{1 / 1.1:.3f}–{1 / 0.9:.3f}"
    assert _paired(var, None) == {} and _paired(var, ref[:2]) == {}


def test_bench_balanced_rounds_put_every_row_in_every_position(data_dir, tmp_path, monkeypatch):
    from ablations.llm import bench

    calls, seconds = [], {}
    real_epoch, real_time = bench.train_epoch, bench.HFPeer.time

    def spy_epoch(sess, b, variant, lr, noise_seed, o, max_steps=0):
        calls.append(variant.id)
        res = real_epoch(sess, b, variant, lr, noise_seed, o, max_steps=max_steps)
        seconds.setdefault(variant.id, []).append(res["seconds"])
        return res

    def spy_time(self, steps=0):
        calls.append("peer")
        return real_time(self, steps)

    monkeypatch.setattr(bench, "train_epoch", spy_epoch)
    monkeypatch.setattr(bench.HFPeer, "time", spy_time)
    rows = _bench(data_dir, tmp_path / "r", "--rounds", "0", "--steps", "3")
    assert calls[:3] == ["peer", "adamw", "sin-l0.5"]  # the untimed rehearsal
    calls = calls[3:]
    seconds = {k: v[1:] for k, v in seconds.items()}
    rounds = [calls[i:i + 3] for i in range(0, 9, 3)]  # 3 rows: 3 rounds of one step
    assert len(calls) == 9 and all(sorted(r) == ["adamw", "peer", "sin-l0.5"] for r in rounds)
    for pos in range(3):  # each row once in each position
        assert sorted(r[pos] for r in rounds) == ["adamw", "peer", "sin-l0.5"]
    sin, = [r for r in rows if r["config"].startswith("arm loop") and r["variant"] == "sin-l0.5"]
    per_round = [a / v for a, v in zip(seconds["adamw"], seconds["sin-l0.5"])]
    assert float(sin["paired_ratio"]) == pytest.approx(float(np.median(per_round)), abs=1e-4)
    md = (tmp_path / "r" / "throughput_bench.md").read_text()
    assert "every row once in every position" in md and "paired_ratio" in md


def test_bench_rejects_negative_rounds(data_dir, tmp_path, capsys):
    from ablations.llm.cli import main

    assert main(["bench", f"--set=data_dir={data_dir}", "--rounds", "-1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --rounds must be >= 1, or 0 for one round per row, got -1"]
    assert main(["bench", "--profile", "-1", "--out", str(tmp_path)]) == 2
    assert "--profile must be >= 0, got -1" in capsys.readouterr().err
