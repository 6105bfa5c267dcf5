"""The recurrent-net benchmarks' own machinery: the live saved-tensor meter and the adding-study plan."""

from __future__ import annotations

import argparse

import torch

from benchmarks.rnn_adding import plan, variant
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
