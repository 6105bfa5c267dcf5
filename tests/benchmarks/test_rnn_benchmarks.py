"""The recurrent-net memory benchmark's own machinery: the live saved-tensor meter (the adding-task study moved to
studies/rnn_adding.yaml; its test is tests/studies/test_rnn_adding_study.py)."""

from __future__ import annotations

import torch

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
