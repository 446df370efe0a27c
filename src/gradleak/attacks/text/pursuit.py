"""Causal-LM records from the output layer's gradient, past the width: matching pursuit over prefix states.

Why: DAGER's span test (``dager``, Petrov et al. 2024) needs fewer batch tokens than the model is wide; past that the
layer-1 span is the whole space (GPT-2-small, batch 64 of 20 tokens: 1280 tokens, width 768) and nothing is
recovered. The output layer keeps a structure that does not run out with the width. For a causal LM with mean loss
over ``n`` next-token targets, the output-embedding gradient is

    dL/dW_out[v] = (1/n) sum_t (p_t[v] - [y_t = v]) h_t

with ``h_t`` the final hidden state at position ``t`` (the output layer's input) and ``y_t`` the next token. Row
``v`` holds ``-h_t / n`` for every position whose next token is ``v``: a sparse combination of a few final states
(the sample-level sparsity SOMP builds on, Li & Li 2026, "Scalable Gradient Inversion for LLMs via Subspace-Guided
Orthogonal Matching Pursuit"), and by the causal mask ``h_t`` depends on the record's prefix up to ``t`` only. So a
record is decoded position by position: from its prefix, compute ``h_t``; the next token is the row that ``-h_t / n``
explains best (matching pursuit with the coefficient known); that state is peeled off the row (a token that follows
several prefixes carries all of them) and the records are extended together, best match first (the greedy step of
orthogonal matching pursuit). The first token of each record is found the same way over every vocabulary entry at
position 0. Rows are compared by the squared cosine with ``-h_t``, not by the energy removed: a row holding many
states (the end-of-sequence token's, a common word's) would otherwise win every match through their shared direction
(ranking by energy: 65 of 1216 next tokens right with the true prefixes, against 733 by cosine).

The rest of a row interferes: the softmax part ``sum_t p_t[v] h_t / n`` and, with tied embeddings (GPT-2), the
gradient of the token's own input embedding. The softmax part is an average over every state, so the decoded batch
estimates it even where it is wrong: after a decode it is subtracted and the records are decoded again (``iters``),
and the decode whose batch's own gradient (one forward and backward) fits the observed one best is returned
(``details["fit"]``). The input-embedding part is each token's own and is left in.

Measured on a random GPT-2-small (width 768), records of 20 tokens (``bench_text_wide``; 2 cores shared by several
jobs, so times are loaded): with the true prefixes the next token is the best-matching row at 733 of 1216 positions
(850 with the true softmax part removed). Batch 64 (1280 tokens, past the width; DAGER on the same update: ROUGE-1
0.038, nothing exact, stopped at its time limit): with the second decode (the default, ``iters=1``; it fits better,
0.489 -> 0.438) ROUGE-1 0.315 / ROUGE-2 0.103, 36 % of the records past the leaked bag's best guess (0.209) by 0.2
ROUGE-1, 193 s; one decode (``iters=0``) 0.334 / 0.118, 45 %, 56 s. Batch 32 (640 tokens): 0.465 / 0.252, 69 %
(one decode: 0.398 / 0.169, 56 %). No record is exact. The second decode is kept by the attack's own fit, not by
these scores: it helps at batch 32 and costs a little at 64. Looking one step ahead (``extra``: each record's best
few continuations also scored by how well their own next state matches a row) gave ROUGE-1 0.332 against 0.334 at
batch 64 (one decode): off by default.

Tried and not used: the first layer's per-head structure (a token's query gradient lies, head by head, in the span
of its prefix's key differences; as a per-position ranking of the 442 bag tokens on the same update it put the true
token at median rank 10-40: the other 1279 tokens' terms swamp one token without a joint solve), and the input-side
part of a tied row as a successor test (the row of token ``u`` holding its successor's embedding through the final
norm: 44 of 1216 right).
Limits: at random init a final state depends mostly on its last token, so records holding the same token at a
position trade continuations, and a record can end early at an end-of-sequence match (``obs.info["lengths"]``,
when the attacker knows them, ends records at their lengths instead); no step is an exact test
(``records_certified`` is 0); the client's step is taken without dropout (the decoded batch's gradient is computed
in eval mode).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm import tqdm

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation


def output_layer(model: nn.Module, update: dict[str, torch.Tensor]) -> tuple[nn.Module, str]:
    """The module that maps final states to logits and the update key of its weight's gradient."""
    out = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    if out is None or not isinstance(getattr(out, "weight", None), torch.Tensor):
        raise ConfigError("pursuit needs a causal LM with an output embedding (get_output_embeddings)")
    name = next((n for n, p in model.named_parameters() if p is out.weight), None)
    if name is None or name not in update:
        raise ConfigError(f"pursuit needs the gradient of the output embedding ({name or 'lm_head.weight'}); the "
                          f"update holds none")
    return out, name


class _States:
    """Final hidden states (the output layer's input) of token prefixes, one position at a time with the model's
    key/value cache: ``step(tokens)`` appends one token to every record and returns its state ``(B, d)``."""

    def __init__(self, model: nn.Module, out: nn.Module) -> None:
        self.model = model
        self.kept: list[torch.Tensor] = []
        out.register_forward_hook(lambda _m, inputs, _o: self.kept.append(inputs[0].detach()))
        self.past: Any = None

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.kept.clear()
        result = self.model(input_ids=tokens[:, None], past_key_values=self.past, use_cache=True)
        self.past = result.past_key_values
        return self.kept[-1][:, -1].double()

    @torch.no_grad()
    def ahead(self, records: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """States ``(len(records), k, d)`` one position further: each of ``records`` extended by each of its ``k``
        candidate ``tokens`` ``(len(records), k)``, from a copy of the cache (the records' own cache is kept)."""
        past = copy.deepcopy(self.past)
        past.batch_select_indices(records)
        past.batch_repeat_interleave(tokens.shape[1])
        self.kept.clear()
        self.model(input_ids=tokens.reshape(-1, 1), past_key_values=past, use_cache=True)
        return self.kept[-1][:, -1].double().reshape(*tokens.shape, -1)

    @torch.no_grad()
    def first(self, tokens: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """States of each token alone at position 0 ``(len(tokens), d)``."""
        states = []
        for i in range(0, len(tokens), chunk):
            self.kept.clear()
            self.model(input_ids=tokens[i:i + chunk, None], use_cache=False)
            states.append(self.kept[-1][:, 0].double())
        return torch.cat(states)


@dataclass
class OutputPursuit(Attack):
    """Token sequences of a causal-LM batch from the output-embedding gradient, with no bound on batch x tokens.

    ``iters``: decodes after the first, each with the softmax part of the previous decode subtracted, the best fit
    kept (0: one decode from the raw gradient); ``extra``: continuations looked ahead per record beyond its best
    match (each scored by how well its own next state matches a row as well; 0: the best match alone);
    ``time_limit_s``: stop decoding after this long and return what is decoded; ``candidates``: candidate tokens,
    the output rows with the most energy (every row of a smaller vocabulary)."""

    name: ClassVar[str] = "pursuit"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"tokens"})
    tasks: ClassVar[frozenset[str]] = frozenset({"causal_lm"})
    iters: int = 1
    extra: int = 0
    time_limit_s: float = 600.0
    candidates: int = 4096

    def settings(self) -> dict[str, Any]:
        return {"iters": self.iters, "extra": self.extra, "time_limit_s": self.time_limit_s,
                "candidates": self.candidates}

    def reconstruct(self, obs: Observation, *, device: torch.device | str = "cpu", seed: int | None = None,
                    callback: Callback | None = None, progress: bool = False) -> Reconstruction:
        start = time.perf_counter()
        self.check_supports(obs)
        assert isinstance(obs.inputs, TokenInput)
        model = obs.build_model(device).eval()
        update = obs.gradient_estimate()
        out, key = output_layer(model, update)
        observed = update[key].detach().to(device).double()
        batch, length = max(obs.batch_size, 1), obs.inputs.seq_len
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else 0
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        states = _States(model, out)
        # candidate rows: all of a small vocabulary; of a large one the rows with the most energy (a row a target
        # or an input token touches carries at least one final state)
        norms = observed.norm(dim=1)
        norms[pad] = -1.0
        pool = torch.argsort(norms, descending=True)[: min(self.candidates, observed.shape[0] - 1)].sort().values
        first_states = states.first(pool)
        deadline = start + self.time_limit_s
        details: dict[str, Any] = {"fit": [], "targets": []}
        best: tuple[float, torch.Tensor, list[float]] | None = None
        interference = torch.zeros_like(observed)
        lengths = obs.info.get("lengths") if isinstance(getattr(obs, "info", None), dict) else None
        if lengths is not None:
            if len(lengths) != batch or not all(isinstance(k, int) and 1 <= k <= length for k in lengths):
                raise ConfigError(f"obs.info['lengths'] must be {batch} record lengths in [1, {length}], got "
                                  f"{lengths!r}")
            details["lengths"] = "known: records end at their lengths, not at an end-of-sequence match"
        limits = list(lengths) if lengths is not None else [length] * batch
        targets = sum(k - 1 for k in limits)
        for round_ in range(self.iters + 1):
            ids, strength = self._decode(states, (observed - interference)[pool], pool, first_states, limits,
                                         length, targets, pad, None if lengths is not None else eos, deadline,
                                         progress, details)
            hyp_grad, softmax_part, counted = self._hypothesis(model, out, obs, ids, pad, observed.shape)
            fit = float((hyp_grad - observed).norm() / observed.norm().clamp_min(1e-300))
            details["fit"].append(fit)
            details["targets"].append(counted)
            if best is None or fit < best[0]:
                best = (fit, ids, strength)
            if callback is not None:
                callback(round_, fit, ids)
            if details.get("stopped"):
                break
            # the hypothesis's softmax part, at the loss's scale (its records may end early: fewer targets)
            interference = softmax_part * counted / max(targets, 1)
        assert best is not None
        details.update(best_fit=best[0], match_strength=best[2], records_certified=0, sequences_found=batch,
                       last_token="recovered: the record's last token is the row the last prefix state matches")
        return Reconstruction(inputs=best[1].cpu(), labels=None, attack=self.name, settings=self.settings(),
                              iterations=len(details["fit"]), wall_time_s=time.perf_counter() - start,
                              details=details)

    def _decode(self, states: _States, rows: torch.Tensor, pool: torch.Tensor, first_states: torch.Tensor,
                limits: list[int], length: int, targets: int, pad: int, eos: int | None, deadline: float,
                progress: bool, details: dict[str, Any]) -> tuple[torch.Tensor, list[float]]:
        """One greedy decode of every record; ``rows``: the output-embedding gradient less the interference, at the
        candidate tokens ``pool``; record ``b`` holds at most ``limits[b]`` tokens and ends at ``eos`` (None: only
        at its limit).
        Returns the ids ``(batch, length)`` and, per record, its weakest match (the squared cosine of the state
        with its row: 1 when the row holds that state alone, 0 when it does not hold it)."""
        rows = rows.clone()
        n = float(max(targets, 1))
        batch = len(limits)
        ids = torch.full((batch, length), pad, dtype=torch.long, device=rows.device)
        strength = [1.0] * batch

        def gains(h: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
            """How much of each row ``-h / n`` explains: the squared cosine of the row with ``-h`` (0 where the row
            points away), ``(len(h), rows)``. Not the energy removed: a row that holds many states (the
            end-of-sequence token's, a common word's) would then win every match through their shared direction."""
            r = rows if cols is None else rows[cols]
            dot = -(h @ r.T)
            cos2 = dot * dot / ((h * h).sum(1, keepdim=True) * (r * r).sum(1)[None].clamp_min(1e-300))
            return torch.where(dot > 0, cos2, torch.zeros_like(cos2))

        # position 0 and 1 together: which first token's state each row holds
        g = gains(first_states)
        for b in range(batch):
            if limits[b] < 2:
                ids[b, 0] = pool[int(torch.argmax(g.max(dim=1).values))]
                continue
            flat = int(torch.argmax(g))
            u, v = divmod(flat, g.shape[1])
            ids[b, 0], ids[b, 1] = pool[u], pool[v]
            strength[b] = min(strength[b], float(g[u, v]))
            rows[v] += first_states[u] / n
            g[:, v] = gains(first_states, torch.tensor([v], device=rows.device))[:, 0]
        states.past = None
        states.step(ids[:, 0])
        alive = [b for b in range(batch) if limits[b] > 2 and not _ended(ids[b, 1], eos, pad)]
        for p in tqdm(range(1, length - 1), desc="pursuit", disable=not progress, leave=False):
            if time.perf_counter() > deadline:
                details["stopped"] = f"time limit {self.time_limit_s:g} s reached at position {p} of {length}"
                break
            h = states.step(ids[:, p])
            if not alive:
                break
            live = torch.tensor(alive, device=rows.device)
            g = gains(h[live])
            score = g.clone()
            if self.extra > 0 and p + 2 < length:
                # a true continuation has a next state some row holds as well (its own successor); a wrong one
                # rarely does: each record's best few are scored by both steps
                k = min(self.extra + 1, g.shape[1])
                top = torch.topk(g, k, dim=1).indices
                nxt = states.ahead(live, pool[top]).reshape(-1, h.shape[1])
                later = gains(nxt).max(dim=1).values.reshape(len(alive), k)
                bonus = torch.full_like(g, -float("inf"))
                bonus.scatter_(1, top, later)
                score = g + bonus
            for _ in range(len(alive)):
                flat = int(torch.argmax(score))
                i, v = divmod(flat, score.shape[1])
                b = alive[i]
                ids[b, p + 1] = pool[v]
                strength[b] = min(strength[b], float(g[i, v]))
                rows[v] += h[b] / n
                score[i, :] = -float("inf")
                keep = score[:, v] > -float("inf")
                fresh = gains(h[live[keep]], torch.tensor([v], device=rows.device))[:, 0]
                score[keep, v] += fresh - g[keep, v]
                g[keep, v] = fresh
            alive = [b for b in alive if limits[b] > p + 2 and not _ended(ids[b, p + 1], eos, pad)]
        return ids, strength

    @staticmethod
    def _hypothesis(model: nn.Module, out: nn.Module, obs: Observation, ids: torch.Tensor, pad: int,
                    shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The output-embedding gradient the decoded batch would send, its softmax part ``sum_t p_t h_t / n`` and
        ``n`` (the targets the loss counts: not padding). Only the softmax part is subtracted before the next
        decode: it is an average over every state, close even where the hypothesis is wrong, while the input
        embeddings' part is each token's own and follows the hypothesis's errors (measured, batch 64: subtracting
        both made the next decode fit worse, 0.49 -> 0.65)."""
        mask = (ids != pad).long()
        kept: list[torch.Tensor] = []
        handle = out.register_forward_hook(lambda _m, inputs, _o: kept.append(inputs[0].detach()))
        model.zero_grad(set_to_none=True)
        for param in model.parameters():  # only the output embedding's gradient is needed
            param.requires_grad_(param is out.weight)
        try:
            with torch.enable_grad():
                obs.task.loss(model, ids, None, mask).backward()
        finally:
            handle.remove()
        grad = out.weight.grad
        assert grad is not None
        hidden = kept[-1].double()  # (B, L, d)
        counted = mask[:, 1:].bool()
        n = int(counted.sum())
        states = hidden[:, :-1][counted]
        probs = torch.softmax(states @ out.weight.detach().double().T, dim=-1)  # (n, V)
        softmax_part = probs.T @ states / max(n, 1)
        return grad.detach().double(), softmax_part, n


def _ended(token: torch.Tensor, eos: int | None, pad: int) -> bool:
    return eos is not None and int(token) in (pad, eos)


ATTACKS.register("pursuit")(OutputPursuit)
