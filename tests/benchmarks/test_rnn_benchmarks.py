"""The recurrent-net benchmarks' own machinery: the live saved-tensor meter and the adding-study plan."""

from __future__ import annotations

import argparse

import torch

from benchmarks.rnn_adding import PREREGISTERED, plan, prereg_goal, settings_label, variant
from benchmarks.rnn_memory import SavedTensorMeter


def test_meter_counts_live_saved_bytes_and_releases_them_after_backward():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(16, 64)

    def chain(h, steps):
        for _ in range(steps):
            h = torch.tanh(h @ w)
        return h

    full = SavedTensorMeter([w])
    with full.hooks():
        chain(x, 10).sum().backward()
    windowed = SavedTensorMeter([w])
    with windowed.hooks():
        h = x
        for _ in range(5):
            h = chain(h.detach(), 2)
            h.sum().backward()
    assert full.live == 0 and windowed.live == 0  # every graph freed
    one = 16 * 64 * 4  # bytes of one (16, 64) float tensor
    assert full.peak == 11 * one  # the input of the first matmul, then each tanh output (shared by the next matmul)
    assert windowed.peak == 3 * one  # one window's graph at a time: its input and two outputs
    assert windowed.packed == 15 * one  # 5 windows x 3: a window's input is the previous window's output
    assert w.grad is not None


def test_adding_plan_pairs_methods_by_seed():
    args = argparse.Namespace(study="fptt", seq_lens=[500], seeds=2, hidden=64, steps=10, batch=32, epoch_batches=500,
                              lr=1e-3, alpha=0.5, no_reset=False, cells=["lstm", "irnn"], cell_seq_len=100)
    names = [r["name"] for r in plan(args)]
    assert names == ["lstm_fptt_T500_h64_n10_s0", "lstm_bptt_T500_h64_n10_s0", "lstm_fptt_T500_h64_n10_s1",
                     "lstm_bptt_T500_h64_n10_s1"]
    assert all(variant(r) == "" for r in plan(args))
    args.study = "cells"
    assert [r["cell"] for r in plan(args)] == ["lstm", "irnn", "lstm", "irnn"]


def test_adding_pilot_settings_name_their_runs_and_stay_out_of_the_study_groups():
    args = argparse.Namespace(study="fptt", seq_lens=[500], seeds=1, hidden=128, steps=10, batch=128,
                              epoch_batches=10, lr=3e-3, alpha=0.5, no_reset=False, cells=["lstm"], cell_seq_len=100)
    runs = plan(args)
    assert runs[0]["name"] == "lstm_fptt_T500_h128_n10_b128_e10_lr0.003_s0"
    assert variant(runs[0]) == "_h128_b128_e10_lr0.003"
    args.alpha, args.no_reset = 0.1, True
    assert plan(args)[0]["name"] == "lstm_fptt_T500_h128_n10_b128_e10_lr0.003_a0.1_noreset_s0"
    assert variant({"hidden": 64, "batch": 32, "epoch_batches": 500}) == ""  # runs written before lr was recorded


def test_preregistered_goal_counts_only_its_registered_seeds_and_needs_all_of_them():
    cfg = PREREGISTERED[0]
    # the registered run names (what `run` writes) carry the registered variant, so the summary finds them
    args = argparse.Namespace(study="fptt", seq_lens=[500], seeds=4, hidden=128, steps=cfg["steps"], batch=128,
                              epoch_batches=cfg["steps"], lr=3e-3, alpha=1e-6, no_reset=True, cells=["lstm"],
                              cell_seq_len=100)
    runs = plan(args)
    assert {variant(r) for r in runs} == {cfg["variant"]}
    assert settings_label(runs[0]).startswith(f"prereg {cfg['label']}")

    def rows(mses):
        return [{"seed": s, "test_mse": m, "steps": cfg["steps"]} for s, m in mses.items()]

    key = "lstm_{}_T500_n%d%s" % (cfg["steps"], cfg["variant"])
    # seed 0 (the pilot) is excellent for FPTT, the registered seeds are not: the goal must not be met
    groups = {key.format("fptt"): rows({0: 0.001, 1: 0.16, 2: 0.16, 3: 0.16}),
              key.format("bptt"): rows({0: 0.16, 1: 0.16, 2: 0.16, 3: 0.16})}
    g = prereg_goal(groups, cfg)
    assert g["complete"] and not g["met"] and 0 not in g["fptt"]
    assert abs(g["fptt_mean"] - 0.16) < 1e-12
    groups[key.format("fptt")] = rows({1: 0.01, 2: 0.02, 3: 0.03})
    assert prereg_goal(groups, cfg)["met"]
    # one BPTT seed missing: not decided, whatever the means
    groups[key.format("bptt")] = rows({1: 0.16, 2: 0.16})
    g = prereg_goal(groups, cfg)
    assert not g["complete"] and not g["met"]
    groups[key.format("bptt")] = rows({1: 0.16, 2: 0.16, 3: 0.10})  # BPTT mean 0.14 < 0.15
    assert not prereg_goal(groups, cfg)["met"]
    assert prereg_goal({}, cfg) is None
