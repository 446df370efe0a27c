"""How the engine computes the objective and its gradient for every observation and restart at once.

Two paths, chosen by a fixed rule and recorded in each Reconstruction's ``details["compute"]["evaluation"]``:

- ``"autograd"``: one observation, one restart, and the simulation is one gradient (``UpdateMatcher``): plain
  autograd on a twin of the model whose convolutions skip the weight's second-order gradient that PyTorch's
  double backward computes and throws away (``pruned_double_backward``), with the distance's gradient in closed
  form (``objectives.CLOSED_FORMS``). Every single-restart run of DLG, Inverting Gradients and GradInversion
  takes it.
- ``"torch.func"``: everything else: ``grad_and_value`` of the per-restart objective, ``vmap``-ed over restarts
  and observations (singleton dimensions skip ``vmap``); the unrolled FedAvg simulation always.

No run-time comparison picks a path, so there is no silent fallback. Seconds per evaluation, 1 thread, on this
loaded 2-core machine (``benchmarks/bench_optimization.py --only paths``, issue 22; two runs, noisy): ConvNet-64
32x32 batch 1, one restart: 0.57 / 1.99 (autograd twin) vs 0.69 / 2.34 (torch.func), 1.2x for the path nearly
every run takes. The engine used to fold restarts into channel groups of one model (``stacking.py``, 280 lines
of custom autograd): on LeNet, 4 restarts, it beat vmap by 1.15-1.30x (batch 1 and 8), and on ConvNet-64 it
never ran (its check against vmap failed on float rounding and fell back silently; forced, it measured 1.70 vs
4.40 s in one run and 11.7 vs 9.5 s in the next). It went: below the 1.3x bar where it ran.

The CPU convolution backend is a setting (``EngineConfig.conv_backend``: oneDNN by default, PyTorch's own
``native`` kernels on request), never timed, and denormal floats are flushed to zero while the engine runs
(``flush_denormals``): both are recorded beside the path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import grad_and_value, vmap
from torch.nn import functional as F

from gradleak.attacks.optimization.pruned_double_backward import mark_candidate, prune_double_backward

if TYPE_CHECKING:  # the matcher builds its evaluator: a type-only import avoids the cycle
    from gradleak.attacks.optimization.matcher import UpdateMatcher

Grads = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class Evaluator:
    """The objective ``(N, R)`` and its gradient w.r.t. the candidates ``(N, R, B, ...)`` (and soft labels) of
    one matcher, by the path the rule above picks; ``record`` says which one ran."""

    def __init__(self, matcher: UpdateMatcher, one_gradient: bool) -> None:
        self.matcher = matcher
        self.one_gradient = one_gradient
        self.record: dict[str, Any] = {"evaluation": None, "fallback": None}
        self._twin: tuple[nn.Module, list[torch.Tensor]] | None = None
        self._buffers_key: tuple[Any, ...] | None = None
        self._buffers: list[torch.Tensor] = []

    def path(self, xs: torch.Tensor) -> str:
        """``"autograd"`` for one observation and one restart of the one-gradient simulation, else ``"torch.func"``."""
        return "autograd" if self.one_gradient and xs.shape[0] * xs.shape[1] == 1 else "torch.func"

    def value_and_grad(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool, grad: bool = True) -> Grads:
        path = self.path(xs)
        self.record["evaluation"] = path
        if path == "torch.func":
            return self.functional(xs, ys, soft)
        if self._twin is None:
            twin = prune_double_backward(self.matcher.model)
            self._twin = (twin, self._free_leaves(twin))
        return self.autograd(*self._twin, xs, ys, soft, grad)

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
        self, model: nn.Module, free: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, soft: bool,
        grad: bool = True,
    ) -> Grads:
        """The objective and its gradient through plain autograd on the eager twin ``model`` of one restart
        ``(1, 1, B, ...)``; ``free`` are its observed parameters, in the order of the observed update.
        ``grad=False`` stops after the value (no double backward) and returns ``None`` for the gradients."""
        m = self.matcher
        n, r, copies, targets = 1, 1, 1, m.flat_targets[0]
        with torch.enable_grad():
            x = xs.detach().flatten(0, 1).requires_grad_(True)
            y = ys.detach().flatten(0, 1).requires_grad_(soft)
            m._bn_log = {}
            logits = model(mark_candidate(x[0]))
            bn_log, m._bn_log = m._bn_log, {}
            grads = torch.autograd.grad(_loss(logits, y[0], soft), free, create_graph=True)
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
                    tparts = [t[0] for t in m.part_targets]
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


def _loss(logits: torch.Tensor, y: torch.Tensor, soft: bool) -> torch.Tensor:
    """Mean cross-entropy of one restart: ``y`` class indices ``(B,)`` or soft-label logits ``(B, K)`` (DLG)."""
    if soft:
        return -(F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits, y, reduction="sum") / y.shape[0]


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
