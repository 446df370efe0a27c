"""DAGER's layer-1 test when the client trained with dropout on (a train-mode step of a ``transformers`` model).

Where dropout enters the first layer's input (measured on ``transformers``' GPT-2 and BERT forwards):

- GPT-2 drops the embedding sum before the first block (``embd_pdrop``): layer 1's query/key/value input is
  ``ln_1(m * (wte[v] + wpe[p]) / (1 - q))`` for a per-token mask ``m`` the attacker does not see. Attention and
  residual dropout (``attn_pdrop``, ``resid_pdrop``) act after that input and do not touch it.
- BERT drops after the embedding layer norm (``hidden_dropout_prob``): the first query's input is
  ``m * LN(e) / (1 - q)``.

So the clean candidate is not in the span of the gradient, but its masked copy is. Write ``x`` for the candidate
before the mask (GPT-2: ``gamma * (wte[v] + wpe[p])``, the norm's scale applied; BERT: ``LN(e)``) and ``S`` for the
span (GPT-2: widened by the norm's ``gamma`` and ``beta``, which the normalisation adds with unknown weights): the
true token has a mask ``m`` (about ``q`` of the coordinates off) with ``m * x`` in ``S``, a wrong token has none.
The test searches the mask greedily: starting from ``m = 1``, it switches off the coordinate whose removal lowers
``|P(m x)|`` most (``P``: the projector on ``S``'s complement; one rank-1 update of the residual per step) and
keeps the smallest relative residual ``|P(m x)| / |m x|`` seen within ``share`` of the coordinates. True tokens
reach the rounding floor (0 to 4 decimals), wrong ones stay above 0.06 (GPT-2 width 256, 170 batch tokens) and 0.13
(width 768, 330 tokens); ``benchmarks/bench_text.py --only dropout``.

This models the masks as unknowns, as GRAB does (Li et al. 2024, "Seeing the Forest through the Trees: Data
Leakage from Partial Transformer Gradients"/"GRAB", CCS 2024), but exactly and per token: one binary mask of the
first layer's input, found by a greedy search instead of by gradient descent on relaxed masks.
"""

from __future__ import annotations

import math

import torch

from gradleak.attacks.text.spans import Span

#: switched-off coordinates searched, as a share of the width: twice the transformers default rate of 0.1
#: (a mask's count is Binomial(d, q): at d = 64 and q = 0.1, 2 standard deviations above the mean is 0.18)
SEARCH_SHARE = 0.2


def widened_projector(span: Span, extra: list[torch.Tensor]) -> torch.Tensor:
    """The projector ``(d, d)`` (float64) on the orthogonal complement of ``span`` widened by the ``extra``
    directions (a layer norm's scale and shift, which it adds with unknown weights)."""
    basis = span.basis.double()
    if extra:
        basis = torch.cat([basis, *[e.detach().double().reshape(-1, 1).to(basis.device) for e in extra]], dim=1)
    q, _ = torch.linalg.qr(basis)
    return torch.eye(q.shape[0], dtype=torch.float64, device=q.device) - q @ q.T


def masked_distance(candidates: torch.Tensor, projector: torch.Tensor, share: float = SEARCH_SHARE,
                    chunk: int = 512, masks: bool = False,
                    refine: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """For each candidate row ``x`` of ``(n, d)``, the smallest ``|P(m x)| / |m x|`` over the masks ``m`` met by a
    greedy search switching off up to ``share`` of the coordinates (see the module docstring); ``(n,)``. With
    ``masks``, also the mask ``(n, d)`` (bool, True: kept) at which each candidate reached it. ``refine``: after
    each switch-off, switch back on the coordinate that lowers the residual most, if one does (undoes an early
    wrong step; about 3 times slower: for a shortlist)."""
    x_all = candidates.detach().double().to(projector.device)
    n, d = x_all.shape
    steps = max(1, int(math.ceil(share * d)))
    diag = projector.diagonal()
    out, kept = [], []
    for i in range(0, n, chunk):
        original = x_all[i:i + chunk]
        x = original.clone()
        on = torch.ones_like(x, dtype=torch.bool)
        best_on = on.clone()
        r = x @ projector
        n2 = (x * x).sum(1)
        best = r.norm(dim=1) / n2.clamp_min(1e-300).sqrt()
        for _ in range(steps):
            # switching off coordinate j changes |r|^2 by -2 x_j r_j + x_j^2 P_jj (P symmetric, idempotent)
            j = (2 * x * r - x * x * diag).argmax(1, keepdim=True)
            xj = x.gather(1, j)
            r -= xj * projector[j[:, 0]]
            x.scatter_(1, j, 0.0)
            n2 -= xj[:, 0] ** 2
            on.scatter_(1, j, False)
            if refine:  # switching coordinate k back on changes |r|^2 by 2 x_k r_k + x_k^2 P_kk
                back = torch.where(on, torch.full_like(r, -math.inf), -(2 * original * r + original ** 2 * diag))
                k = back.argmax(1, keepdim=True)
                undo = back.gather(1, k)[:, 0] > 0
                xk = torch.where(undo, original.gather(1, k)[:, 0], torch.zeros_like(n2))
                r += xk[:, None] * projector[k[:, 0]]
                x.scatter_(1, k, torch.where(undo[:, None], original.gather(1, k), x.gather(1, k)))
                on.scatter_(1, k, undo[:, None] | on.gather(1, k))
                n2 += xk ** 2
            dist = r.norm(dim=1) / n2.clamp_min(1e-300).sqrt()
            if masks:
                better = dist < best
                best_on[better] = on[better]
            best = torch.minimum(best, dist)
        out.append(best)
        kept.append(best_on)
    distances = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    if masks:
        return distances, torch.cat(kept) if kept else torch.zeros(0, d, dtype=torch.bool)
    return distances


#: free coordinates of ``free_distance``: two records' masks drop about 19 % at the default rate; at 0.25 of GPT-2-
#: small's width (batch 8, 330 tokens) true tokens sit at 5e-8, wrong ones above 0.028 (at 0.4: 0.004)
FREE_SHARE = 0.25


def free_distance(candidates: torch.Tensor, projector: torch.Tensor, share: float = FREE_SHARE) -> torch.Tensor:
    """For each candidate row ``x`` of ``(n, d)``: the smallest ``|P(x - z)| / |x|`` over vectors ``z`` on up to
    ``share`` of the coordinates, chosen greedily (orthogonal matching pursuit, Pati et al. 1993, on the
    complement's coordinate atoms). It certifies a token the mask search misses: one that sits at the same
    position in two records, whose two masked copies are both in the span but whose combinations are not a
    single masked copy (the mask search only zeroes coordinates; here the coordinates either record dropped are
    free). Costly (one pass over the width per step): for a shortlist. Freeing coordinates brings wrong tokens
    nearer too, so its threshold is tighter (DAGER: a twentieth of the mask search's)."""
    x = candidates.detach().double().to(projector.device)
    values, vectors = torch.linalg.eigh(projector)
    comp = vectors[:, values > 0.5]  # (d, m): an orthonormal basis of the complement
    residual = x @ comp  # (n, m)
    norms = x.norm(dim=1).clamp_min(1e-300)
    atoms = comp / comp.norm(dim=1, keepdim=True).clamp_min(1e-300)  # coordinate j seen in the complement
    best = residual.norm(dim=1) / norms
    chosen: list[torch.Tensor] = []
    for _ in range(max(1, int(math.ceil(share * x.shape[1])))):
        j = (residual @ atoms.T).abs().argmax(1)
        a = atoms[j]
        for q in chosen:
            a = a - (a * q).sum(1, keepdim=True) * q
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
        chosen.append(a)
        residual = residual - (residual * a).sum(1, keepdim=True) * a
        best = torch.minimum(best, residual.norm(dim=1) / norms)
    return best
