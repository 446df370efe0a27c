"""Gradient distances, looked up by name: adding one touches no attack.

Each takes the candidate's update and the observed update flattened and concatenated in parameter order,
``(..., P)``, and per-entry weights ``(P,)`` or ``None``, and returns the distance ``(...)``. Leading dimensions
(restarts and observations under ``vmap``) are kept, so one call scores every restart; a target without them
broadcasts. Layer weights (Geiping et al. 2020 weight early layers) arrive expanded to one weight per entry.

The unweighted forms reduce with fused kernels (``torch.linalg.vecdot``, ``vector_norm``) instead of materialising
``candidate * target``: on ResNet-18 (11 M parameters) every product is a 44 MB temporary, and the double backward
of Inverting Gradients pays for each one twice (``benchmarks/bench_inverting.py --section speed``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gradleak.registry import Registry

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
OBJECTIVES: Registry[torch.Tensor] = Registry("objective")


@OBJECTIVES.register("l2")
def squared_l2(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distance (Zhu et al. 2019, DLG)."""
    diff = candidate - target
    if weights is None:
        return torch.linalg.vecdot(diff, diff)
    return torch.linalg.vecdot(diff, diff * weights)


@OBJECTIVES.register("l1")
def l1(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Absolute difference; less sensitive to a few large entries."""
    diff = (candidate - target).abs()
    return (diff if weights is None else diff * weights).sum(-1)


@OBJECTIVES.register("cosine")
def cosine(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos`` of the whole flattened update (Geiping et al. 2020): matches direction, not magnitude."""
    if weights is None:
        dot = torch.linalg.vecdot(candidate, target)
        norms = torch.linalg.vector_norm(candidate, dim=-1) * torch.linalg.vector_norm(target, dim=-1)
        return 1.0 - dot / (norms + 1e-12)
    weighted = target * weights
    dot = torch.linalg.vecdot(candidate, weighted)
    cand_sq = torch.linalg.vecdot(candidate, candidate * weights)
    targ_sq = torch.linalg.vecdot(target, weighted)
    return 1.0 - dot / (cand_sq.sqrt() * targ_sq.sqrt() + 1e-12)


# -- closed forms over the update's parts ---------------------------------------------------------------------
# The same distances over the update as a list of parts ``(S, P_k)`` (one per parameter, never concatenated), each
# with its own scalar weight, returning the distance ``(S,)`` and its gradient with respect to every part. The
# optimisation engine computes these outside autograd and hands the gradient to one vector-Jacobian product of the
# simulated update (``grad_outputs``): no 44 MB concatenation and no autograd graph over the parameter-sized
# arithmetic on ResNet-18, just one fused pass per part. ``out``: optional buffers shaped like the parts that receive
# the gradient (the engine keeps them across iterations).
PartsDistance = Callable[
    [list[torch.Tensor], list[torch.Tensor], list[float] | None, list[torch.Tensor] | None],
    tuple[torch.Tensor, list[torch.Tensor]],
]
CLOSED_FORMS: dict[str, PartsDistance] = {}


def _weights(parts: list[torch.Tensor], weights: list[float] | None) -> list[float]:
    return [1.0] * len(parts) if weights is None else weights


def squared_l2_parts(
    candidate: list[torch.Tensor], target: list[torch.Tensor], weights: list[float] | None = None,
    out: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``squared_l2`` over parts: ``sum_k w_k |c_k - t_k|^2`` and ``2 w_k (c_k - t_k)`` (into ``out`` if given,
    see ``cosine_parts``)."""
    diffs = ([c - t for c, t in zip(candidate, target)] if out is None else
             [torch.sub(c, t, out=o) for c, t, o in zip(candidate, target, out)])
    w = _weights(candidate, weights)
    value = sum(wk * torch.linalg.vecdot(d, d) for wk, d in zip(w, diffs))
    return value, [d.mul_(2.0 * wk) for wk, d in zip(w, diffs)]  # type: ignore[return-value]


def cosine_parts(
    candidate: list[torch.Tensor], target: list[torch.Tensor], weights: list[float] | None = None,
    out: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``cosine`` over parts: ``1 - <c, t>_w / (|c|_w |t|_w + eps)``. With ``D = |c| |t| + eps`` its gradient is
    ``-w_k (t_k / D - <c, t> |t| c_k / (|c| D^2))``.

    The gradient is written once and updated in place (ResNet-18: 11 M entries, each pass over them ~45 MB), into
    ``out`` (one tensor shaped like each part) when given: the caller's buffers, reused across iterations, also
    hold the products of the reductions, so no parameter-sized tensor is allocated (a fresh 9 MB one costs its
    page faults: ~20 ms per ResNet-18 512x512 layer on a loaded machine, torch.profiler). The reductions are
    ``vecdot``'s own (product, then pairwise sum; bit for bit): a BLAS ``mv`` or ``vector_norm`` would skip the
    product but, in float32 over 11 M entries, err ~1e-6 and ~1e-3 relative where this errs ~1e-8 (measured)."""
    w = _weights(candidate, weights)
    bufs = out if out is not None else [torch.empty_like(c) for c in candidate]
    dot = sum(wk * torch.mul(c, t, out=o).sum(-1) for wk, c, t, o in zip(w, candidate, target, bufs))
    cc = sum(wk * torch.mul(c, c, out=o).sum(-1) for wk, c, o in zip(w, candidate, bufs))
    tt = sum(wk * torch.linalg.vecdot(t, t) for wk, t in zip(w, target))
    nc, nt = cc.sqrt(), tt.sqrt()  # type: ignore[union-attr]
    d = nc * nt + 1e-12
    value = 1.0 - dot / d
    a = (-1.0 / d).unsqueeze(-1)  # coefficient of t_k
    b = (dot * nt / (nc.clamp_min(1e-30) * d * d)).unsqueeze(-1)  # coefficient of c_k
    grads = []
    for wk, c, t, o in zip(w, candidate, target, bufs):
        g = torch.mul(c, b, out=o).addcmul_(a, t)
        grads.append(g if wk == 1.0 else g.mul_(wk))
    return value, grads  # type: ignore[return-value]


CLOSED_FORMS["l2"] = squared_l2_parts
CLOSED_FORMS["cosine"] = cosine_parts
