"""How the engine computes the objective and its gradient for every observation and restart at once.

Two paths, chosen by a fixed rule and recorded in each Reconstruction's ``details["compute"]``:

- ``"autograd"``: plain autograd on an eager copy of the model. One restart runs on a twin of the model whose
  convolutions skip the weight's unused second-order gradient (``channel_stacking.prune_double_backward``);
  ``S`` restarts (and observations) run as one model with ``S`` channel groups (``channel_stacking``). Used
  whenever the simulation is one gradient (``UpdateMatcher``).
- ``"torch.func"``: ``grad_and_value`` of the per-restart objective, ``vmap``-ed over restarts and observations
  (singleton dimensions skip ``vmap``). Used for the unrolled FedAvg simulation, and as the *fallback* when the
  model cannot be folded into channel groups or the folded model disagrees with it; a fallback is a warning.

Measured on this 2-core machine, 1 thread, seconds per evaluation (``benchmarks/bench_optimization.py --only
paths``): ConvNet-64 32x32 batch 1: one restart 0.57 (autograd twin) vs 0.69 (torch.func); 4 restarts 1.70
(channel-stacked) vs 4.40 (vmap). LeNet batch 1, 4 restarts: 0.0086 vs 0.0099. The channel-stacked path pays
(2.6x) where a restart is big; the twin pays 1.2x.

The CPU convolution backend is a setting (``EngineConfig.conv_backend``), and denormal floats are flushed to
zero while the engine runs (``flush_denormals``): both are recorded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from gradleak.attacks.optimization.channel_stacking import (NotStackable, fold, mark_candidate,
                                                            prune_double_backward, stack_model, stacked_loss)

if TYPE_CHECKING:  # the matcher builds its evaluator: a type-only import avoids the cycle
    from gradleak.attacks.optimization.matcher import UpdateMatcher

Grads = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]

#: relative error of the whole gradient above which the channel-stacked model is taken to compute something else
#: than the vmapped reference (a ``forward`` that mixes channels gives errors of order 1; float32 summation order
#: on a ReLU network with batch-statistics BatchNorm moves it by ~2e-3 on ConvNet-64)
AGREEMENT = 1e-2


class Evaluator:
    """The objective ``(N, R)`` and its gradient w.r.t. the candidates ``(N, R, B, ...)`` (and soft labels) of
    one matcher, by the path the rule above picks; ``record`` says which path ran and any fallback."""

    def __init__(self, matcher: UpdateMatcher, one_gradient: bool) -> None:
        self.matcher = matcher
        self.one_gradient = one_gradient
        self.record: dict[str, Any] = {"evaluation": "autograd" if one_gradient else "torch.func", "fallback": None}
        self._models: dict[int, tuple[nn.Module, list[torch.Tensor]] | None] = {}
        self._buffers_key: tuple[Any, ...] | None = None
        self._buffers: list[torch.Tensor] = []

    def value_and_grad(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool, grad: bool = True) -> Grads:
        copies = xs.shape[0] * xs.shape[1]
        entry = self._eager_model(xs, ys, soft) if self.one_gradient else None
        if entry is None:
            return self.functional(xs, ys, soft)
        n, r = xs.shape[:2]
        m = self.matcher
        if copies == 1:
            return self.autograd(*entry, xs, ys, soft, m.flat_targets[0], lambda x: mark_candidate(x[0]), grad)
        # the observed update of each copy's observation, or one broadcast to all copies
        targets = m.flat_targets[0] if n == 1 else m.flat_targets.repeat_interleave(r, dim=0)
        return self.autograd(*entry, xs, ys, soft, targets, fold, grad)

    def _eager_model(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> tuple[nn.Module, list[torch.Tensor]] | None:
        """The eager model holding ``N * R`` copies and its observed parameters, built once per count; ``None``
        (after a warning) when it cannot be built or disagrees with the torch.func reference."""
        copies = xs.shape[0] * xs.shape[1]
        if copies in self._models:
            return self._models[copies]
        if copies == 1:
            twin = prune_double_backward(self.matcher.model)
            self._models[1] = (twin, self._free_leaves(twin))
            return self._models[1]
        try:
            stacked = stack_model(self.matcher.model, copies)
            self._models[copies] = (stacked, self._free_leaves(stacked))
            fast = self.value_and_grad(xs, ys, soft)
            reference = self.functional(xs, ys, soft)
            error = max(_relative_error(a, b) for a, b in zip(fast, reference) if a is not None and b is not None)
            if not error <= AGREEMENT:
                raise NotStackable(f"the channel-stacked model disagrees with torch.func (relative error {error:.1e})")
        except (NotStackable, RuntimeError, ValueError) as err:
            self._models[copies] = None
            reason = f"{copies} copies of {type(self.matcher.model).__name__} not channel-stacked: {err}"
            self.record.update(evaluation="torch.func", fallback=reason)
            warnings.warn(f"gradleak engine falls back to torch.func.vmap: {reason}", RuntimeWarning, stacklevel=2)
        return self._models[copies]

    def functional(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> Grads:
        """Any simulation, any model: ``grad_and_value`` of the per-restart objective, vmapped over restarts and
        observations (singleton dimensions skip ``vmap``)."""
        n, r = xs.shape[:2]
        argnums: tuple[int, ...] = (0, 1) if soft else (0,)
        fn: Callable[..., Any] = grad_and_value(self.matcher.objective, argnums=argnums)
        x, y, target = xs, ys, self.matcher.flat_targets
        if r == 1:
            x, y = x[:, 0], y[:, 0]
        else:
            fn = vmap(fn, in_dims=(0, 0, None), randomness="same")
        if n == 1:
            x, y, target = x[0], y[0], target[0]
        else:
            fn = vmap(fn, in_dims=(0, 0, 0), randomness="same")
        grads, value = fn(x, y, target)
        if n == 1:
            grads, value = tuple(g.unsqueeze(0) for g in grads), value.unsqueeze(0)
        if r == 1:
            grads, value = tuple(g.unsqueeze(1) for g in grads), value.unsqueeze(1)
        return value, grads[0], (grads[1] if soft else None)

    def autograd(
        self,
        model: nn.Module,
        free: list[torch.Tensor],
        xs: torch.Tensor,
        ys: torch.Tensor,
        soft: bool,
        targets: torch.Tensor,
        model_input: Callable[[torch.Tensor], torch.Tensor],
        grad: bool = True,
    ) -> Grads:
        """The objective and its gradient through plain autograd on an eager ``model`` holding ``S = N * R``
        copies: ``model_input`` maps the candidates ``(S, B, ...)`` to its input, and ``free`` are its observed
        parameters, whose gradients hold the copies' updates in order. ``grad=False`` stops after the value (no
        double backward) and returns ``None`` for the gradients."""
        m = self.matcher
        n, r = xs.shape[:2]
        copies = n * r
        with torch.enable_grad():
            x = xs.detach().flatten(0, 1).requires_grad_(True)
            y = ys.detach().flatten(0, 1).requires_grad_(soft)
            m._bn_log = {}
            logits = model(model_input(x))
            bn_log, m._bn_log = m._bn_log, {}
            grads = torch.autograd.grad(stacked_loss(logits, y, soft), free, create_graph=True)
            stats = {name: (mu.view(copies, -1), var.view(copies, -1)) for name, (mu, var) in bn_log.items()}
            inputs = [x, y] if soft else [x]
            if m.closed_form is None:
                update = torch.cat([g.reshape(copies, -1) for g in grads], dim=1)
                value = m.score_update(update, stats, x, targets)
                if not grad:
                    return value.detach().view(n, r), None, None
                grad_in = torch.autograd.grad(value.sum(), inputs)
            else:
                # the distance and its gradient in closed form, outside autograd; then one vector-Jacobian
                # product of the simulated update (and the priors) back to the candidate
                parts = [g.reshape(copies, -1) for g in grads]
                with torch.no_grad():
                    tparts = [t[0] if n == 1 else t.repeat_interleave(r, dim=0) for t in m.part_targets]
                    detached = [p.detach() for p in parts]
                    dist, dparts = m.closed_form(detached, tparts, m.part_weights, self._seed_buffers(detached))
                    scale = m.config.objective_scale
                    dparts = [d.mul_(scale) for d in dparts]
                prior = m.prior_value(stats, x)
                value = (scale * dist + prior.detach()).expand(copies)
                if not grad:
                    return value.detach().view(n, r), None, None
                outputs, seeds = list(parts), list(dparts)
                if prior.requires_grad:
                    outputs.append(prior.sum())
                    seeds.append(torch.ones((), device=prior.device))
                grad_in = torch.autograd.grad(outputs, inputs, grad_outputs=seeds, allow_unused=True)
                grad_in = tuple(torch.zeros_like(i) if g is None else g for g, i in zip(grad_in, inputs))
        gy = grad_in[1].view_as(ys) if soft else None
        return value.detach().view(n, r), grad_in[0].view_as(xs), gy

    def _seed_buffers(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Buffers shaped like the update's parts, kept across iterations for the closed-form gradient (a fresh
        parameter-sized tensor per iteration costs its page faults)."""
        key = tuple((p.shape, p.dtype, p.device) for p in parts)
        if self._buffers_key != key:
            self._buffers_key = key
            self._buffers = [torch.empty_like(p) for p in parts]
        return self._buffers

    def _free_leaves(self, model: nn.Module) -> list[torch.Tensor]:
        """Make ``model``'s observed parameters leaves that require grad (and no others); return them in the
        order of the observed update."""
        targets = self.matcher.targets
        for name, p in model.named_parameters():
            p.requires_grad_(name in targets)
        named = dict(model.named_parameters())
        return [named[k] for k in targets]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float(torch.linalg.vector_norm(a - b) / (torch.linalg.vector_norm(b) + 1e-12))


def _flushing_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero (there is no getter: probe one)."""
    return float(torch.tensor(1e-39) * 1.0) == 0.0


@contextmanager
def flush_denormals(device: torch.device) -> Iterator[bool]:
    """Flush denormal floats to zero on CPU while the engine runs (``torch.set_flush_denormal``; the previous
    mode is restored after); yields whether it is on.

    Second-order terms of the double backward (BatchNorm's, products of two small gradients) underflow into the
    denormal range, where x86 arithmetic runs 10x slower or worse: measured on ResNet-18, batch 8, one thread,
    BatchNorm's elementwise double-backward ops took ~0.5 s of a ~2.9 s evaluation with denormals and ~0.15 s
    without (torch.profiler op totals). Values below 1.2e-38 become 0, far below float32's resolution of the
    objective and its gradient. The mode is per thread."""
    if device.type != "cpu":
        yield False
        return
    previous = _flushing_denormals()
    on = torch.set_flush_denormal(True)
    try:
        yield on
    finally:
        torch.set_flush_denormal(previous)


@contextmanager
def conv_backend(name: str, device: torch.device) -> Iterator[str]:
    """CPU convolutions through oneDNN (``"mkldnn"``) or PyTorch's native kernels while the engine runs; yields
    the backend that runs (``"cuda"`` etc. off CPU, or ``"native"`` where this build has no oneDNN)."""
    if device.type != "cpu":
        yield device.type
        return
    enabled = name == "mkldnn" and torch.backends.mkldnn.is_available()
    previous = torch.backends.mkldnn.enabled
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        torch.backends.mkldnn.set_flags(enabled)
    try:
        yield "mkldnn" if enabled else "native"
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            torch.backends.mkldnn.set_flags(previous)
