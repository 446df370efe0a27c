"""Numerical rank of a gradient block, decided where it does not depend on the last bits of the arithmetic.

Several attacks read how many independent inputs a gradient holds off its singular values: DAGER and the subspace
attack (Petrov et al. 2024) the span of a projection's inputs, SPEAR (Dimitrov et al. 2024) the batch behind a
linear layer, R-GAP (Zhu and Blaschko 2021) whether a layer's system has full rank. A fixed tolerance near the
float32 rounding floor (``s_k > 1e-8 s_0``) makes that decision depend on the BLAS code path when a true direction
sits next to the floor: on bert-tiny (60 tokens, width 64) the 60th and 61st singular values of the float32
gradient are 1.2e-8 and 7.3e-9 of the largest, and which side of 1e-8 they fall on changed between MKL's AVX2/
AVX-512 and its conditional-numerical-reproducibility path.

``decide_rank`` decides instead against an estimate of the gradient's own rounding noise, in float64:

- the **noise floor** is twice the spectral norm expected of the rounding of every entry of the gradient as
  stored (relative error uniform in ``+-eps/2`` of its dtype, independent entries: a random ``m x n`` matrix with
  entries of r.m.s. ``eps |G|_F / (2 sqrt(3 m n))`` has spectral norm about that times ``sqrt(m) + sqrt(n)``).
  Rounding accumulated over the summed per-token terms adds to it. Measured, the largest pure-noise singular
  value over this floor, on both CPU code paths: 0.4 (bert-tiny, one dominant token), 0.5-0.7 (storage rounding
  alone, ``tests/attacks/test_rank.py``), 1.8-2.5 (gpt2-mini LoRA, 59 tokens), 2.5-3.9 (bert-mini, 94 tokens;
  GPT-2-small, 330 tokens);
- the cut is the largest ratio ``s[k-1] / s[k]`` between consecutive singular values among the cuts whose first
  dropped value can be noise (``s[k]`` below ``floor * REACH``, for the accumulated rounding above) and whose last
  kept value is not (``s[k-1]`` above ``floor / WINDOW``), clamped to ``[least, most]``. A ratio of at least
  ``min_gap`` is a clear decision; below it the rank is the count of singular values above the floor and the decision is flagged
  ``ambiguous``, with the cuts within ``WINDOW`` of the floor on either side as ``candidates`` for a caller that
  can test them (DAGER does).

``largest_gap`` is the same cut without the floor, for spectra whose noise is not rounding (the subspace attack on
quantised or noised updates). Attacks record each decision with ``record`` (``details["rank_decision"][key]``) and
say the ambiguous ones with ``surface`` (``details["ambiguous_rank"]``, one line each, and a ``RuntimeWarning``).

An explicit ``rtol`` (the old rule, ``s_k > rtol s_0``) stays available as a validated override; its decision is
flagged in the same way when the cut falls in no gap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from gradleak.errors import ConfigError

#: the smallest ratio of consecutive singular values that counts as a clear cut. Measured on both CPU code paths:
#: true-vs-noise cuts 30-36 (trained GPT-2-small, layer 2), 200-6e4 (GPT-2-small, bert-mini, LoRA), 12-14
#: (bert-tiny seed 2); the cuts at the float32 floor with no gap (bert-tiny seeds 0 and 1) 1.3-1.7
MIN_GAP = 10.0
#: cuts within this factor of the noise floor, on either side, are the candidates of an ambiguous decision
WINDOW = 4.0
#: a clear gap may drop to values up to this factor above the floor (measured noise: 0.4 to 3.9 times the floor)
REACH = 100.0
#: the floor is this many times the expected spectral norm of the storage rounding alone
FLOOR_FACTOR = 2.0


@dataclass(frozen=True)
class RankDecision:
    """A numerical rank and how clearly the spectrum supports it.

    ``gap``: ``s[rank-1] / s[rank]`` (the kept direction over the first dropped one; with nothing dropped, the
    smallest kept value over the noise floor, or over the tolerance of the ``rtol`` rule); ``floor``: the noise
    floor relative to the largest singular value; ``rule``: ``"gap"`` (a clear drop near the floor), ``"floor"``
    (no clear drop: the count above the floor), ``"rtol"`` (the caller's explicit tolerance), ``"most"`` (no
    clear drop below the caller's bound: the bound), ``"bound"`` (the caller's bound, no decision from the
    spectrum) or how the caller chose among ``candidates`` (``with_rank``)."""

    rank: int
    gap: float
    ambiguous: bool
    floor: float
    rule: str
    candidates: tuple[int, ...] = field(default=())

    def details(self) -> dict[str, Any]:
        """JSON-friendly summary for ``Reconstruction.details``."""
        out: dict[str, Any] = {"rank": self.rank, "gap": _finite(self.gap), "ambiguous": self.ambiguous,
                               "floor": _finite(self.floor), "rule": self.rule}
        if self.ambiguous:
            out["candidates"] = list(self.candidates)
        return out

    def with_rank(self, rank: int, s: torch.Tensor, rule: str = "fixed") -> RankDecision:
        """The same decision with ``rank`` chosen by the caller among the candidates (the gap is recomputed)."""
        return RankDecision(rank, _gap(s, rank, self.floor * float(s[0]) if s.numel() else 0.0), self.ambiguous,
                            self.floor, rule, self.candidates)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def _gap(s: torch.Tensor, k: int, floor_abs: float) -> float:
    if k <= 0 or not s.numel():
        return 0.0
    lower = float(s[k]) if k < s.numel() else floor_abs
    return float(s[k - 1]) / max(lower, 1e-300)


def check_rtol(rtol: float | None, who: str) -> None:
    """An explicit relative tolerance must lie in ``(0, 1)``; ``None`` leaves the decision to the spectrum."""
    if rtol is not None and not (isinstance(rtol, (int, float)) and 0.0 < float(rtol) < 1.0):
        raise ConfigError(f"{who}: rtol must be a number in (0, 1), or unset to cut at the spectrum's gap; "
                          f"got {rtol!r}")


def noise_floor(s: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> float:
    """The rounding-noise floor of a gradient stored in ``dtype``, relative to its largest singular value ``s[0]``
    (``s``: all its singular values, so that ``|G|_F = |s|``). See the module docstring."""
    if not s.numel() or float(s[0]) <= 0:
        return 0.0
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    m, n = shape[0], math.prod(shape[1:])
    fro = float(s.norm())
    return FLOOR_FACTOR * eps * fro * (m ** -0.5 + n ** -0.5) / (2 * math.sqrt(3)) / float(s[0])


def spectrum(grad: torch.Tensor, inputs_on: str = "columns") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Left singular vectors ``U`` and singular values (float64) of a gradient block, ``G`` for
    ``inputs_on="columns"``, ``G^T`` for ``"rows"``, and its noise floor relative to ``s[0]`` for the dtype the
    gradient was shared in."""
    g = grad.detach()
    floor_dtype = g.dtype
    g = g.double()
    g = g if inputs_on == "columns" else g.T
    u, s, _ = torch.linalg.svd(g, full_matrices=False)
    return u, s, noise_floor(s, tuple(g.shape), floor_dtype)


def decide_rank(s: torch.Tensor, floor: float, *, least: int = 0, most: int | None = None,
                min_gap: float = MIN_GAP, rtol: float | None = None) -> RankDecision:
    """The numerical rank of a matrix with singular values ``s`` (descending, float64) and noise floor ``floor``
    relative to ``s[0]``; ``least``/``most``: bounds the caller knows (batch size, tokens in the batch);
    ``rtol``: an explicit tolerance instead of the floor (validated by ``check_rtol``)."""
    s = s.detach().double().cpu()
    size = int(s.numel())
    most = size if most is None else max(0, min(int(most), size))
    least = max(0, min(int(least), most))
    if not size or float(s[0]) <= 0:
        return RankDecision(0, 0.0, False, floor, "gap")
    top = float(s[0])
    floor_abs = floor * top
    if rtol is not None:
        rank = min(max(int((s > rtol * top).sum()), least), most)
        gap = _gap(s, rank, max(floor_abs, rtol * top))  # nothing dropped: the smallest over the tolerance
        return RankDecision(rank, gap, gap < min_gap, floor, "rtol", (rank,))
    above = min(max(int((s > floor_abs).sum()), least), most)

    def near(reach: float) -> list[int]:
        return [k for k in range(max(least, 1), most + 1)
                if float(s[k - 1]) > floor_abs / WINDOW and (k == size or float(s[k]) < floor_abs * reach)]

    cuts = sorted({*near(REACH), above} - {0}) or [above]
    gaps = {k: _gap(s, k, floor_abs) for k in cuts}
    best = max(cuts, key=lambda k: gaps[k])
    if gaps[best] >= min_gap:
        return RankDecision(best, gaps[best], False, floor, "gap", (best,))
    candidates = sorted({*near(WINDOW), above} - {0}) or [above]
    return RankDecision(above, _gap(s, above, floor_abs), True, floor, "floor", tuple(candidates))


def largest_gap(s: torch.Tensor, *, least: int = 1, most: int | None = None, min_gap: float = MIN_GAP,
                floor: float = 0.0) -> RankDecision:
    """The cut at the largest ratio ``s[k-1] / s[k]`` for ``least <= k < most`` when it reaches ``min_gap``, else
    ``most`` flagged ambiguous (``rule="most"``); no noise floor (``floor`` is only reported)."""
    s = s.detach().double().cpu()
    size = int(s.numel())
    most = size if most is None else max(0, min(int(most), size))
    if not size or float(s[0]) <= 0 or most == 0:
        return RankDecision(0, 0.0, False, floor, "gap")
    floor_abs = floor * float(s[0])
    cuts = list(range(max(least, 1), most)) or [most]
    gaps = {k: _gap(s, k, floor_abs) for k in cuts}
    best = max(cuts, key=lambda k: gaps[k])
    if gaps[best] >= min_gap:
        return RankDecision(best, gaps[best], False, floor, "gap", (best,))
    return RankDecision(most, _gap(s, most, floor_abs), True, floor, "most", tuple(cuts))


def record(details: dict[str, Any], key: str, decision: RankDecision | None) -> None:
    """``details["rank_decision"][key]``: a decision's rank, gap, ambiguity, floor and rule."""
    if decision is not None:
        details.setdefault("rank_decision", {})[key] = decision.details()


def surface(details: dict[str, Any], who: str) -> list[str]:
    """Every ambiguous decision recorded in ``details``, one line each, in ``details["ambiguous_rank"]`` and as a
    ``RuntimeWarning``: a rank taken with no clear gap is said, not taken silently. Returns the lines."""
    notes = []
    for key, d in details.get("rank_decision", {}).items():
        if d["ambiguous"]:
            among = f", among {d['candidates']}" if d.get("candidates") else ""
            notes.append(f"{key}: rank {d['rank']} at a drop of {d['gap']:.3g}, below {MIN_GAP:g} "
                         f"(no clear gap; kept by {d['rule']}{among})")
    if notes:
        details["ambiguous_rank"] = notes
        warnings.warn(f"{who}: ambiguous rank: " + "; ".join(notes), RuntimeWarning, stacklevel=3)
    return notes
