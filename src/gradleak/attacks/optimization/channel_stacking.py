"""Restarts as channel groups: ``S`` copies of a model evaluated as one wider model with plain autograd.

``torch.func.vmap`` maps the double-backward over restarts, but on the small models of DLG (LeNet, ~1 ms per
evaluation) its per-call cost dominates: 8 vmapped restarts cost 4.8x one, 8 stacked ones 2.8x at 1 thread (2.6x on
both cores; ``benchmarks/bench_optimization.py --only restarts``, 2-core CPU, idle). Folding the copies into the channel dimension instead
gives one ordinary network: a convolution with ``groups * S``, a batched matmul per
linear layer, BatchNorm / GroupNorm over ``S * C`` channels with repeated affine parameters. Copy ``s`` reads
channels ``[s*C, (s+1)*C)`` only, so the gradient of a stacked parameter, viewed as ``(S, *shape)``, holds each
copy's own gradient, and one double-backward serves all copies.

Each stacked convolution also runs its own double backward (:class:`StackedConv2d`): PyTorch's generic one
computes the weight's second-order gradient whenever the input gradient is differentiated, whether or not anyone
asks for it, as one small convolution per group (8 copies: 16 extra convolutions per LeNet evaluation), and runs
the transposed convolutions of the double backward on a slow path. Its own costs 8 LeNet copies 3.2 ms instead
of 3.9 ms per evaluation (the benchmark times both).

Only models built from these layers (plus parameter-free, channel-wise modules) can be stacked;
:func:`stack_model` raises :class:`NotStackable` otherwise, and the engine checks a stacked model against the
vmapped computation once before trusting it (a ``forward`` that mixes channels is caught there).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
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


_CANDIDATE = "_gradleak_candidate"  # attribute marking the engine's folded candidate (see fold)


def _conv_backward(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conf: tuple[Any, ...], mask: list[bool]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    stride, padding, dilation, groups = conf
    return torch.ops.aten.convolution_backward(grad_out, x, weight, None, stride, padding, dilation, False, [0, 0],
                                               groups, mask)


class _ConvInputGrad(torch.autograd.Function):
    """``dL/dx`` of a convolution given ``dL/dy``: linear in ``dL/dy``, whose own gradient is the forward
    convolution. The weight is a constant here (the engine never differentiates twice w.r.t. parameters)."""

    @staticmethod
    def forward(ctx: Any, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                conf: tuple[Any, ...]) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.conf = conf
        return _conv_backward(grad_out, x, weight, conf, [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        return F.conv2d(gg, weight, None, stride, padding, dilation, groups), None, None, None


class _ConvWeightGrad(torch.autograd.Function):
    """``dL/dW`` of a convolution given ``dL/dy`` and the input ``x``; its gradient w.r.t. ``dL/dy`` is a
    convolution of ``x`` with the incoming weight-shaped gradient, and w.r.t. ``x`` a backward-data pass."""

    @staticmethod
    def forward(ctx: Any, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                conf: tuple[Any, ...]) -> torch.Tensor:
        ctx.save_for_backward(grad_out, x)
        ctx.conf = conf
        return _conv_backward(grad_out, x, weight, conf, [False, True, False])[1]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_out, x = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        d_grad_out = F.conv2d(x, gg, None, stride, padding, dilation, groups) if ctx.needs_input_grad[0] else None
        d_x = _conv_backward(grad_out, x, gg, ctx.conf, [True, False, False])[0] if ctx.needs_input_grad[1] else None
        return d_grad_out, d_x, None, None


class _ConvGradients(torch.autograd.Function):
    """``dL/dx`` and ``dL/dW`` of a convolution given ``dL/dy``, in one backward call (as PyTorch's own first
    backward). Its gradient w.r.t. ``dL/dy`` is ``conv(ggx, W) + conv(x, ggW)``, w.r.t. ``x`` a backward-data pass
    of ``dL/dy`` with ``ggW``; w.r.t. ``W`` it is never computed (PyTorch's generic double backward computes it,
    ``conv(ggx, dL/dy)``, and the engine throws it away)."""

    @staticmethod
    def forward(ctx: Any, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                conf: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conf = conf
        ctx.set_materialize_grads(False)
        gx, gw, _ = _conv_backward(grad_out, x, weight, conf, [True, True, False])
        return gx, gw

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: torch.Tensor | None,
                 ggw: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_out, x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        d_grad_out = d_x = None
        if ctx.needs_input_grad[0]:
            if ggx is not None:
                d_grad_out = F.conv2d(ggx, weight, None, stride, padding, dilation, groups)
            if ggw is not None:
                term = F.conv2d(x, ggw, None, stride, padding, dilation, groups)
                d_grad_out = term if d_grad_out is None else d_grad_out.add_(term)
        if ctx.needs_input_grad[1] and ggw is not None:
            d_x = _conv_backward(grad_out, x, ggw, ctx.conf, [True, False, False])[0]
        return d_grad_out, d_x, None, None


class _StackedConvFunction(torch.autograd.Function):
    """A convolution whose backward is built from :class:`_ConvInputGrad` and :class:`_ConvWeightGrad`, so that
    the double backward computes only what the gradient w.r.t. the candidate needs."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                conf: tuple[Any, ...], input_grad: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = conf
        ctx.input_grad = input_grad
        stride, padding, dilation, groups = conf
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # The engine's two passes: the first (create_graph, so grad-enabled) differentiates w.r.t. the parameters
        # only and never needs the candidate's gradient; the second, w.r.t. the candidate, needs no parameter's.
        first_pass = torch.is_grad_enabled()
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        want_x = ctx.needs_input_grad[0] and (ctx.input_grad or not first_pass)
        want_w = ctx.needs_input_grad[1] and first_pass
        if want_x and want_w:
            gx, gw = _ConvGradients.apply(grad_out, x, weight.detach(), ctx.conf)
        elif want_x:
            gx = _ConvInputGrad.apply(grad_out, x.detach(), weight.detach(), ctx.conf)
        elif want_w:
            gw = _ConvWeightGrad.apply(grad_out, x, weight.detach(), ctx.conf)
        if ctx.needs_input_grad[2] and first_pass:
            gb = grad_out.sum((0, 2, 3))
        return gx, gw, gb, None, None


class StackedConv2d(nn.Conv2d):
    """A grouped ``nn.Conv2d`` of a stacked model, differentiated twice through :class:`_StackedConvFunction`.
    Valid for the engine's two passes only (``evaluation.Evaluator.autograd``): a grad-enabled backward
    returns parameter gradients only, a grad-disabled one the input's only, and second derivatives w.r.t. the
    weights are taken as zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        conf = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        return _StackedConvFunction.apply(x, self.weight, self.bias, conf, not getattr(x, _CANDIDATE, False))


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
            module.__class__ = StackedConv2d  # in place, so that hooks registered on the original stay
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


def prune_double_backward(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (not stacked) whose convolutions run :class:`StackedConv2d`'s double backward, for the
    engine's two passes only (``evaluation.Evaluator.autograd``).

    PyTorch's generic double backward of a convolution (``_convolution_double_backward``) computes the second-order
    gradient w.r.t. the weight, ``conv(ggI, gO)``, even when only the candidate's gradient is asked for: one
    convolution per layer, about 1/7 of an Inverting Gradients iteration, thrown away (ResNet-18 at 32x32,
    batch 1: 8 of them, ~15 % of the time in torch.profiler op totals; ``benchmarks/bench_inverting.py``).
    Forward hooks (BN statistics) are kept."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = StackedConv2d
    return twin


def mark_candidate(x: torch.Tensor) -> torch.Tensor:
    """Mark ``x`` as the engine's candidate: a :class:`StackedConv2d` reading it directly skips the input
    gradient of its first-pass backward (the first pass differentiates w.r.t. the parameters only)."""
    setattr(x, _CANDIDATE, True)
    return x


def fold(x: torch.Tensor) -> torch.Tensor:
    """``(S, B, C, ...)`` -> ``(B, S * C, ...)``, the stacked model's input, marked as the candidate (a
    :class:`StackedConv2d` that reads it directly skips its input gradient)."""
    s, b, c = x.shape[:3]
    folded = x.transpose(0, 1).reshape(b, s * c, *x.shape[3:])
    if folded.dim() == 4:
        folded = folded.contiguous(memory_format=torch.channels_last)
    return mark_candidate(folded)


def stacked_loss(logits: torch.Tensor, y: torch.Tensor, soft: bool) -> torch.Tensor:
    """Sum over copies of each copy's mean cross-entropy; ``logits`` ``(B, S * K)``, ``y`` ``(S, B)`` class
    indices or ``(S, B, K)`` soft-label logits (DLG)."""
    s, b = y.shape[:2]
    logits = logits.view(b, s, -1).transpose(0, 1)  # (S, B, K)
    if soft:
        return -(F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean(-1).sum()
    return F.cross_entropy(logits.reshape(s * b, -1), y.reshape(-1), reduction="sum") / b
