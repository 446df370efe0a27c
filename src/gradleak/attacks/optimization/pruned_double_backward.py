"""Convolutions whose double backward computes only what the engine needs (the autograd path of ``evaluation``).

PyTorch's generic double backward of a convolution (``_convolution_double_backward``) computes the second-order
gradient w.r.t. the weight, ``conv(ggI, gO)``, even when only the candidate's gradient is asked for: one
convolution per layer, about 1/7 of an Inverting Gradients iteration, thrown away (ResNet-18 at 32x32, batch 1:
8 of them, ~15 % of the time in torch.profiler op totals; ``benchmarks/bench_inverting.py``). The engine runs a
twin of the model whose ``nn.Conv2d`` layers are :class:`PrunedConv2d`: their backward is built from
:class:`_ConvInputGrad`, :class:`_ConvWeightGrad` and :class:`_ConvGradients`, which skip it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


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


class _PrunedConvFunction(torch.autograd.Function):
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


class PrunedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` differentiated twice through :class:`_PrunedConvFunction`.
    Valid for the engine's two passes only (``evaluation.Evaluator.autograd``): a grad-enabled backward
    returns parameter gradients only, a grad-disabled one the input's only, and second derivatives w.r.t. the
    weights are taken as zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        conf = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        return _PrunedConvFunction.apply(x, self.weight, self.bias, conf, not getattr(x, _CANDIDATE, False))


def prune_double_backward(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolutions run :class:`PrunedConv2d`'s double backward, for the
    engine's two passes only (``evaluation.Evaluator.autograd``).

    PyTorch's generic double backward of a convolution (``_convolution_double_backward``) computes the second-order
    gradient w.r.t. the weight, ``conv(ggI, gO)``, even when only the candidate's gradient is asked for: one
    convolution per layer, about 1/7 of an Inverting Gradients iteration, thrown away (ResNet-18 at 32x32,
    batch 1: 8 of them, ~15 % of the time in torch.profiler op totals; ``benchmarks/bench_inverting.py``).
    Forward hooks (BN statistics) are kept."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = PrunedConv2d
    return twin


def mark_candidate(x: torch.Tensor) -> torch.Tensor:
    """Mark ``x`` as the engine's candidate: a :class:`PrunedConv2d` reading it directly skips the input
    gradient of its first-pass backward (the first pass differentiates w.r.t. the parameters only)."""
    setattr(x, _CANDIDATE, True)
    return x
