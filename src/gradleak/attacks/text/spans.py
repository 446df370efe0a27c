"""The low-rank structure DAGER builds on (Petrov et al. 2024): a linear layer's weight gradient spans its inputs.

For a linear map ``y = x W`` applied to every token of a batch, ``dL/dW = X^T dL/dY``: each column of the weight
gradient is a combination of the layer's inputs ``x``. When the batch holds fewer tokens than the layer is wide,
that span is a proper subspace, and a candidate input lies in it (distance ~0) exactly when it was one of the
inputs, up to numerical noise. ``Span`` holds an orthonormal basis of that subspace, from an SVD of the gradient;
``distance`` is the relative distance of candidates to it.

The layouts differ by library: GPT-2's ``Conv1D`` stores ``W`` as ``(in, out)`` (inputs span the columns of the
gradient), ``nn.Linear`` as ``(out, in)`` (inputs span the rows), LoRA's ``A`` as ``(r, in)`` (rows, rank <= r).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.attacks.rank import MIN_GAP, RankDecision, decide_rank, spectrum


@dataclass
class Span:
    """An orthonormal basis ``(d, rank)`` of the subspace the layer's inputs lie in, and the singular values."""

    basis: torch.Tensor
    singular_values: torch.Tensor
    #: an orthonormal basis of the span's orthogonal complement ``(d, d - rank)``, when the SVD gave one (the
    #: gradient has at least as many columns as the input dimension): distances are then one product
    complement: torch.Tensor | None = None
    #: how the rank was decided (``gradleak.attacks.rank``): its gap, and whether it is ambiguous
    decision: RankDecision | None = None
    #: all left singular vectors, so that another rank can be cut from the same SVD (``at_rank``)
    vectors: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def of_gradient(cls, grad: torch.Tensor, inputs_on: str, rtol: float | None = None, max_rank: int | None = None,
                    *, least: int = 0, min_gap: float = MIN_GAP) -> Span:
        """The span of a weight gradient's columns (``inputs_on="columns"``) or rows (``"rows"``). The rank is cut
        where the spectrum (float64 SVD of the float64-cast gradient) drops from the inputs' directions to the
        gradient's rounding noise (``rank.decide_rank``), within ``[least, max_rank]``; ``rtol``: an explicit
        tolerance instead (singular values below ``rtol`` times the largest are dropped)."""
        u, s, floor = spectrum(grad, inputs_on)
        decision = decide_rank(s, floor, least=least, most=max_rank, min_gap=min_gap, rtol=rtol)
        return cls.cut(u, s, decision)

    @classmethod
    def cut(cls, u: torch.Tensor, s: torch.Tensor, decision: RankDecision) -> Span:
        """The span of the first ``decision.rank`` left singular vectors ``u``."""
        rank = decision.rank
        square = u.shape[0] == u.shape[1]
        return cls(u[:, :rank], s, u[:, rank:] if square else None, decision, u)

    def at_rank(self, rank: int) -> Span:
        """The span cut at another rank (one of ``decision.candidates``), from the same SVD."""
        assert self.vectors is not None and self.decision is not None
        return Span.cut(self.vectors, self.singular_values, self.decision.with_rank(rank, self.singular_values))

    def distance(self, candidates: torch.Tensor) -> torch.Tensor:
        """Relative distance ``|x - P x| / |x|`` of each candidate row ``(..., d)`` to the span."""
        x = candidates.detach().double()
        if self.complement is not None:  # |x - P x| = |C^T x|: one product, no cancellation
            residual = (x @ self.complement).norm(dim=-1)
        else:
            residual = (x - (x @ self.basis) @ self.basis.T).norm(dim=-1)
        return residual / x.norm(dim=-1).clamp_min(1e-30)

    @property
    def full(self) -> bool:
        """Whether the span is the whole space: the test then says nothing (too many tokens for the width)."""
        return self.rank >= self.basis.shape[0]
