"""A noise-tolerant span attack: rank candidates by their distance to the gradient's dominant subspace.

DAGER (Petrov et al. 2024) accepts a token when its layer-1 input lies in the span of the projection gradient to
within ~1e-3; a quantised (fp16/int8) or lightly noised update fills every direction, the span becomes the whole
space (or the true tokens sit at ~1e-2), and that discrete test accepts nothing or everything. The idea here (after
TIGER, 2026: distances to the gradient's subspace as a soft objective rather than a hard test) is to keep only the
top ``batch_size * seq_len`` singular directions (the batch cannot hold more tokens) and to *rank*: at each position
the true tokens are the closest to that subspace, and separated from the rest by the largest jump in distance
(at most ``batch_size`` distinct tokens per position); prefixes are then extended by the continuation whose
layer-2 input is closest to the layer-2 subspace (every unfinished true prefix has one), plus branches whose
distance is as small as the accepted ones. No threshold on absolute distances, so the scale of the noise does not
matter, only that the true directions still dominate the gradient.

Options, off by default: ``gap`` (rank from the singular-value gap) and ``stop_ratio`` (end a record when its best
continuation jumps). On gpt2-mini, batch 4 (171 tokens) together they raise ROUGE-1 from 0.67 to 0.89 (fp16) and
0.68 to 0.83 (Gaussian 1e-6); int8 (no gap in the spectrum) stays at 0.34. On GPT-2-small, batch 8, Gaussian 1e-6
they move ROUGE-1 from 0.31 to 0.34 only (before the cut was floored at the batch size, the layer-2 gap fell at rank
1 and gave 0.10), so neither is the default yet.

``search="continuous"`` (off by default, see the figures below) then refines those records by TIGER's idea
(Kalikman et al. 2026: optimise token embeddings toward the gradient's subspace instead of testing tokens one by
one; this is our reading of it, not the paper's code), starting from them: each record's token at each position is
a softmax over that position's shortlist (a relaxed distribution over the tokens the layer-1 distances rank
first), fed as a convex combination of their embeddings through the first block with its causal attention; Adam
minimises the logarithms of the soft distances of every position's layer-1 and layer-2 input to the gradients'
subspaces, plus a closed-form gradient-matching term (the share of the layer-2 gradient the batch's layer-2 inputs
leave unexplained: ``G = Y^T Delta`` with the errors ``Delta`` solved by least squares) and a coverage term (the
tokens the layer-1 gap puts in the span at a position must be held by some record: under noise a record's weaker
token lies farther from the span than another record's token there, and distances alone give both records the
stronger one). The subspaces are weighted, not cut: direction ``j`` counts ``s_j^2 / (s_j^2 + lambda^2)``, with
``lambda`` the first singular value the batch cannot fill (index ``batch * seq_len``: the noise's level read off
the update itself). The relaxed records are projected to tokens, ``assemble_sweeps`` coordinate sweeps try every
shortlisted token at every position on the exact (hard-token) objective, a record keeps its greedy tokens where
those fit better, and each record ends after its last position below the largest jump in its distances (its
end-of-sequence token and the positions past it are in no span); the greedy search runs on past that end.

Measured (``bench_text_optimization.py --only noise-dp``, GPT-2-small shape, width 768, random init, seed 0; two
CPU cores shared by six jobs): batch 1 (59 tokens), Gaussian 1e-6 / 1e-5 and fp16: greedy ROUGE-1 0.962, exact 0;
continuous 1.000, exact (the end cut), 150-180 s against 40-60 s; Gaussian 1e-4 and int8: both 0.962. Batch 4
(166 tokens), Gaussian 1e-5: greedy 0.779 / 0.747, continuous 0.798 / 0.766, exact 0.25; Gaussian 1e-4 0.521 and
int8 0.744 for both. At batch 4 every record kept its greedy tokens (the relaxed optimum fit the exact objective
worse): the gain is the end cut, which ``steps=1, assemble_sweeps=0`` keeps at the greedy search's cost. DP-SGD
(clip 1, sigma >= 0.1): nothing, by any of them (the noise's singular values, ~7.5 at sigma 0.1 and batch 1, lie
above the first layer's whole clipped gradient). DAGER with default settings: exact at batch 1 up to Gaussian 1e-5
and fp16; 0 at Gaussian 1e-4 and int8, and at batch 4 from Gaussian 1e-5 (the span is the whole space), where the
subspace attack still recovers ROUGE-1 0.52-0.96.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch.nn import functional as F

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.rank import RankDecision, largest_gap, record, spectrum, surface
from gradleak.attacks.text.dager import _GPT2, _find, architecture
from gradleak.attacks.text.spans import Span
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation


def _bound_gap(s: torch.Tensor, rank: int) -> float:
    """``s[rank-1] / s[rank]``, reported beside a rank fixed by the batch's token count."""
    if rank <= 0 or rank >= s.numel():
        return 0.0
    return float(s[rank - 1] / s[rank].clamp_min(1e-300))


def _largest_gap(sorted_distances: torch.Tensor, most: int) -> int:
    """How many of the smallest distances to keep: the cut (1..most) before the largest ratio jump."""
    d = sorted_distances[: most + 1].clamp_min(1e-30)
    if d.numel() < 2:
        return int(d.numel())
    ratios = d[1:] / d[:-1]
    return int(torch.argmax(ratios)) + 1


@dataclass
class SubspaceAttack(Attack):
    """Token sequences from a noised or quantised transformer update by subspace distance ranking (decoders).

    ``extra``: layer-1 candidates kept per position beyond the gap cut (layer 2 decides among them);
    ``branch_ratio``: a second continuation of a prefix is kept when its layer-2 distance is within this factor
    of the largest distance already accepted at that position; ``gap``: the subspace keeps the singular directions
    above the largest drop ``s_k / s_{k+1} > gap`` (the true tokens over the noise floor; else ``batch * seq_len``;
    0: always that); ``stop_ratio``: a sequence ends when its best continuation lies farther than this times the
    median accepted distance (past a record's end no token is in the span; 0: never); ``search``: ``greedy``
    (the ranking search alone) or ``continuous`` (then the relaxed-token refinement: ``steps`` Adam steps of
    rate ``lr`` on the logits, ``assemble_sweeps`` discrete sweeps)."""

    name: ClassVar[str] = "subspace"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"tokens"})
    tasks: ClassVar[frozenset[str]] = frozenset({"causal_lm"})
    extra: int = 4
    branch_ratio: float = 1.0
    gap: float = 0.0
    stop_ratio: float = 0.0
    search: Literal["greedy", "continuous"] = "greedy"
    steps: int = 150
    lr: float = 0.1
    assemble_sweeps: int = 1

    def settings(self) -> dict[str, Any]:
        return {"extra": self.extra, "branch_ratio": self.branch_ratio, "gap": self.gap,
                "stop_ratio": self.stop_ratio, "search": self.search, "steps": self.steps, "lr": self.lr,
                "assemble_sweeps": self.assemble_sweeps}

    def _span(self, arch: _GPT2, layer: int, rank: int, least: int = 1) -> Span:
        name = _find(arch.update, (f"h.{layer}.attn.c_attn.weight",))
        if name is not None:
            return self._cut(arch.update[name], "columns", rank, least)
        lora = _find(arch.update, (f"h.{layer}.attn.c_attn.lora_A.default.weight",
                                   f"h.{layer}.attn.c_attn.lora_A.weight"))
        if lora is not None:
            return self._cut(arch.update[lora], "rows", rank, least)
        raise ConfigError(f"subspace attack needs layer {layer}'s c_attn gradient; the update holds none")

    def _cut(self, grad: torch.Tensor, inputs_on: str, most: int, least: int = 1) -> Span:
        """The top singular directions (float64 SVD, ``rank.spectrum``): up to the largest drop ``s_k / s_{k+1}``
        for ``least <= k <= most`` when that drop reaches ``gap`` (the true tokens' directions stand above the
        update's noise, which here is quantisation or added noise, not rounding: ``rank.largest_gap``), else all
        ``most`` (flagged ambiguous when ``gap`` was asked for). The batch holds at least ``least`` (= batch size)
        distinct inputs, so no cut falls below it."""
        u, s, floor = spectrum(grad, inputs_on)
        if self.gap > 0:
            decision = largest_gap(s, least=least, most=most, min_gap=self.gap, floor=floor)
        else:  # the bound alone: no decision from the spectrum
            most = min(most, int(s.numel()))
            decision = RankDecision(most, _bound_gap(s, most), False, floor, "bound")
        return Span.cut(u, s, decision)

    def reconstruct(self, obs: Observation, *, device: torch.device | str = "cpu", seed: int | None = None,
                    callback: Callback | None = None, progress: bool = False) -> Reconstruction:
        start = time.perf_counter()
        if not isinstance(obs.inputs, TokenInput):
            raise ConfigError("subspace attack needs token inputs")
        model = obs.build_model(device).eval()
        arch = architecture(model, {k: v.to(device).float() for k, v in obs.gradient_estimate().items()})
        if not isinstance(arch, _GPT2):
            raise ConfigError("subspace attack: decoders (GPT-2 layout) only; use dager for encoders")
        batch, length = max(obs.batch_size, 1), obs.inputs.seq_len
        rank = batch * length
        span1, span2 = self._span(arch, 0, rank, batch), self._span(arch, 1, rank, batch)
        per_position: list[list[int]] = []
        in_span: list[int] = []  # per position: how many of its first-ranked tokens the records must hold
        for p in range(length):
            d = span1.distance(arch.first_inputs(p))
            order = torch.argsort(d)
            inside = _largest_gap(d[order], batch)
            in_span.append(inside)
            per_position.append([int(v) for v in order[:inside + self.extra]])
        config = getattr(arch.model, "config", None)
        ends = {t for t in (getattr(config, "eos_token_id", None), obs.inputs.pad_token_id) if t is not None}
        device_ = arch.t.wte.weight.device
        first = torch.tensor([[v] for v in per_position[0]], device=device_)
        d0 = span2.distance(arch.second_inputs(first))
        order = torch.argsort(d0)
        active = [[per_position[0][int(i)]] for i in order[: _largest_gap(d0[order], batch)]]
        finished: list[list[int]] = []
        accepted: list[float] = []
        for p in range(1, length):
            extendable = [a for a in active if a[-1] not in ends]
            finished += [a for a in active if a[-1] in ends]
            if not extendable:
                active = []
                break
            tokens = per_position[p]
            dist = torch.cat([span2.distance(arch.second_inputs_extending(extendable[i:i + 64], tokens))
                              for i in range(0, len(extendable), 64)])
            best = dist.argmin(dim=1)
            best_d = dist[torch.arange(len(extendable)), best]
            going = list(range(len(extendable)))
            if self.stop_ratio > 0 and len(accepted) >= 3:
                # past its end a record has no true continuation (its last token, end-of-sequence, feeds no loss,
                # so it is not in the span): the best distance jumps well above the accepted ones
                limit = self.stop_ratio * float(torch.tensor(accepted).median())
                going = [a for a in going if float(best_d[a]) <= limit]
                finished += [extendable[a] for a in range(len(extendable)) if a not in going]
                if not going:
                    active = []
                    break
            accepted += [float(best_d[a]) for a in going]
            chosen = {(a, int(best[a])) for a in going}
            bar = float(best_d[going].max()) * self.branch_ratio
            room = batch - len(finished) - len(chosen)
            if room > 0:
                flat = dist.clone()
                flat[torch.arange(len(extendable)), best] = float("inf")
                flat[[a for a in range(len(extendable)) if a not in going]] = float("inf")
                values, idx = torch.sort(flat.flatten())
                for v, i in zip(values[:room].tolist(), idx[:room].tolist()):
                    if v <= bar:
                        chosen.add((i // len(tokens), i % len(tokens)))
            active = [extendable[a] + [tokens[v]] for a, v in sorted(chosen)]
        finished += active
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else 0
        rows = [(s + [pad] * length)[:length] for s in finished][:batch]
        while len(rows) < batch:
            rows.append([pad] * length)
        details: dict[str, Any] = {"rank": [span1.rank, span2.rank],
                                   "candidates_per_position": [len(c) for c in per_position],
                                   "sequences_found": len(finished)}
        if self.search == "continuous":
            relaxed = _Relaxed(arch, rank, per_position, pad, in_span)
            rows, refined = relaxed.refine(rows, self.steps, self.lr, self.assemble_sweeps, seed)
            details["continuous"] = refined
        record(details, "layer1", span1.decision)
        record(details, "layer2", span2.decision)
        surface(details, "subspace")
        return Reconstruction(inputs=torch.tensor(rows, dtype=torch.long), labels=None, attack=self.name,
                              settings=self.settings(), iterations=1, wall_time_s=time.perf_counter() - start,
                              details=details)


#: floor of the distances whose logarithms are minimised, and the positions a token is judged on (its own and the
#: next ones, whose layer-2 inputs it enters; farther ones are mostly past the record's end)
_EPS, _AHEAD = 1e-7, 4


def _log(d: torch.Tensor) -> torch.Tensor:
    return (d.clamp_min(0.0) + _EPS).log()


def _soft_weights(grad: torch.Tensor, most: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The left singular vectors ``(d, k)`` of a Conv1D gradient (inputs on its columns) and their weights
    ``s_j^2 / (s_j^2 + lambda^2)``, ``k = min(most, d)``; ``lambda = s_most`` (the first direction the batch's
    ``most`` tokens cannot fill: the noise's level), or the smallest singular value past the width."""
    u, s, _ = spectrum(grad, "columns")
    k = min(most, int(s.numel()))
    lam = float(s[k]) if k < s.numel() else float(s[-1])
    w = s[:k].square() / (s[:k].square() + lam ** 2)
    return u[:, :k].float(), w.float(), lam


class _Relaxed:
    """The continuous refinement (``search="continuous"``): relaxed tokens over per-position shortlists, the
    soft subspace distances of their layer-1 and layer-2 inputs, and the exact objective of hard records."""

    def __init__(self, arch: _GPT2, rank: int, shortlist: list[list[int]], pad: int,
                 in_span: list[int] | None = None) -> None:
        self.arch, self.pad = arch, pad
        #: per position, the shortlist's first tokens that some record must hold (the layer-1 distances' gap cut:
        #: with noise a record's weaker token lies farther from the span than another record's token at the same
        #: position, so distances alone would give both records the stronger one)
        self.in_span = in_span if in_span is not None else [0] * len(shortlist)
        t = arch.t
        self.device = t.wte.weight.device
        names = [_find(arch.update, (f"h.{i}.attn.c_attn.weight",)) for i in (0, 1)]
        if None in names:
            raise ConfigError("subspace attack (continuous): needs the full c_attn gradients of layers 1 and 2")
        self.u1, self.w1, self.noise1 = _soft_weights(arch.update[names[0]], rank)
        self.u2, self.w2, self.noise2 = _soft_weights(arch.update[names[1]], rank)
        # the layer-2 gradient, matched in closed form: G = Y^T Delta with the least-squares errors Delta for the
        # candidate inputs Y leaves ||G||^2 - ||Q_Y^T G||^2 unexplained (Q_Y: an orthonormal basis of Y's rows)
        self.g2 = arch.update[names[1]].float()
        self.g2_energy = float(self.g2.square().sum())
        width = max(len(c) for c in shortlist)
        self.cands = torch.tensor([(c + [c[0]] * width)[:width] for c in shortlist], device=self.device)  # (L, m)
        self.valid = torch.tensor([[i < len(c) for i in range(width)] for c in shortlist], device=self.device)
        self.wte, self.wpe = t.wte.weight.detach(), t.wpe.weight.detach()

    def _distance(self, x: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Soft relative distance ``1 - sum_j w_j (u_j . x / |x|)^2`` of rows ``(..., d)``."""
        c = F.normalize(x, dim=-1) @ u
        return 1.0 - (c.square() * w).sum(-1)

    def _block(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-1 and layer-2 inputs ``(n, L, d)`` of embeddings ``e`` (word + position), through the first block
        with its causal attention (the same numbers as ``_GPT2.second_inputs`` at every position)."""
        t = self.arch.t
        block, attn = t.h[0], t.h[0].attn
        n, L, d = e.shape
        heads, head_dim = d // attn.head_dim, attn.head_dim
        scale = getattr(attn, "scaling", None) or head_dim ** -0.5
        x = block.ln_1(e)
        q, k, v = (z.view(n, L, heads, head_dim).transpose(1, 2) for z in attn.c_attn(x).split(d, dim=-1))
        causal = torch.ones(L, L, dtype=torch.bool, device=e.device).tril()
        scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))
        mixed = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, L, d)
        resid = e + attn.c_proj(mixed)
        hidden = resid + block.mlp(block.ln_2(resid))
        return x, t.h[1].ln_1(hidden)

    def _objective(self, e: torch.Tensor, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per position ``(n, L)`` soft distances (layer 1 + layer 2) and the batch's unexplained share of the
        layer-2 gradient (``joint``; 0 otherwise)."""
        x, y = self._block(e)
        per = self._distance(x, self.u1, self.w1) + self._distance(y, self.u2, self.w2)
        if not joint:
            return per, per.new_zeros(())
        rows = y.reshape(-1, y.shape[-1])
        q, _ = torch.linalg.qr(rows.T)  # (d, n L): the batch's layer-2 inputs' span
        explained = (q.T @ self.g2).square().sum() / self.g2_energy
        return per, 1.0 - explained

    def _embed_ids(self, rows: torch.Tensor) -> torch.Tensor:
        L = rows.shape[-1]
        return self.wte[rows] + self.wpe[:L]

    def refine(self, rows: list[list[int]], steps: int, lr: float, sweeps: int,
               seed: int | None) -> tuple[list[list[int]], dict[str, Any]]:
        L = self.cands.shape[0]
        B = len(rows)
        start = torch.tensor(rows, device=self.device)
        m = self.cands.shape[1]
        hit = self.cands[None] == start[..., None]  # (B, L, m): the greedy record's token in the shortlist
        z0 = torch.where(hit & self.valid, 3.0, 0.0).float()
        z0 = z0.masked_fill(~self.valid, float("-inf"))
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        z = (z0 + 0.01 * torch.randn(z0.shape, generator=gen).to(self.device)).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        cand_emb = self.wte[self.cands]  # (L, m, d)
        joint = B * L < self.wte.shape[1]
        must = torch.zeros(L, m, dtype=torch.bool, device=self.device)  # (L, m): tokens some record must hold
        for p, n in enumerate(self.in_span):
            must[p, :min(n, m)] = True
        trace = []
        for _ in range(steps):
            opt.zero_grad()
            pi = torch.softmax(z, dim=-1)
            e = torch.einsum("blm,lmd->bld", pi, cand_emb) + self.wpe[:L]
            per, unexplained = self._objective(e, joint)
            # logarithms: a position in the span (1e-5) against one out of it (1e-2) counts as much as the noise
            # level between two wrong tokens, so the positions past a record's end do not steer its tokens
            loss = _log(per).mean() + _log(unexplained)
            if B > 1 and bool(must.any()):  # coverage: the probability that some record holds each such token
                held = 1.0 - (1.0 - pi).clamp_min(0.0).prod(dim=0)  # (L, m)
                loss = loss - _log(held[must]).mean()
            loss.backward()
            opt.step()
            trace.append(float(loss.detach()))
        with torch.no_grad():
            ids = torch.gather(self.cands.expand(B, -1, -1), 2, z.argmax(-1, keepdim=True)).squeeze(-1)
            changed = 0
            for _ in range(sweeps):
                for b in range(B):
                    for p in range(L):
                        options = self.cands[p][self.valid[p]]
                        current = int(ids[b, p])
                        needed = set(self.cands[p][:self.in_span[p]].tolist())
                        if B > 1 and current in needed and current not in ids[torch.arange(B) != b, p].tolist():
                            continue  # the only record holding a token the span needs keeps it
                        # causal: the token at p moves only positions p.. (judged up to p + _AHEAD)
                        trial = ids[b, :p + _AHEAD].expand(len(options), -1).clone()
                        trial[:, p] = options
                        per, _ = self._objective(self._embed_ids(trial), False)
                        best = int(_log(per[:, p:]).sum(1).argmin())
                        changed += int(options[best] != ids[b, p])
                        ids[b, p] = options[best]
            # each record keeps the greedy search's tokens where they fit the subspaces better (a relaxed run can
            # settle in a worse basin than the one it started from)
            per, _ = self._objective(self._embed_ids(ids), False)
            before, _ = self._objective(self._embed_ids(start), False)
            worse = _log(per).sum(1) > _log(before).sum(1)
            ids = torch.where(worse[:, None], start, ids)
            per, unexplained = self._objective(self._embed_ids(ids), joint)
            keep, cut = _ends(per, [sum(int(v) != self.pad for v in r) for r in rows])
            out = torch.where(keep, ids, torch.full_like(ids, self.pad))
        return [[int(v) for v in r] for r in out], {
            "steps": steps, "objective": trace[-1] if trace else None, "objective_start": trace[0] if trace else None,
            "sweep_changes": changed, "noise_level": [self.noise1, self.noise2], "end_at": cut,
            "unexplained_layer2": float(unexplained),
            "kept_greedy": int(worse.sum()), "lengths": [int(k.sum()) for k in keep]}


def _ends(per: torch.Tensor, fallback: list[int], ratio: float = 10.0) -> tuple[torch.Tensor, list[int]]:
    """Which positions ``(B, L)`` each record holds. A record's distances split at the largest jump of their
    sorted logarithms (lifted to their 10th percentile first, so one exact hit does not make the jump); when that
    jump reaches ``ratio``, the record ends after its last position below it (its end-of-sequence token and the
    positions past it are in no span; a wrong token inside the record shows as a lone high value and is kept).
    Where no jump reaches ``ratio`` (the noise hides the end), the record keeps its ``fallback`` length."""
    keep = torch.ones_like(per, dtype=torch.bool)
    lengths = []
    for b in range(per.shape[0]):
        logs = per[b].double().clamp_min(1e-30).log()
        logs = logs.clamp_min(float(torch.quantile(logs, 0.1)))
        values = torch.sort(logs).values
        jumps = values[1:] - values[:-1]
        n = fallback[b]
        if jumps.numel() and float(jumps.max()) >= math.log(ratio):
            i = int(jumps.argmax())
            low = torch.nonzero(logs <= values[i]).flatten()
            n = int(low.max()) + 1
        keep[b, n:] = False
        lengths.append(n)
    return keep, lengths


ATTACKS.register("subspace")(SubspaceAttack)
