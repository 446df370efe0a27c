"""Restarts as channel groups: ``S`` copies of a model evaluated as one wider model with plain autograd.

``torch.func.vmap`` maps the double-backward over restarts, but on the small models of DLG (LeNet, ~1 ms per
evaluation) its per-call cost dominates: 8 vmapped restarts cost 5.5x one, 8 stacked ones 3.6x
(``benchmarks/bench_optimization.py --only restarts``). Folding the copies into the channel dimension instead
gives one ordinary network: a convolution with ``groups * S``, a batched matmul per
linear layer, BatchNorm / GroupNorm over ``S * C`` channels with repeated affine parameters. Copy ``s`` reads
channels ``[s*C, (s+1)*C)`` only, so the gradient of a stacked parameter, viewed as ``(S, *shape)``, holds each
copy's own gradient, and one double-backward serves all copies.

Only models built from these layers (plus parameter-free, channel-wise modules) can be stacked;
:func:`stack_model` raises :class:`NotStackable` otherwise, and the engine checks a stacked model against the
vmapped computation once before trusting it (a ``forward`` that mixes channels is caught there).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F


class NotStackable(Exception):
    """The model has a layer that cannot be folded into channel groups."""


class StackedLinear(nn.Module):
    """``S`` independent linear layers on input ``(B, S * F)``: one batched matmul, output ``(B, S * O)``."""

    def __init__(self, linear: nn.Linear, copies: int) -> None:
        super().__init__()
        self.copies = copies
        self.weight = nn.Parameter(linear.weight.detach().repeat(copies, 1, 1), linear.weight.requires_grad)
        self.bias = (None if linear.bias is None else
                     nn.Parameter(linear.bias.detach().repeat(copies, 1), linear.bias.requires_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise NotStackable(f"stacked linear layers take (batch, features) inputs, got shape {tuple(x.shape)}")
        s, b = self.copies, x.shape[0]
        h = x.view(b, s, -1).transpose(0, 1)  # (S, B, F)
        if self.bias is None:
            out = torch.bmm(h, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(b, -1)


_CHANNELWISE = (
    nn.Sequential, nn.Identity, nn.Flatten, nn.Dropout, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
    nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
)


def _repeat_parameter(module: nn.Module, name: str, copies: int) -> None:
    p = getattr(module, name)
    if p is not None:
        setattr(module, name, nn.Parameter(p.detach().repeat(copies, *([1] * (p.dim() - 1))), p.requires_grad))


def stack_model(model: nn.Module, copies: int) -> nn.Module:
    """A copy of ``model`` that evaluates ``copies`` copies of it at once on channel-stacked input
    ``(B, S * C, H, W)`` and returns logits ``(B, S * K)``. Forward hooks of the original are kept."""
    stacked = copy.deepcopy(model)
    replacements: list[tuple[nn.Module, str, nn.Module]] = []
    for name, module in stacked.named_modules():
        if isinstance(module, nn.Conv2d):
            module.groups *= copies
            module.in_channels *= copies
            module.out_channels *= copies
            _repeat_parameter(module, "weight", copies)
            _repeat_parameter(module, "bias", copies)
            # oneDNN runs grouped convolutions ~10% faster on channels-last tensors (no layout reorders)
            module.weight = nn.Parameter(module.weight.detach().contiguous(memory_format=torch.channels_last),
                                         module.weight.requires_grad)
        elif isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            replacements.append((stacked.get_submodule(parent) if parent else stacked, child,
                                 StackedLinear(module, copies)))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.num_features *= copies
            _repeat_parameter(module, "weight", copies)
            _repeat_parameter(module, "bias", copies)
            for buffer in ("running_mean", "running_var"):
                value = getattr(module, buffer)
                if value is not None:
                    setattr(module, buffer, value.repeat(copies))
        elif isinstance(module, nn.GroupNorm):
            module.num_groups *= copies
            module.num_channels *= copies
            _repeat_parameter(module, "weight", copies)
            _repeat_parameter(module, "bias", copies)
        elif module is stacked:
            if any(True for _ in module.parameters(recurse=False)):
                raise NotStackable(f"parameters held by the model itself ({type(module).__name__}) cannot be stacked")
        elif not isinstance(module, _CHANNELWISE):
            raise NotStackable(f"layer {name!r} ({type(module).__name__}) cannot be folded into channel groups")
    for parent, child, new in replacements:
        setattr(parent, child, new)
    return stacked


def fold(x: torch.Tensor) -> torch.Tensor:
    """``(S, B, C, ...)`` -> ``(B, S * C, ...)``, the stacked model's input."""
    s, b, c = x.shape[:3]
    folded = x.transpose(0, 1).reshape(b, s * c, *x.shape[3:])
    return folded.contiguous(memory_format=torch.channels_last) if folded.dim() == 4 else folded


def stacked_loss(logits: torch.Tensor, y: torch.Tensor, soft: bool) -> torch.Tensor:
    """Sum over copies of each copy's mean cross-entropy; ``logits`` ``(B, S * K)``, ``y`` ``(S, B)`` class
    indices or ``(S, B, K)`` soft-label logits (DLG)."""
    s, b = y.shape[:2]
    logits = logits.view(b, s, -1).transpose(0, 1)  # (S, B, K)
    if soft:
        return -(F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean(-1).sum()
    return F.cross_entropy(logits.reshape(s * b, -1), y.reshape(-1), reduction="sum") / b
