"""AWQ's two searches: per-input-channel scales, then per-group weight clipping.

Both minimise the output error of int4 linears on calibration inputs x. The error of a linear depends on x only
through its second moment M = E[x^T x] (K x K):

    E ||x W^T - x Ŵ^T||^2  =  sum((δ M) ⊙ δ),   δ = W - Ŵ

so the calibration tokens are reduced to M once, and each grid point costs O(N K^2) whatever their number.
Searching scales for linears that share an input sums their errors (q|k|v, gate|up), as AutoAWQ's loss on
their joint output does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.quant.int4 import fake_quantize


@dataclass(slots=True)
class InputStats:
    """Running statistics of the input x [..., K] shared by a group of linears."""

    gram: torch.Tensor  # sum over tokens of x^T x
    abs_sum: torch.Tensor  # sum over tokens of |x|
    num_tokens: int = 0

    @classmethod
    def zeros(cls, in_features: int) -> InputStats:
        return cls(torch.zeros(in_features, in_features), torch.zeros(in_features))

    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.gram.addmm_(x.t(), x)
        self.abs_sum += x.abs().sum(0)
        self.num_tokens += x.shape[0]

    @property
    def second_moment(self) -> torch.Tensor:
        return self.gram / self.num_tokens

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / self.num_tokens

    def rescaled(self, scales: torch.Tensor) -> InputStats:
        """The statistics of x / scales: the input once 1/scales is folded into the op that produces it."""
        return InputStats(self.gram / torch.outer(scales, scales), self.abs_sum / scales, self.num_tokens)


def output_error(weight: torch.Tensor, approx: torch.Tensor, second_moment: torch.Tensor) -> float:
    """E ||x (weight - approx)^T||^2 over the calibration tokens."""
    delta = weight - approx
    return float(((delta @ second_moment) * delta).sum())


def search_scales(
    weights: list[torch.Tensor], stats: InputStats, group_size: int, num_grid: int = 20
) -> tuple[torch.Tensor, float]:
    """(scales s, error) minimising the summed error of Q(W diag(s)) diag(1/s) over the linears sharing x.

    Candidates: s = mean|x|^alpha / mean|w~|^(1 - alpha) for alpha = 0, 1/num_grid, ..., (num_grid - 1)/num_grid,
    AutoAWQ's "duo scaling" (w~ is |w| relative to its group's max, averaged over output rows), and s = 1,
    round-to-nearest itself, so the result is never worse than it on these statistics.
    """
    second_moment = stats.second_moment
    weight_mean = _relative_weight_magnitude(torch.cat(weights), group_size)
    candidates = [torch.ones_like(weight_mean)]
    for step in range(num_grid):
        alpha = step / num_grid
        scales = (stats.abs_mean.pow(alpha) / (weight_mean.pow(1 - alpha) + 1e-4)).clamp(min=1e-4)
        candidates.append(scales / (scales.max() * scales.min()).sqrt())
    best_error, best_scales = float("inf"), None
    for scales in candidates:
        error = sum(
            output_error(w, fake_quantize(w * scales, group_size) / scales, second_moment) for w in weights
        )
        if error < best_error:
            best_error, best_scales = error, scales
    assert best_scales is not None, "the error is NaN: non-finite weights or activations"
    return best_scales, best_error


def _relative_weight_magnitude(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """[K]: |w| / max |w| of its (row, group), averaged over rows."""
    n, k = weight.shape
    groups = weight.abs().reshape(n, k // group_size, group_size)
    return (groups / (groups.amax(-1, keepdim=True) + 1e-6)).reshape(n, k).mean(0)


def search_clip(
    weight: torch.Tensor, second_moment: torch.Tensor, group_size: int, num_grid: int = 20, max_shrink: float = 0.5
) -> torch.Tensor:
    """Per (row, group) clipping threshold [N, K // group_size, 1] for |weight|, as AutoAWQ's clip search.

    Each group is judged by its own share of the output error, δ_g M_gg δ_g^T (the cross-group terms of M
    are dropped), so every (row, group) picks its threshold independently.
    """
    n, k = weight.shape
    num_groups = k // group_size
    groups = weight.reshape(n, num_groups, group_size)
    # The diagonal g x g blocks of M, one per group: [G, g, g].
    blocks = second_moment.reshape(num_groups, group_size, num_groups, group_size).diagonal(dim1=0, dim2=2)
    blocks = blocks.permute(2, 0, 1)
    original_max = groups.abs().amax(-1, keepdim=True)
    best_max, best_error = original_max, torch.full((n, num_groups), float("inf"))
    for step in range(int(max_shrink * num_grid)):
        max_val = original_max * (1 - step / num_grid)
        clipped = torch.clamp(groups, -max_val, max_val).reshape(n, k)
        delta = (groups - fake_quantize(clipped, group_size).reshape(n, num_groups, group_size)).transpose(0, 1)
        error = ((delta @ blocks) * delta).sum(-1).t()  # [N, G]
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_max = torch.where(better[..., None], max_val, best_max)
    return best_max


def clip(weight: torch.Tensor, max_val: torch.Tensor) -> torch.Tensor:
    n, k = weight.shape
    groups = weight.reshape(n, max_val.shape[1], -1)
    return torch.clamp(groups, -max_val, max_val).reshape(n, k)
