"""Learned token downsampling between transformer layers (Bidart thesis, docs/transformer_search.md).

**Project design, not the author's**: no paper text or code of the chapter is public. Two operators shorten a
token sequence ``h`` of shape (B, N, D) with a key-padding mask ``m`` (B, N) (1 = real token), always keeping the
first ``keep_first`` tokens ([CLS], and e.g. a prefix) unchanged and in place:

* :class:`TopKTokenDownsample` -- learned token scoring with top-k selection. A score ``s_i = w . LN(h_i) + b`` per
  token; among the tokens after the prefix, padding scores ``-inf``; the ``k = ceil(rate * (N - keep_first))``
  best are kept *in their original order*. The kept tokens are multiplied by a straight-through gate
  ``g_i / stopgrad(g_i)`` with ``g_i = sigmoid(s_i)`` (computed in log space): its value is exactly 1 (the kept hidden states are the
  pretrained layer's output, bit for bit), its gradient ``dL/ds_i = (dL/dh_i . h_i) (1 - g_i)`` trains the scorer
  by the task loss ("would up-weighting this token help?"), so the scorer learns with the network and no extra
  pretraining.
* :class:`LearnedPoolDownsample` -- learned pooling: the tokens after the prefix are cut into windows of
  ``stride = round(1 / rate)`` consecutive tokens; each window becomes one token, the softmax-weighted mean
  ``sum_j softmax(s)_j h_j`` of its real tokens with the same kind of learned score ``s`` (a Funnel-style pool
  whose weights are learned). A window of padding only is padding.

Both take the rate at call time (``forward(h, m, rate)``), so one module serves every rate of a search space
(weight sharing in the one-shot supernet), and return ``(h', m', index)`` where ``index`` (B, N') holds the
source position of each output token (for top-k) or the first position of its window (for pooling).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LearnedPoolDownsample", "TokenDownsample", "TopKTokenDownsample", "downsampled_length",
           "DOWNSAMPLE_KINDS"]

DOWNSAMPLE_KINDS = ("topk", "pool")


def downsampled_length(n: int, rate: float, kind: str = "topk", keep_first: int = 1) -> int:
    """Output length of a downsampler for an input of ``n`` tokens (the prefix always kept)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"downsampling rate must be in (0, 1], got {rate}")
    if kind not in DOWNSAMPLE_KINDS:
        raise ValueError(f"downsampling kind must be one of {DOWNSAMPLE_KINDS}, got {kind!r}")
    prefix = min(keep_first, n)
    rest = n - prefix
    if rest <= 0 or rate >= 1.0:
        return n
    if kind == "topk":
        return prefix + max(1, math.ceil(rate * rest))
    stride = max(1, round(1.0 / rate))
    return prefix + math.ceil(rest / stride)


class _Scorer(nn.Module):
    """``s_i = w . LayerNorm(h_i) + b``: one scalar per token (initialised to zero: all tokens tie at start,
    ties broken by position)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(h)).squeeze(-1)


class _TokenDownsample(nn.Module):
    """Shared part of the downsamplers: a learned per-token scorer and the always-kept prefix.

    Args:
        hidden_size: D.
        keep_first: number of leading tokens always kept ([CLS] = 1).
    """

    kind = ""

    def __init__(self, hidden_size: int, keep_first: int = 1) -> None:
        super().__init__()
        if keep_first < 1:
            raise ValueError(f"keep_first must be >= 1 (the [CLS] token is always kept), got {keep_first}")
        self.keep_first = int(keep_first)
        self.scorer = _Scorer(hidden_size)

    def _plan(self, h: torch.Tensor, rate: float) -> tuple[int, torch.Tensor, int]:
        """Output length, the (B, N) identity positions and the kept prefix length for input ``h``."""
        b, n, _ = h.shape
        n_out = downsampled_length(n, rate, self.kind, self.keep_first)
        return n_out, torch.arange(n, device=h.device).expand(b, n), min(self.keep_first, n)


class TopKTokenDownsample(_TokenDownsample):
    """Learned token scoring with top-k selection; the first ``keep_first`` tokens are always kept."""

    kind = "topk"

    def forward(self, h: torch.Tensor, mask: torch.Tensor,
                rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_out, positions, p = self._plan(h, rate)
        if n_out == h.shape[1]:
            return h, mask, positions
        scores = self.scorer(h)  # (B, N)
        rest = scores[:, p:].masked_fill(mask[:, p:] == 0, float("-inf"))
        k = n_out - p
        top = rest.topk(k, dim=1, sorted=False).indices + p
        top = top.sort(dim=1).values  # keep the original token order
        index = torch.cat([positions[:, :p], top], dim=1)  # (B, N')
        kept = h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        # straight-through gate on the selected tokens: exp(log g - stopgrad(log g)) is exactly 1 and has the
        # gradient of g / stopgrad(g), computed in log space (no 0/0 for very low scores); the prefix is kept
        # whatever its score, so it gets no gate
        log_gate = torch.nn.functional.logsigmoid(scores.gather(1, top))
        gate = torch.exp(log_gate - log_gate.detach())
        kept = torch.cat([kept[:, :p], kept[:, p:] * gate.unsqueeze(-1)], dim=1)
        return kept, mask.gather(1, index), index


class LearnedPoolDownsample(_TokenDownsample):
    """Learned (softmax-weighted) pooling of windows of ``round(1/rate)`` tokens; the prefix is kept as is."""

    kind = "pool"

    def forward(self, h: torch.Tensor, mask: torch.Tensor,
                rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = h.shape
        n_out, positions, p = self._plan(h, rate)
        if n_out == n:
            return h, mask, positions
        stride = max(1, round(1.0 / rate))
        windows = n_out - p
        pad = windows * stride - (n - p)
        rest_h = torch.nn.functional.pad(h[:, p:], (0, 0, 0, pad))
        rest_m = torch.nn.functional.pad(mask[:, p:], (0, pad))
        scores = self.scorer(rest_h).masked_fill(rest_m == 0, float("-inf"))
        scores = scores.view(b, windows, stride)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a window of padding only: all zero
        pooled = (weights.unsqueeze(-1) * rest_h.view(b, windows, stride, d)).sum(dim=2)
        pooled_mask = rest_m.view(b, windows, stride).amax(dim=-1)
        index = torch.cat([positions[:, :p], (p + torch.arange(windows, device=h.device) * stride).expand(b, -1)],
                          dim=1)
        return torch.cat([h[:, :p], pooled], dim=1), torch.cat([mask[:, :p], pooled_mask], dim=1), index


class TokenDownsample(nn.Module):
    """One search-space slot: both operators (``topk`` and ``pool``), the kind and rate chosen per call.

    ``kinds`` restricts the operators built (a fine-tuned subnet keeps only the one it uses, so its state dict is
    a subset of the supernet's).
    """

    def __init__(self, hidden_size: int, keep_first: int = 1, kinds: tuple[str, ...] = DOWNSAMPLE_KINDS) -> None:
        super().__init__()
        bad = [k for k in kinds if k not in DOWNSAMPLE_KINDS]
        if bad or not kinds:
            raise ValueError(f"downsampling kinds must be a non-empty subset of {DOWNSAMPLE_KINDS}, got {kinds}")
        ops = {"topk": TopKTokenDownsample, "pool": LearnedPoolDownsample}
        self.ops = nn.ModuleDict({k: ops[k](hidden_size, keep_first) for k in kinds})

    def forward(self, h: torch.Tensor, mask: torch.Tensor, rate: float,
                kind: str = "topk") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if kind not in self.ops:
            raise ValueError(f"this downsampling slot has operators {list(self.ops)}, not {kind!r}")
        return self.ops[kind](h, mask, rate)
