"""DAGER (Petrov et al. 2024, "DAGER: Exact Gradient Inversion for Large Language Models"): exact batch recovery.

The first attention layer's query/key/value projection is linear in its input, so its weight gradient spans the
layer-1 inputs of every token in the batch (``spans.Span``). A layer-1 input depends only on the token and its
position (embedding + position embedding, through the block's layer norm), so testing every vocabulary entry at
every position against that span gives the tokens each position holds. For decoders, whose attention is causal,
the layer-2 input at position ``p`` depends only on the prefix up to ``p``: prefixes are extended one position at
a time by the layer-1 candidates and kept when their layer-2 input lies in the span of the second layer's
gradient, which recovers whole sequences. Encoders attend both ways: each position keeps its closest tokens of the
bag (see ``DAGER._encode``), which reads a batch of 1 off directly; larger batches are assembled into records by a
local search on the layer-2 span distance of whole records (``DAGER._assemble``; see the README for what it
recovers).

Limits, as in the paper: the test needs fewer tokens in the batch than the model is wide (GPT-2 small: 768); it is
exact on the gradient as shared, and breaks when the update is noised or quantised (see ``subspace``).

Dropout (a train-mode step, ``transformers``' default 0.1): the first layer's input is masked; the masked test
(``attacks.text.dropout``) certifies the tokens and ``_link`` orders them into records from the first layer's
query gradients (``details["dropout"]``, ``details["records_certified"]``).

The last token of a causal-LM record is invisible to the spans: its input feeds no loss term (its output predicts
nothing and no earlier position attends to it). It is the label of the position before it, though, so the output
layer's gradient (GPT-2's tied ``wte``) carries it: ``DAGER._last_tokens`` reads it there once the rest of each
record is known (clean gradient, no dropout), and ``details["last_token"]`` says whether it was recovered or lost.
Only records every test passed are counted in ``details["records_certified"]``; ``sequences_found`` counts what
was returned.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from tqdm import tqdm

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.rank import MIN_GAP, check_rtol, largest_gap, record, surface
from gradleak.attacks.layer_io import module_io
from gradleak.attacks.text.dropout import free_distance, masked_distance, widened_projector
from gradleak.attacks.text.pursuit import output_layer
from gradleak.attacks.text.spans import Span
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation

#: names of input-embedding matrices in the layouts we know (the token bag reads their gradient's non-zero rows)
EMBEDDINGS = ("word_embeddings.weight", "wte.weight", "embed_tokens.weight")
#: the layer-2 ranking within a prefix (``DAGER._decode``) needs this many tokens at a position to take a median
RANKED_MIN = 8
#: a prefix whose best continuation stands less than this far (log10 of the distance) below the median
#: continuation, and less than ``END_GAP`` below its second best, has no true continuation: the record ended.
#: Measured on GPT-2-small pre-trained 30 steps, 16 held-out sentences: a record's full prefix (nothing true
#: follows) -0.24..-0.06, gap 0..0.04; true prefixes' best -2.7..-0.23 (95 % below -0.48), gap 0.01..2.5; the
#: step before the end-of-sequence token is the weakest (-0.68..-0.22, gap 0.02..0.48: 1 of 16 looks ended)
END_Z = -0.35
END_GAP = 0.05
#: how far (tokens) two records' ends move together in the end fit (``DAGER._record_ends``)
PAIR_REACH = 2
#: the smallest drop in a noised layer-2 spectrum taken as its rank (flagged ambiguous below ``MIN_GAP``)
NOISY_GAP = 2.0
#: a second continuation is kept when it too lies this far below the median. Measured on the same case: where
#: two records share a prefix both lie at -2.5..-2.0 (the next token at -0.5); a prefix one record holds has its
#: second nearest at -0.55 or above (459 prefixes)
BRANCH_Z = -1.2


def _find(update: dict[str, torch.Tensor], suffixes: tuple[str, ...]) -> str | None:
    for name in update:
        if name.endswith(suffixes):
            return name
    return None


class AdapterSpan(Span):
    """The span test through a LoRA adapter's down-projection ``A`` (Hu et al. 2021): the span lives in the
    adapter's ``r``-dim space and a candidate ``x`` is tested as ``A x`` (``A`` is known: the server sent it)."""

    def __init__(self, span: Span, down: torch.Tensor) -> None:
        super().__init__(span.basis, span.singular_values, span.complement, span.decision, span.vectors)
        self.down = down.detach().double()

    def at_rank(self, rank: int) -> AdapterSpan:
        return AdapterSpan(super().at_rank(rank), self.down)

    def distance(self, candidates: torch.Tensor) -> torch.Tensor:
        return super().distance(candidates.detach().double() @ self.down.T)


def lora_span(model: nn.Module, update: dict[str, torch.Tensor], module: str,
              rtol: float | None = None) -> Span | None:
    """The inputs' span from a LoRA update of ``module`` (``W x + s B A x``, ``A``: (r, d), ``B``: (out, r)).

    ``dL/dA = s sum_t (B^T g_t) x_t^T`` spans the inputs ``x_t`` in R^d when the batch holds fewer than ``r``
    tokens and ``B != 0`` (an adapter after some fine-tuning); ``dL/dB = s sum_t g_t (A x_t)^T`` spans
    ``A x_t`` in R^r whenever it is nonzero, also at initialisation where ``B = 0`` and ``dL/dA = 0``.
    The ``A`` test is used when its rank is below ``r`` (a proper subspace of the inputs), else the ``B`` test
    through ``A``; both say nothing once the batch holds ``r`` tokens or more (the span is then full). Ranks are
    cut at the spectrum's gap above the adapter gradient's rounding noise (``rank.decide_rank``; gpt2-mini, rank
    64, 59 visible tokens: a drop of 1e3..2e4 at rank 59 above noise at 2e-8 of the largest value)."""
    a_name = _find(update, (f"{module}.lora_A.default.weight", f"{module}.lora_A.weight"))
    b_name = _find(update, (f"{module}.lora_B.default.weight", f"{module}.lora_B.weight"))
    if a_name is None and b_name is None:
        return None
    r = int(update[a_name or b_name].shape[0 if a_name else 1])
    if a_name is not None:
        span_a = Span.of_gradient(update[a_name], "rows", rtol)  # A: (r, in), inputs on the rows
        if 0 < span_a.rank < r or b_name is None:
            return span_a
    assert b_name is not None
    weights = dict(model.named_parameters())
    down = _find(weights, (f"{module}.lora_A.default.weight", f"{module}.lora_A.weight"))  # type: ignore[arg-type]
    if down is None:
        raise ConfigError(f"the update holds {b_name} but the model has no LoRA A matrix for {module}")
    return AdapterSpan(Span.of_gradient(update[b_name], "rows", rtol), weights[down])  # B: (out, r)


class _Architecture:
    """What DAGER needs from a transformer: the layer-1/2 gradients and the inputs those layers would see."""

    decoder: bool

    def __init__(self, model: nn.Module, update: dict[str, torch.Tensor]) -> None:
        self.model = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        self.update = update

    def span(self, layer: int, rtol: float | None = None) -> Span:
        """The span of layer ``layer``'s inputs (0: the first); ``rtol``: an explicit rank tolerance instead of the
        spectrum's gap (``rank.decide_rank``)."""
        raise NotImplementedError

    def first_inputs(self, position: int) -> torch.Tensor:
        raise NotImplementedError

    def dropout_rate(self) -> float:
        """The dropout rate on the first layer's input in the client's (train-mode) step; 0 when none."""
        raise NotImplementedError

    def masked_candidates(self, position: int, span: Span) -> tuple[torch.Tensor, torch.Tensor]:
        """Every vocabulary entry at ``position`` before the dropout mask, and the projector its masked copy is
        tested with (``attacks.text.dropout``)."""
        raise NotImplementedError


class _GPT2(_Architecture):
    decoder = True

    def __init__(self, model: nn.Module, update: dict[str, torch.Tensor]) -> None:
        super().__init__(model, update)
        self.t = self.model.transformer

    def span(self, layer: int, rtol: float | None = None) -> Span:
        full = _find(self.update, (f"h.{layer}.attn.c_attn.weight",))
        if full is not None:
            return Span.of_gradient(self.update[full], "columns", rtol)  # Conv1D (in, out)
        lora = lora_span(self.model, self.update, f"h.{layer}.attn.c_attn", rtol)
        if lora is not None:
            return lora
        raise ConfigError(f"DAGER needs the gradient of layer {layer}'s attention projection (c_attn); the update "
                          f"holds none")

    @torch.no_grad()
    def first_inputs(self, position: int) -> torch.Tensor:
        e = self.t.wte.weight + self.t.wpe.weight[position]
        return self.t.h[0].ln_1(e)

    def dropout_rate(self) -> float:
        return float(getattr(self.model.config, "embd_pdrop", 0.0) or 0.0)  # dropout on wte + wpe, before ln_1

    @torch.no_grad()
    def masked_candidates(self, position: int, span: Span) -> tuple[torch.Tensor, torch.Tensor]:
        ln = self.t.h[0].ln_1  # ln_1(m e) = gamma (m e - mu) / sigma + beta: gamma * m * e is in span + gamma, beta
        x = ln.weight * (self.t.wte.weight + self.t.wpe.weight[position])
        extra = [t for t in (ln.weight, ln.bias) if t is not None]
        return x, widened_projector(span, extra)

    @torch.no_grad()
    def dropped_inputs(self, position: int, tokens: list[int], keep: torch.Tensor, rate: float) -> torch.Tensor:
        """Layer-1 inputs ``(len(tokens), d)`` of ``tokens`` at ``position`` under their embedding masks ``keep``
        (True: kept), scaled by ``1 / (1 - rate)`` as dropout does in training."""
        ids = torch.tensor(tokens, device=self.t.wte.weight.device)
        e = (self.t.wte.weight[ids] + self.t.wpe.weight[position]).double()
        ln = self.t.h[0].ln_1
        z = e * keep.to(e.device) / (1.0 - rate)
        return torch.nn.functional.layer_norm(z, z.shape[-1:], ln.weight.double(), ln.bias.double(), ln.eps)

    @torch.no_grad()
    def query_grads_and_keys(self, inputs: torch.Tensor, out_grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head ``(n, heads, head_dim)``: the query part of each token's ``dL/d(q, k, v)`` and its key."""
        attn = self.t.h[0].attn
        d = inputs.shape[1]
        heads = d // attn.head_dim
        qkv = inputs @ attn.c_attn.weight.double() + attn.c_attn.bias.double()
        keys = qkv[:, d:2 * d].reshape(-1, heads, attn.head_dim)
        return out_grad[:, :d].reshape(-1, heads, attn.head_dim), keys

    @torch.no_grad()
    def second_inputs(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.t.wte(ids) + self.t.wpe(positions)[None]
        out = self.t.h[0](hidden)
        out = out[0] if isinstance(out, tuple) else out
        return self.t.h[1].ln_1(out[:, -1])

    @torch.no_grad()
    def second_inputs_extending(self, prefixes: list[list[int]], tokens: list[int]) -> torch.Tensor:
        """Layer-2 inputs ``(len(prefixes), len(tokens), d)`` at position ``p = len(prefix)`` of every prefix
        extended by every token: the same numbers as ``second_inputs`` on each extended sequence, computed once per
        prefix (its keys and values) and once per token (its query, key, value) instead of a forward per pair."""
        block, attn = self.t.h[0], self.t.h[0].attn
        wte, wpe = self.t.wte.weight, self.t.wpe.weight
        d = wte.shape[1]
        heads, head_dim = d // attn.head_dim, attn.head_dim
        scale = getattr(attn, "scaling", None) or head_dim ** -0.5
        device = wte.device
        pre = torch.tensor(prefixes, device=device)
        n_a, p = pre.shape
        new = torch.tensor(tokens, device=device)
        x_pre = wte[pre] + wpe[:p]
        _, k_pre, v_pre = attn.c_attn(block.ln_1(x_pre)).split(d, dim=-1)
        x_new = wte[new] + wpe[p]
        q_new, k_new, v_new = attn.c_attn(block.ln_1(x_new)).split(d, dim=-1)
        k_pre, v_pre = k_pre.view(n_a, p, heads, head_dim), v_pre.view(n_a, p, heads, head_dim)
        q_new, k_new, v_new = (t.view(len(tokens), heads, head_dim) for t in (q_new, k_new, v_new))
        scores = torch.cat([torch.einsum("vhd,aphd->avhp", q_new, k_pre),
                            torch.einsum("vhd,vhd->vh", q_new, k_new)[None, :, :, None].expand(n_a, -1, -1, 1)],
                           dim=-1) * scale
        weights = torch.softmax(scores, dim=-1)
        mixed = torch.einsum("avhp,aphd->avhd", weights[..., :p], v_pre) + weights[..., p:] * v_new[None]
        resid = x_new[None] + attn.c_proj(mixed.reshape(n_a, len(tokens), d))
        hidden = resid + block.mlp(block.ln_2(resid))
        return self.t.h[1].ln_1(hidden)


class _BERT(_Architecture):
    decoder = False

    def span(self, layer: int, rtol: float | None = None) -> Span:
        base = f"encoder.layer.{layer}.attention.self.query"
        full = _find(self.update, (f"{base}.weight",))
        if full is not None:
            return Span.of_gradient(self.update[full], "rows", rtol)  # nn.Linear (out, in)
        lora = lora_span(self.model, self.update, base, rtol)
        if lora is not None:
            return lora
        raise ConfigError(f"DAGER needs the gradient of layer {layer}'s query projection; the update holds none")

    @torch.no_grad()
    def first_inputs(self, position: int) -> torch.Tensor:
        emb = self.model.bert.embeddings if hasattr(self.model, "bert") else self.model.embeddings
        e = emb.word_embeddings.weight + emb.position_embeddings.weight[position] + emb.token_type_embeddings.weight[0]
        return emb.LayerNorm(e)

    def dropout_rate(self) -> float:
        return float(getattr(self.model.config, "hidden_dropout_prob", 0.0) or 0.0)  # after the embedding norm

    def masked_candidates(self, position: int, span: Span) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first_inputs(position), widened_projector(span, [])

    @torch.no_grad()
    def second_inputs(self, ids: torch.Tensor, pad: int | None) -> torch.Tensor:
        """The second layer's inputs ``(n, length, d)`` for whole sequences: the first layer's output (BERT normalises
        after each layer, so that is what layer 2's query reads). The model's own forward runs, stopped by a hook
        after layer 1, so masks are built as the model builds them."""
        bert = self.model.bert if hasattr(self.model, "bert") else self.model
        mask = (ids != pad).long() if pad is not None else torch.ones_like(ids)
        return module_io(bert, bert.encoder.layer[0], output=True, input_ids=ids, attention_mask=mask,
                         token_type_ids=torch.zeros_like(ids))


def architecture(model: nn.Module, update: dict[str, torch.Tensor]) -> _Architecture:
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    kind = getattr(getattr(inner, "config", None), "model_type", None)
    if kind == "gpt2":
        return _GPT2(model, update)
    if kind == "bert":
        return _BERT(model, update)
    raise ConfigError(f"DAGER knows GPT-2 and BERT layouts; this model is {kind or type(inner).__name__}")


@dataclass
class DAGER(Attack):
    """Exact recovery of token sequences from a transformer's gradient (Petrov et al. 2024).

    ``threshold``/``threshold2``: largest relative distance to the layer-1/2 span that counts as inside (true inputs
    sit below 1e-5, wrong layer-2 candidates above 5e-3 on the random and trained GPT-2-small measured here);
    ``rtol``: unset (the default), each span's rank is cut where the float64 spectrum of the gradient drops from
    the inputs' directions to the gradient's rounding noise (``gradleak.attacks.rank``); a number in (0, 1):
    singular values below that share of the largest are dropped instead (the old rule; a fixed 1e-8 at the float32
    floor made bert-tiny's rank depend on the BLAS code path). Each decision is reported in
    ``details["rank_decision"]``; one with no clear gap is flagged ``ambiguous`` (also in
    ``details["ambiguous_rank"]`` and as a warning), and DAGER then tries the ranks around the noise floor and
    keeps the one its own tests support best (``_choose_rank``).

    ``beam`` (decoders): at most this many prefixes are extended at each position, the nearest the layer-2 span
    (0: twice the batch, at least 8); ``max_candidates``: at most this many (prefix, token) pairs are tested at a
    position, the tokens nearest the layer-1 span first. Why both: the layer-1 test is not selective on realistic
    batches. ``ln_1`` is linear in ``wte[v] + wpe[p]`` up to each token's scale (plus its shift), so the span holds
    ``wte[v] + wpe[q]`` for every token ``v`` and position ``q`` joined through the batch's (token, position) pairs
    (an alternating path ``v - q' - v' - q``); common words at many positions join most of the bag, and the
    layer-1 rank is then the bag plus the positions, not the token count. Measured: gpt2-mini, 4 records (170
    tokens): 42 bag tokens pass at a third of the positions, random or trained; GPT-2-small, 16 held-out license
    sentences (498 tokens, ``bench_text.py --only realistic``): rank 237 = 198 bag tokens + 39 positions, every
    bag token passes at every position. On the random model layer 2 still separates the prefixes. On the model
    pre-trained 30 steps its threshold does not: 2,000-5,500 pairs a position pass ``threshold2``; true steps sit
    6.4e-7..5.4e-4 from the layer-2 span (its spectrum falls smoothly, no gap at the float32 floor), each prefix's
    nearest wrong token 4.9e-6..1.1e-3 (``bench_text.py --only realistic --diagnose``), so distances of different
    prefixes do not compare (ranking prefixes by them: ROUGE-1 0.24, exact 0.12; issue 23 had it stop at 1.8 million
    prefixes). Within one prefix they do: the true next token is the nearest of the bag at 99 % of the 466 positions
    (98 % pre-trained 100 steps; 91 % at batch 32 of shorter sentences; ``bench_text.py --only realistic
    --diagnose``). So each prefix keeps its nearest continuation by ``log10(d / median d)`` over the position's
    tokens (``_ranked``), every other that stands out as far (records that share the prefix), none when no token
    stands out (the record ended; ``_chosen``), and the beam ranks prefixes by the sum of those steps. That end test
    is the weakest step, so after a ranked decode each record is run on to the last position and cut where the
    output layer's end-of-sequence row is explained best (``_record_ends``). A record counts as certified only when
    the threshold alone made each of its choices. Figures: README, "Held-out public text"."""

    name: ClassVar[str] = "dager"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"tokens"})
    tasks: ClassVar[frozenset[str]] = frozenset({"causal_lm", "masked_lm", "classification"})
    threshold: float = 1e-3
    threshold2: float = 1e-3
    rtol: float | None = None
    max_candidates: int = 500_000
    assemble_sweeps: int = 24
    assemble_options: int = 4
    repair_positions: int = 3
    dropout_threshold: float = 0.02
    time_limit_s: float = 600.0
    beam: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()  # ranges of every setting (attacks.base.SETTING_RANGES)
        check_rtol(self.rtol, "dager")

    def settings(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "threshold2": self.threshold2, "rtol": self.rtol,
                "max_candidates": self.max_candidates, "assemble_sweeps": self.assemble_sweeps,
                "assemble_options": self.assemble_options, "repair_positions": self.repair_positions,
                "dropout_threshold": self.dropout_threshold, "time_limit_s": self.time_limit_s,
                "beam": self.beam}

    def reconstruct(self, obs: Observation, *, device: torch.device | str = "cpu", seed: int | None = None,
                    callback: Callback | None = None, progress: bool = False) -> Reconstruction:
        start = time.perf_counter()
        assert isinstance(obs.inputs, TokenInput)
        model = obs.build_model(device).eval()
        arch = architecture(model, {k: v.to(device) for k, v in obs.gradient_estimate().items()})
        length = obs.inputs.seq_len
        span1, threshold1 = self._noise_aware(arch.span(0, self.rtol), obs, self.threshold)
        details: dict[str, Any] = {"layer1_full": span1.full, "threshold_used": threshold1,
                                   "layer1_test": "adapter B through A" if isinstance(span1, AdapterSpan) else
                                   "weight gradient"}
        rate = arch.dropout_rate() if obs.model_mode == "train" else 0.0
        dropout = rate > 0
        details["dropout"] = rate
        if dropout:
            details["layer1_test"] += f", dropout masks searched (rate {rate:g})"
        if not span1.full and _ambiguous(span1):
            span1 = self._choose_rank(arch, span1, obs, details, dropout)
        details["layer1_rank"] = span1.rank
        record(details, "layer1", span1.decision)
        deadline = start + self.time_limit_s
        if arch.decoder and span1.full:
            # more tokens in the batch than the layer is wide: every candidate is in the span, the test says
            # nothing (DAGER's limit; its code scores such runs 0). Stop here rather than search all prefixes.
            per_position, sequences = [], []
            details["candidates_per_position"] = []
            details["stopped"] = f"layer-1 span is the whole space (rank {span1.rank})"
        elif arch.decoder:
            per_position = self._first_candidates(arch, span1, length, dropout, progress, deadline, details,
                                                  obs.batch_size, threshold1)
            details["candidates_per_position"] = [len(c) for c in per_position]
            if dropout:
                sequences = self._link(arch, per_position, obs, span1, rate, details)
            else:
                sequences = self._decode(arch, per_position, obs, details, progress, deadline)
        else:
            per_position, sequences = self._encode(arch, span1, obs, details, dropout, progress, deadline)
        if arch.decoder and not dropout and not details.get("stopped") and obs.task.kind == "causal_lm" \
                and obs.update_kind == "gradient" and sequences:
            sequences = self._last_tokens(arch, sequences, obs, details)
        elif arch.decoder:
            details["last_token"] = ("not recovered: a causal-LM record's last token feeds no loss term (the "
                                     "end-of-sequence token when the records end with one); its trace in the "
                                     "output layer is read only from a clean gradient without dropout")
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else 0
        rows = [(s + [pad] * length)[:length] for s in sequences][: max(obs.batch_size, 1)]
        details["sequences_found"] = len(sequences)
        # certified: every token passed the layer-1 test and the record's order passed the layer-2 test (decoders
        # without dropout); under dropout or in an encoder's assembly the order is a best guess, not a proof
        details["records_certified"] = (min(details.get("records_decoded_certified", 0), max(obs.batch_size, 1))
                                        if arch.decoder and not dropout and not details.get("stopped") else 0)
        if dropout and arch.decoder and not details.get("stopped"):
            details["records_certified"] = details.get("records_linked_certified", 0)
        if (not arch.decoder and obs.batch_size == 1 and len(sequences) == 1
                and details.get("layer1_worst_pick", 1.0) < (self.dropout_threshold if dropout else self.threshold)):
            details["records_certified"] = 1  # one record, every token inside the span (masked test under dropout)
        while len(rows) < obs.batch_size:
            rows.append([pad] * length)
        ids = torch.tensor(rows, dtype=torch.long)
        details["token_bag"] = sorted({v for c in per_position for v in c})
        surface(details, "dager")
        return Reconstruction(inputs=ids, labels=None, attack=self.name, settings=self.settings(),
                              iterations=1, wall_time_s=time.perf_counter() - start, details=details)

    def _noise_aware(self, span: Span, obs: Observation, threshold: float, least: int = 1) -> tuple[Span, float]:
        """The span and distance threshold for an update noised or rounded above float32 (Gaussian noise, fp16):
        the rounding-floor decision then sees noise everywhere and keeps the whole space (measured: GPT-2-small,
        noise 1e-6 or fp16, batch 1 and 4: rank 768, nothing recovered). With the default rule, a full span is
        cut instead at the spectrum's largest drop below the batch's token count
        (``rank.largest_gap``; noise 1e-6, batch 1: 59 of 60 tokens, a drop of 326 at layer 1 and 90 at layer 2)
        when that drop is clear, and the thresholds widen to the noise that drop leaves: ``3 / gap`` (true layer-1
        inputs at 8.6e-4 of their norm, wrong ones above 0.5), capped at 0.1.

        ``least`` (layer 2 of a decoder: the layer-1 rank, since every token that passes layer 1 and feeds the loss
        has its own layer-2 input): the cut is searched from there, and a drop under ``MIN_GAP`` but of at least
        ``NOISY_GAP`` is taken too, flagged ambiguous (the ranked decode then chooses, not the threshold).
        Measured, GPT-2-small, batch 8 (330 tokens; ``bench_text.py --only defense``, the note column): from the
        layer-1 rank 268 on, the largest drop is at 317, 2.82 under noise 1e-6, 27.2 under 1e-7 and 1.17e4 clean;
        from the first direction on, the dominant first direction's own drop would win."""
        if (self.rtol is not None or span.vectors is None or isinstance(span, AdapterSpan)
                or not span.full):
            return span, threshold
        assert isinstance(obs.inputs, TokenInput)
        most = min(max(obs.batch_size, 1) * obs.inputs.seq_len, span.basis.shape[0] - 1)
        decision = largest_gap(span.singular_values, least=max(1, min(least, most - 1)), most=most,
                               min_gap=MIN_GAP if least <= 1 else NOISY_GAP)
        if decision.ambiguous:  # no drop of at least min_gap
            return span, threshold
        decision = dataclasses.replace(decision, rule="largest gap below the token count (noised update)",
                                       ambiguous=decision.gap < MIN_GAP)
        return Span.cut(span.vectors, span.singular_values, decision), max(threshold, min(0.1, 3.0 / decision.gap))

    def _first_candidates(self, arch: _Architecture, span1: Span, length: int, dropout: bool = False,
                          progress: bool = False, deadline: float = math.inf,
                          details: dict[str, Any] | None = None, batch: int = 1,
                          threshold: float | None = None) -> list[list[int]]:
        """Decoders: the tokens at each position whose layer-1 input lies within ``threshold`` of the span; under
        dropout, whose masked input does within ``dropout_threshold`` (``attacks.text.dropout``)."""
        per_position = []
        for p in tqdm(range(length), desc="dager layer 1", disable=not progress, leave=False):
            if time.perf_counter() > deadline:
                if details is not None:
                    details["stopped"] = (f"time limit {self.time_limit_s:g} s reached in the layer-1 test at "
                                          f"position {p} of {length}")
                break
            if dropout:
                x, projector = arch.masked_candidates(p, span1)
                # the masked search is costly per candidate: only those nearest the span before any mask (true
                # tokens ranked at most 112 of 2048 there, GPT-2-small, batch 8, 330 tokens) are searched
                near = torch.argsort(span1.distance(arch.first_inputs(p)))[: max(256, 48 * max(batch, 1))].cpu()
                dist = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
                dist[near] = masked_distance(x[near.to(x.device)], projector).cpu()
                bound = self.dropout_threshold
                # a greedy step can go wrong early: the closest uncertified tokens are searched again, refined
                shortlist = torch.argsort(torch.where(dist < bound, math.inf, dist))[: 2 * max(batch, 1)]
                dist[shortlist] = torch.minimum(dist[shortlist], masked_distance(x[shortlist.to(x.device)], projector,
                                                                                 refine=True).cpu())
                # a token two records hold here: both masked copies are in the span, no single mask is
                shortlist = torch.argsort(torch.where(dist < bound, math.inf, dist))[: 2 * max(batch, 1)]
                if batch > 1:
                    free = free_distance(x[shortlist.to(x.device)], projector).cpu()
                    dist[shortlist] = torch.where(free < bound / 20, free, dist[shortlist])
            else:
                dist, bound = span1.distance(arch.first_inputs(p)), threshold or self.threshold
            passing = torch.nonzero(dist < bound).flatten()
            # nearest first: when the layer-2 search must cut a position's tokens, it keeps the nearest
            per_position.append([int(v) for v in passing[torch.argsort(dist[passing].cpu(), stable=True)]])
        return per_position

    def _choose_rank(self, arch: _Architecture, span1: Span, obs: Observation, details: dict[str, Any],
                     dropout: bool = False) -> Span:
        """The layer-1 rank among an ambiguous decision's candidates (no clear gap at the noise floor: which side
        of it a direction falls on is the arithmetic's choice, not the data's) that DAGER's own tests support
        best, without the ground truth. Decoders: the candidate whose layer-2 test certifies the most sequences,
        up to the batch size (then the fewest layer-1 candidates). Encoders: the candidate whose layer-1 ranking
        separates each position's picks most clearly from the next bag token (the largest smallest margin
        ``log10(d_next / d_kept)`` over positions). A true direction dropped raises a true token's distance at
        the positions it spans; a noise direction kept lowers a wrong token's: both narrow the worst margin.
        Measured on bert-tiny, seed 0 (60 tokens, width 64; the float64 gradient's 60th singular value is 3.8e-9
        of the largest, below the float32 gradient's noise at 7e-9..1.2e-8): margins 0.13 at rank 59 (exact),
        0.06 at 60 (ROUGE-1 0.96), 0.02 at 61-62, below 0.02 at 55-58, on both CPU code paths."""
        assert span1.decision is not None
        candidates = [r for r in span1.decision.candidates if 0 < r < span1.basis.shape[0]]
        if len(candidates) < 2:
            return span1
        scores: dict[int, tuple[float, ...]] = {}
        if arch.decoder:
            batch = max(obs.batch_size, 1)
            for r in candidates:
                span = span1.at_rank(r)
                per_position = self._first_candidates(arch, span, obs.inputs.seq_len,  # type: ignore[union-attr]
                                                      dropout, batch=batch)
                found = (self._link(arch, per_position, obs, span, arch.dropout_rate(), {}) if dropout
                         else self._decode(arch, per_position, obs, {}))
                scores[r] = (float(min(len(found), batch)), -float(sum(len(c) for c in per_position)))
            how = "layer-2 test: sequences certified"
        else:
            pool = self._pool(arch, obs)
            firsts = (arch.first_inputs(p) for p in range(obs.inputs.seq_len))  # type: ignore[union-attr]
            inputs = [x[pool.to(x.device)] for x in firsts]
            eos = getattr(getattr(arch.model, "config", None), "eos_token_id", None)
            for r in candidates:
                scores[r] = (self._ranking_margin(span1.at_rank(r), inputs, pool, max(obs.batch_size, 1), eos),)
            how = "layer-1 ranking margin"
        best = max(candidates, key=lambda r: (scores[r], -abs(r - span1.rank)))
        details["rank_candidates"] = {"layer1": {"chosen_by": how,
                                                 "scores": {str(r): list(v) for r, v in scores.items()}}}
        chosen = span1.at_rank(best)
        assert chosen.decision is not None
        chosen.decision = dataclasses.replace(chosen.decision, rule=how)
        return chosen

    def _pool(self, arch: _Architecture, obs: Observation) -> torch.Tensor:
        """Encoders: the candidate tokens, the bag (non-zero rows of the untied word-embedding gradient) when the
        update holds it, else the whole vocabulary but padding."""
        name = next((n for n in arch.update if n.endswith(EMBEDDINGS)), None)
        if name is not None:
            norms = arch.update[name].detach().float().norm(dim=1)
            return torch.nonzero(norms > 1e-6 * norms.max().clamp_min(1e-30)).flatten().cpu()
        pad = obs.inputs.pad_token_id  # type: ignore[union-attr]
        return torch.tensor([v for v in range(arch.first_inputs(0).shape[0]) if v != pad], dtype=torch.long)

    @staticmethod
    def _ranking_margin(span: Span, inputs: list[torch.Tensor], pool: torch.Tensor, alive: int,
                        eos: int | None) -> float:
        """The smallest ``log10(d_next / d_kept)`` over positions of the encoder ranking (``_encode``): how clearly
        the ``alive`` closest bag tokens stand apart from the next one (``alive``: the batch size, less the
        records ended by ``eos`` so far)."""
        worst = float("inf")
        for x in inputs:
            if alive <= 0 or len(pool) <= alive:
                break
            d = torch.sort(span.distance(x).cpu())
            worst = min(worst, float(torch.log10(d.values[alive] / d.values[alive - 1].clamp_min(1e-300))))
            if eos is not None:
                alive -= sum(1 for i in d.indices[:alive].tolist() if int(pool[i]) == eos)
        return worst

    def _decode(self, arch: _Architecture, per_position: list[list[int]], obs: Observation,
                details: dict[str, Any], progress: bool = False, deadline: float = math.inf) -> list[list[int]]:
        assert isinstance(arch, _GPT2)
        span2, threshold2 = self._noise_aware(arch.span(1, self.rtol), obs, self.threshold2,
                                              least=details.get("layer1_rank", 1))
        details["layer2_rank"] = span2.rank
        details["threshold2_used"] = threshold2
        record(details, "layer2", span2.decision)
        device = arch.t.wte.weight.device
        eos = None
        config = getattr(arch.model, "config", None)
        if config is not None:
            eos = getattr(config, "eos_token_id", None)
        ends = {t for t in (eos, obs.inputs.pad_token_id) if t is not None}  # type: ignore[union-attr]
        batch = max(obs.batch_size, 1)
        beam = self.beam or max(8, 2 * batch)
        # where the records end is read off the output layer's end-of-sequence row after a ranked decode
        # (``_record_ends``) when it can be
        row_of_ends = self._end_row(arch, obs, eos)
        ranked_used = False
        worst: dict[tuple[int, ...], float] = {}  # each prefix's largest layer-2 distance along its positions
        score: dict[tuple[int, ...], float] = {}  # the sum of its steps' distances ranked within their prefix
        certified: dict[tuple[int, ...], bool] = {}  # whether the threshold alone chose each of its steps
        active = [[v] for v in per_position[0]]
        if active:
            dist0 = span2.distance(arch.second_inputs(torch.tensor(active, device=device))).cpu()
            active = [a for a, d in zip(active, dist0.tolist()) if d < threshold2]
            worst.update({(a[0],): d for a, d in zip([[v] for v in per_position[0]], dist0.tolist())})
            # a first token has no prefix to rank it within: its score starts at 0 (the beam's first cut falls
            # back to the distance); ranked steps start at position 1
            score.update({(a[0],): 0.0 for a in active})
            certified.update({(a[0],): len(active) <= beam for a in active})
            active = self._narrow(active, worst, score, beam, 0, details)
        finished: list[list[int]] = []
        for p in tqdm(range(1, len(per_position)), desc="dager layer 2", disable=not progress, leave=False):
            if time.perf_counter() > deadline:
                details["stopped"] = (f"time limit {self.time_limit_s:g} s reached extending {len(active)} prefixes "
                                      f"at position {p}: the finished records and the prefixes so far are returned")
                break
            tokens = per_position[p]
            extendable = [a for a in active if a[-1] not in ends]
            done = [a for a in active if a not in extendable]
            finished += done
            if not tokens or not extendable:
                finished += extendable
                active = []
                break
            fit = max(1, self.max_candidates // len(extendable))
            if len(tokens) > fit:
                # the layer-1 test is not selective (a batch whose tokens and positions span what the wrong pairs
                # need, or more batch tokens than the model is wide): the nearest tokens that fit are tried
                details.setdefault("tokens_cut_at", []).append(p)
                tokens = tokens[:fit]
            kept = []
            step = max(1, min(64, 4096 // len(tokens)))  # (prefix, token) pairs a forward holds: bounded memory
            for i in range(0, len(extendable), step):
                chunk = extendable[i:i + step]
                dist = span2.distance(arch.second_inputs_extending(chunk, tokens)).cpu()
                z = _ranked(dist)
                inside = dist < threshold2
                passing = inside & _chosen(z)
                alone = inside.sum(1) == passing.sum(1)  # the threshold alone chose the same continuations
                ranked_used |= not bool(alone.all())
                for a, v in torch.nonzero(passing).tolist():
                    new = chunk[a] + [tokens[v]]
                    certified[tuple(new)] = certified[tuple(chunk[a])] and bool(alone[a])
                    worst[tuple(new)] = max(worst[tuple(chunk[a])], float(dist[a, v]))
                    score[tuple(new)] = score[tuple(chunk[a])] + float(z[a, v])
                    kept.append(new)
            extended = {tuple(c[:-1]) for c in kept}
            finished += [a for a in extendable if tuple(a) not in extended]  # no continuation: the sequence ended
            active = self._narrow(kept, worst, score, beam, p, details)
            if progress:
                print(f"dager layer 2: position {p}, {len(tokens)} tokens x {len(extendable)} prefixes tested, "
                      f"{len(kept)} passed, {len(active)} kept", flush=True)
        finished += active
        found = [s for s in finished if s]
        if len(found) > batch:  # more than the batch holds (a beam ended early): the best ranked, closest
            found = sorted(found, key=lambda s: (score[tuple(s)] / max(len(s) - 1, 1), worst[tuple(s)]))[:batch]
        details["layer2_worst"] = max((worst[tuple(s)] for s in found), default=None)
        details["records_decoded_certified"] = sum(1 for s in found if certified[tuple(s)])
        if ranked_used and row_of_ends is not None and found and eos is not None:
            extended = self._extend(arch, span2, found, per_position, ends)
            found = self._record_ends(arch, extended, [len(s) for s in found], row_of_ends, eos, details)
        return found

    @staticmethod
    def _extend(arch: _GPT2, span2: Span, sequences: list[list[int]], per_position: list[list[int]],
                ends: set[int]) -> list[list[int]]:
        """Each record continued to the last position by its nearest layer-2 continuation (ranked within the
        prefix, no end test): the tails the end fit (``_record_ends``) may cut anywhere in."""
        out = [list(s) for s in sequences]
        for p in range(min(len(s) for s in out), len(per_position)):
            tokens = [v for v in per_position[p] if v not in ends]
            group = [s for s in out if len(s) == p]
            if len(tokens) < 2 or not group:
                continue
            z = _ranked(span2.distance(arch.second_inputs_extending(group, tokens)).cpu())
            for s, k in zip(group, z.argmin(dim=1).tolist()):
                s.append(tokens[k])
        return out

    @staticmethod
    def _end_row(arch: _Architecture, obs: Observation, eos: int | None) -> torch.Tensor | None:
        """The output layer's gradient row of the end-of-sequence token, when the records' ends can be read from
        it: a causal LM's clean gradient whose output layer (or tied embedding) is in the update."""
        if eos is None or obs.task.kind != "causal_lm" or obs.update_kind != "gradient":
            return None
        try:  # the logits' own weight: lm_head when untied (wte is then the input embedding), else the tied wte
            _, name = output_layer(arch.model, arch.update)
        except ConfigError:
            return None
        if arch.update[name].shape[0] <= eos:
            return None
        row = arch.update[name][eos].detach().double()
        return row if bool(torch.isfinite(row).all()) and float(row.norm()) > 0 else None

    @torch.no_grad()
    def _record_ends(self, arch: _Architecture, sequences: list[list[int]], start: list[int], observed: torch.Tensor,
                     eos: int, details: dict[str, Any]) -> list[list[int]]:
        """Where each record ends, from the output layer's end-of-sequence row (ours). With mean loss over the
        ``N`` labelled positions, row ``eos`` of the output-layer gradient is ``(1/N) sum_r (sum_{t<c_r}
        p_t[eos] h_t - h_{c_r - 1})``: every position's predicted end probability times its final state, less the
        state of each record's last token (the one labelled with the end token), ``N = sum_r c_r`` for records of
        ``c_r`` tokens before it. By the causal mask a record's states do not depend on what follows, so one
        forward of each decoded record (run past its end, ``_extend``) gives the term of every cut ``c``; from the
        decode's own ends (``start``), the single change of one record's cut that explains the observed row best is
        taken while one helps, then of two records' cuts within ``PAIR_REACH`` tokens (one record a token late and
        another a token early leave the total, and so each single change, worse). The decode's end test is its
        weakest step (a record's last step before the end token looks like an ended one); with every record right
        the row is explained to 7.9e-8 (GPT-2-small pre-trained 30 steps, batch 8: ``bench_text.py --only
        realistic``'s note). ``details["record_ends"]``: the row's share left unexplained before and after, and how
        many records changed.
        Tried and not used: re-checking the decode's narrow token choices against the same row (768 numbers: greedy
        token changes fitted it with wrong tokens, and the records got worse)."""
        model = arch.model
        device = observed.device
        terms = []  # per record: (c, d) the term of each cut c = 1..len
        for s in sequences:
            out = model(input_ids=torch.tensor([s], device=device), output_hidden_states=True)
            h = out.hidden_states[-1][0].double()
            p = torch.softmax(out.logits[0].double(), dim=-1)[:, eos]
            terms.append(torch.cumsum(p[:, None] * h, dim=0) - h)  # row c-1: the cut after c tokens
        cuts = list(start)
        chosen = torch.stack([t[c - 1] for t, c in zip(terms, cuts)])  # (records, d)

        def left(total: torch.Tensor, n: int) -> float:
            return float((observed - total / n).norm() / observed.norm())

        before = best = left(chosen.sum(0), sum(cuts))
        for _ in range(4 * sum(len(s) for s in sequences)):  # at most that many changes
            base, n = chosen.sum(0), sum(cuts)
            moves: list[tuple[int, int]] = []
            for r, t in enumerate(terms):  # every cut of record r at once: (len_r, d)
                totals = base - chosen[r] + t
                sizes = n - cuts[r] + torch.arange(1, len(t) + 1, device=t.device)
                shares = ((observed - totals / sizes[:, None]).norm(dim=1) / observed.norm())
                c = int(shares.argmin())
                if float(shares[c]) < best * (1 - 1e-9) and c + 1 != cuts[r]:
                    best, moves = float(shares[c]), [(r, c + 1)]
            if not moves:  # two records' ends moved together (one late, one early: the total count stays)
                near = [[c for c in range(max(1, cut - PAIR_REACH), min(len(t), cut + PAIR_REACH) + 1) if c != cut]
                        for t, cut in zip(terms, cuts)]
                for r, q in itertools.combinations(range(len(terms)), 2):
                    for a, b in itertools.product(near[r], near[q]):
                        total = base - chosen[r] - chosen[q] + terms[r][a - 1] + terms[q][b - 1]
                        share = left(total, n - cuts[r] - cuts[q] + a + b)
                        if share < best * (1 - 1e-9):
                            best, moves = share, [(r, a), (q, b)]
            if not moves:
                break
            for r, c in moves:
                cuts[r], chosen[r] = c, terms[r][c - 1]
        details["record_ends"] = {"row_left_before": before, "row_left_after": best,
                                  "changed": sum(1 for a, b in zip(start, cuts) if a != b)}
        return [s[:c] for s, c in zip(sequences, cuts)]

    @staticmethod
    def _narrow(prefixes: list[list[int]], worst: dict[tuple[int, ...], float],
                score: dict[tuple[int, ...], float], beam: int, position: int,
                details: dict[str, Any]) -> list[list[int]]:
        """The ``beam`` best prefixes when more passed: the candidate set stays bounded when the layer-2 threshold
        lets wrong prefixes through, instead of growing by a factor of the passing tokens at each position (ours;
        DAGER's reference code caps its prefixes too). Ranked by ``score``, the sum of each step's distance ranked
        within its own prefix (``_ranked``), then by the largest distance so far: on a trained model the distances
        of different prefixes do not compare (true steps 6.4e-7..5.4e-4 from the span, each prefix's nearest
        wrong token 4.9e-6..1.1e-3), while within one prefix the true next token is the nearest of the bag at 99 %
        of the positions (GPT-2-small pre-trained 30 steps, 16 held-out sentences, 466 positions; the true one in
        the nearest 3 at 99.8 %; ``bench_text.py --only realistic --diagnose``)."""
        if len(prefixes) <= beam:
            return prefixes
        details.setdefault("beam_cut_at", []).append(position)
        return sorted(prefixes, key=lambda a: (score[tuple(a)], worst[tuple(a)]))[:beam]

    def _last_tokens(self, arch: _Architecture, sequences: list[list[int]], obs: Observation,
                     details: dict[str, Any], shortlist: int = 4) -> list[list[int]]:
        """Each record's last token, from the output layer's gradient (ours). It feeds no loss term as an input,
        but it is the label of the position before it: with the visible tokens known, the model's forward gives
        every hidden state ``h`` and prediction ``p``, so the output-layer gradient less what the known labels and
        the predictions explain is ``-(1/N) sum_r d logit_r[y_r] / dW`` over the records' last positions, where
        ``N`` counts the labelled positions: row ``y_r`` holds ``-h_r / N`` (through the tied input embedding, the
        rows of the record's own tokens move too; both are computed exactly). Each record's ``shortlist``
        tokens whose rows match ``-h_r`` best are tried, and coordinate descent picks the set whose terms explain
        the residual; a token is reported ``recovered`` when the residual left is under ``threshold2`` of it,
        else the record keeps its visible tokens and ``details["last_token"]`` says it is lost."""
        assert isinstance(arch, _GPT2)
        model = arch.model
        names = {n: p for n, p in model.named_parameters() if n.endswith(("wte.weight", "lm_head.weight"))}
        names = {n: p for n, p in names.items() if n in arch.update}
        n_labels = sum(len(s) for s in sequences)
        if not names or n_labels == 0:
            details["last_token"] = "not recovered: the update holds no output-layer or tied embedding gradient"
            return sequences
        params = list(names.values())
        device = params[0].device
        batch = len(sequences)
        length = max(len(s) for s in sequences)
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else 0  # type: ignore[union-attr]
        ids = torch.tensor([s + [pad] * (length - len(s)) for s in sequences], device=device)
        mask = (torch.arange(length, device=device)[None] < torch.tensor([len(s) for s in sequences],
                                                                         device=device)[:, None]).long()
        last = torch.tensor([len(s) - 1 for s in sequences], device=device)
        rows = torch.arange(batch, device=device)
        observed = torch.cat([arch.update[n].detach().double().flatten() for n in names])

        def flat_grad(value: torch.Tensor) -> torch.Tensor:
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if g is None else g).double().flatten()
                              for p, g in zip(params, grads)])

        with torch.enable_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            logits = out.logits
            logp = torch.log_softmax(logits.double(), dim=-1)
            known = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            # the known labels' terms and the unknown ones' normaliser: -log p(y) = logsumexp - logit[y]
            explained = (-known.sum() + torch.logsumexp(logits[rows, last].double(), dim=-1).sum()) / n_labels
            residual = observed - flat_grad(explained)
            hidden = out.hidden_states[-1][rows, last].detach().double()  # (B, d): after the final norm
            head = params[0] if len(params) == 1 else names[next(n for n in names if n.endswith("lm_head.weight"))]
            vocab, width = head.shape
            offset = 0 if head is params[0] else params[0].numel()
            out_rows = residual[offset:offset + vocab * width].view(vocab, width)
            match = -(out_rows @ hidden.T) * n_labels / (hidden * hidden).sum(1).clamp_min(1e-300)  # (V, B): ~1
            picks = torch.topk(match, min(shortlist, vocab), dim=0).indices.T.tolist()  # (B, shortlist)
            del out, logits, logp
            terms: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # sparse: (indices, values)
            for r in range(batch):  # one record's forward: its terms touch its own tokens' rows and the label's
                own = model(input_ids=ids[r:r + 1, :len(sequences[r])]).logits[0, -1]
                for v in picks[r]:
                    g = -flat_grad(own[v]) / n_labels
                    idx = torch.nonzero(g).flatten()
                    terms[(r, v)] = (idx, g[idx])

        def add(vector: torch.Tensor, term: tuple[torch.Tensor, torch.Tensor], sign: float) -> None:
            vector.index_add_(0, term[0], term[1], alpha=sign)

        def cost(vector: torch.Tensor, term: tuple[torch.Tensor, torch.Tensor]) -> float:
            """``|vector - term|^2 - |vector|^2``"""
            return float(-2 * (vector[term[0]] * term[1]).sum() + (term[1] * term[1]).sum())

        choice = [picks[r][0] for r in range(batch)]
        left = residual.clone()
        for r in range(batch):
            add(left, terms[(r, choice[r])], -1.0)
        for _ in range(3):  # coordinate descent over the records' choices
            changed = False
            for r in range(batch):
                add(left, terms[(r, choice[r])], 1.0)
                best = min(picks[r], key=lambda v: cost(left, terms[(r, v)]))
                changed |= best != choice[r]
                choice[r] = best
                add(left, terms[(r, best)], -1.0)
            if not changed:
                break
        share = float(left.norm() / residual.norm().clamp_min(1e-300))
        details["last_token_residual"] = share
        if share >= self.threshold2:
            details["last_token"] = (f"not recovered: the output layer's gradient is not explained by any last "
                                     f"tokens tried (residual {share:.2g} of it); the records lack their last token")
            return sequences
        details["last_token"] = f"recovered from the output layer's gradient (residual {share:.2g}), {batch} records"
        return [s + [v] for s, v in zip(sequences, choice)]

    def _link(self, arch: _Architecture, per_position: list[list[int]], obs: Observation, span1: Span,
              rate: float, details: dict[str, Any]) -> list[list[int]]:
        """Decoders under dropout: which record each certified token belongs to, from the first layer alone.

        Layer 2's input carries attention and residual dropout masks, so DAGER's prefix test cannot be exact; the
        first layer's query gradient can. The masked test found each true token's embedding mask, hence its exact
        layer-1 input ``x_t`` (one row of ``X``); ``dL/dW = X^T dL/dY`` with ``X`` of full row rank gives every
        token's own output gradient ``dL/dY_t = (X^T)^+ dL/dW``. Its query part is, per head, a combination of the
        keys its attention read: ``dL/dq_t = scale sum_{s <= t} dL/ds_ts k_s`` over the record's positions up to
        ``t`` (attention dropout changes the coefficients, not the span). So a token at ``t`` belongs after the
        prefix whose keys, with its own, span its query gradient in every head (exact while ``t + 1`` is below the
        head width). Each position assigns its tokens to the records at the least total relative residual, every
        token at least once (Hungarian method, Kuhn 1955); a record ends when fewer tokens remain than records.
        ``records_certified``: the records whose every step had a residual below ``threshold2``."""
        assert isinstance(arch, _GPT2)
        batch = max(obs.batch_size, 1)
        if not per_position or not per_position[0]:
            return []
        index: dict[tuple[int, int], int] = {}
        rows_x = []
        for p, tokens in enumerate(per_position):
            if not tokens:
                continue
            x, projector = arch.masked_candidates(p, span1)
            found, keep = masked_distance(x[torch.tensor(tokens, device=x.device)], projector, masks=True,
                                          refine=True)
            for v, row, dist in zip(tokens, arch.dropped_inputs(p, tokens, keep, rate), found.tolist()):
                if dist < self.dropout_threshold:  # a token two records hold here has no single mask: no row
                    index[(p, v)] = len(rows_x)
                    rows_x.append(row)
        inputs = torch.stack(rows_x).double()
        grad = arch.update[_find(arch.update, ("h.0.attn.c_attn.weight",)) or ""].double()
        out_grad = torch.linalg.lstsq(inputs.T, grad).solution  # (n, 3d): each token's dL/d(q, k, v)
        queries, keys = arch.query_grads_and_keys(inputs, out_grad)  # (n, heads, head_dim) each
        details["link_fit"] = float((inputs.T @ out_grad - grad).norm() / grad.norm().clamp_min(1e-300))

        def residual(prefix: list[int], p: int, v: int) -> float:
            if (p, v) not in index:
                return 0.5  # no row of its own (held by two records): neither for nor against a prefix
            rows = [index[(s, t)] for s, t in enumerate(prefix) if (s, t) in index] + [index[(p, v)]]
            k = keys[rows].permute(1, 2, 0)  # (heads, head_dim, p + 1)
            q = queries[index[(p, v)]][..., None]  # (heads, head_dim, 1)
            if k.shape[-1] >= k.shape[1]:
                return 0.0  # as many keys as the head is wide: the test says nothing
            coef = torch.linalg.lstsq(k, q).solution
            return float((k @ coef - q).norm() / q.norm().clamp_min(1e-300))

        first = per_position[0]
        start = 1
        records = [[first[i % len(first)]] for i in range(batch)]
        worst = [0.0] * batch
        if len(first) < batch and len(per_position) > 1 and per_position[1]:
            # records share first tokens: the second position's tokens choose their first token (each first token
            # used at least once), so the shared ones are repeated as often as the records need them
            second = per_position[1]
            cost = torch.tensor([[residual([v], 1, w) for v in first] for w in second], dtype=torch.float64)
            copies = max(1, len(second) - len(first) + 1)
            wide = torch.cat([cost - 10.0] + [cost] * (copies - 1), dim=1).numpy()
            rows_w, cols_v = linear_sum_assignment(wide)
            pairs = [(first[c % len(first)], second[r], float(cost[r, c % len(first)]))
                     for r, c in zip(rows_w.tolist(), cols_v.tolist())]
            spare = sorted(((float(cost[r, c]), first[c], second[r]) for r in range(len(second))
                            for c in range(len(first)) if (first[c], second[r]) not in {(a, b) for a, b, _ in pairs}))
            pairs += [(v, w, c) for c, v, w in spare[: max(0, batch - len(pairs))]]
            pairs = pairs[:batch]
            records = [[v, w] for v, w, _ in pairs] + [[first[0]] for _ in range(batch - len(pairs))]
            worst = [c for _, _, c in pairs] + [1.0] * (batch - len(pairs))
            start = 2
        alive = [r for r in range(batch) if len(records[r]) == start]
        for p in range(start, len(per_position)):
            tokens = per_position[p]
            if not tokens:
                break
            cost = torch.tensor([[residual(records[r], p, v) for v in tokens] for r in alive], dtype=torch.float64)
            keep_n = min(len(alive), max(len(tokens), len(alive) - max(0, len(per_position[p - 1]) - len(tokens))))
            if keep_n < len(alive):  # the records no token here continues well end at the previous position
                order = torch.argsort(cost.min(dim=1).values).tolist()[:keep_n]
                alive, cost = [alive[i] for i in sorted(order)], cost[sorted(order)]
            copies = max(1, len(alive) - len(tokens) + 1)  # each token once at a bonus, then again if shared
            wide = torch.cat([cost - 10.0] + [cost] * (copies - 1), dim=1).numpy()
            picked, cols = linear_sum_assignment(wide)
            for i, c in zip(picked.tolist(), cols.tolist()):
                records[alive[i]].append(tokens[c % len(tokens)])
                worst[alive[i]] = max(worst[alive[i]], float(cost[i, c % len(tokens)]))
        details["linked_by"] = "layer-1 query gradients in the span of the record's keys"
        details["link_worst_residual"] = worst
        details["records_linked_certified"] = sum(1 for w in worst if w < self.threshold2)
        return records

    def _encode(self, arch: _Architecture, span1: Span, obs: Observation, details: dict[str, Any],
                dropout: bool = False, progress: bool = False,
                deadline: float = math.inf) -> tuple[list[list[int]], list[list[int]]]:
        """Encoders (BERT, sequence classification): the layer-1 test ranks the token bag at each position.

        Why not the decoder's absolute threshold: a classifier's loss reaches the batch through the first
        position's pooled output, so at random init the other tokens' query gradients are 1e-4..1e-8 of the
        first's (bert-tiny, batch 1: singular values of ``dL/dW_q`` from 1 down to 1e-8). Their directions sit at
        the float32 rounding floor of the gradient, and true inputs land at relative distances 1e-3..5e-2 from
        the span instead of 1e-7, above any threshold that excludes wrong tokens. The ranking still separates
        them: candidates are restricted to the token bag (non-zero rows of the untied word-embedding gradient,
        exact, ``token_bag``) and each position keeps its ``alive`` closest bag tokens, where ``alive`` is the
        batch size minus the records already ended by their end-of-sequence token (DAGER's "maxB" filter,
        Petrov et al. 2024, code ``l1_filter=maxB``). Batch 1 is then one token per position, read off
        directly. Larger batches leave each position's tokens unassigned to records (``ambiguous_positions``):
        ``_assemble`` decides."""
        length = obs.inputs.seq_len
        has_bag = any(n.endswith(EMBEDDINGS) for n in arch.update)
        pool = self._pool(arch, obs)
        details["bag_size"] = len(pool) if has_bag else None
        if span1.full:
            details["candidates_per_position"] = [0] * length
            details["ambiguous_positions"] = []
            return [[] for _ in range(length)], []
        eos = getattr(getattr(arch.model, "config", None), "eos_token_id", None)
        pad = obs.inputs.pad_token_id  # type: ignore[union-attr]
        alive = max(obs.batch_size, 1)
        per_position: list[list[int]] = []
        worst_pick = 0.0
        options: list[list[int]] = []  # the next-ranked tokens at each position, for the assembly
        for p in range(length):
            if alive <= 0 or pool.numel() == 0:
                break
            if dropout:  # the masked copy of each bag token's input (attacks.text.dropout)
                x, projector = arch.masked_candidates(p, span1)
                dist = masked_distance(x[pool.to(x.device)], projector)
            else:
                inputs = arch.first_inputs(p)
                dist = span1.distance(inputs[pool.to(inputs.device)])
            ranked = torch.argsort(dist.cpu())
            picks = [int(pool[i]) for i in ranked[:alive]]
            worst_pick = max(worst_pick, float(dist.cpu()[ranked[:alive]].max()))
            options.append([int(pool[i]) for i in ranked[alive:alive + self.assemble_options]])
            per_position.append(picks)
            if eos is not None:
                alive -= sum(1 for v in picks if v == eos)
        details["candidates_per_position"] = [len(c) for c in per_position]
        details["layer1_worst_pick"] = worst_pick
        details["ambiguous_positions"] = [p for p, c in enumerate(per_position) if len(c) > 1]
        rows = max((len(c) for c in per_position), default=0)
        if rows > 1 and self.assemble_sweeps and pad is not None:
            assert isinstance(arch, _BERT)
            grid = _initial_records(per_position, rows, length, eos, pad)
            grid = self._assemble(arch, grid, [picks + more for picks, more in zip(per_position, options)],
                                  pool.tolist(), pad, details, progress, deadline)
            sequences = [[int(v) for v in row if v != pad] for row in grid]
        else:
            sequences = [[c[i] for c in per_position if i < len(c)] for i in range(rows)]
        for s in sequences:  # a record ends at its end-of-sequence token
            if eos is not None and eos in s:
                del s[s.index(eos) + 1:]
        return per_position, sequences

    def _assemble(self, arch: _BERT, grid: torch.Tensor, options: list[list[int]], bag: list[int], pad: int,
                  details: dict[str, Any], progress: bool = False, deadline: float = math.inf) -> torch.Tensor:
        """Which record each position's tokens belong to, for encoders (ours; DAGER assembles encoder records by a
        search over whole sequences with the layer-2 span too). A record's layer-2 inputs depend on all of its
        tokens, so a wrong token anywhere moves every position of that record off the span of layer 2's
        gradient (bert-mini, batch 2: the true records sum to 0.007 relative distance, one exchanged position to
        0.12, 17 to 0.55). Local search on that sum: at each position, every exchange of two records' tokens
        there, every exchange of their whole tails from there (which moves where records end), every record's
        token there replaced by one of the position's ``options`` (its layer-1 picks and the ranking's next
        tokens: at the float32 floor it misorders a few), and every trade of two of a record's tokens that each
        position's options allow, is tried, and the best kept; sweeps repeat until none helps. Then a repair: the
        ranking can put a true token far down at its position, so each record's ``repair_positions`` positions
        farthest from the span try every token of the bag, and the sweeps resume while that helps. The search
        stops at ``deadline`` (``time_limit_s``) with the records so far and ``details["stopped"]``; with
        ``progress`` each sweep prints its cost (bert-base, batch 8: several minutes a sweep on one core)."""
        span2 = arch.span(1, self.rtol)
        details["layer2_rank"] = span2.rank
        record(details, "layer2", span2.decision)
        if span2.full:
            details["assembly"] = f"layer-2 span is the whole space (rank {span2.rank}): records not assembled"
            return grid
        device = next(arch.model.parameters()).device

        def token_costs(rows_: torch.Tensor) -> torch.Tensor:  # (n, length) -> (n, length)
            out = []
            for k in range(0, len(rows_), 256):
                chunk = rows_[k:k + 256]
                d = span2.distance(arch.second_inputs(chunk.to(device), pad)).cpu()
                out.append(d * (chunk != pad))
            return torch.cat(out)

        def row_costs(rows_: torch.Tensor) -> torch.Tensor:  # (n, length) -> (n,)
            return token_costs(rows_).sum(1)

        rows, length = grid.shape
        pairs = [(i, j) for i in range(rows) for j in range(i + 1, rows)]
        current = row_costs(grid)
        details["assembly_start"] = float(current.sum())
        sweeps = 0
        for sweeps in range(1, self.assemble_sweeps + 1):
            improved = False
            for p in range(length):
                if time.perf_counter() > deadline:
                    details["stopped"] = (f"time limit {self.time_limit_s:g} s reached assembling records (sweep "
                                          f"{sweeps}, position {p} of {length}): the records so far are returned")
                    break
                moves: list[list[tuple[int, torch.Tensor]]] = []
                for i, j in pairs:
                    if grid[i, p] != grid[j, p]:
                        a, b = grid[i].clone(), grid[j].clone()
                        a[p], b[p] = grid[j, p], grid[i, p]
                        moves.append([(i, a), (j, b)])
                    a, b = grid[i].clone(), grid[j].clone()
                    a[p:], b[p:] = grid[j, p:], grid[i, p:]
                    if not (torch.equal(a, grid[i]) and torch.equal(b, grid[j])):
                        moves.append([(i, a), (j, b)])
                here = set(options[p]) if p < len(options) else set()
                for r in range(rows):
                    if grid[r, p] == pad:
                        continue
                    moves += [[(r, _with_token(grid[r], p, v))] for v in here if v != grid[r, p]]
                    for q in range(p + 1, min(length, len(options))):  # two of the record's tokens trade places
                        if grid[r, q] != grid[r, p] and int(grid[r, q]) in here and int(grid[r, p]) in options[q]:
                            a = grid[r].clone()
                            a[p], a[q] = grid[r, q], grid[r, p]
                            moves.append([(r, a)])
                moves = [m for m in moves if len(m) == 2 or not _duplicates(grid, m, pad)]
                if not moves:
                    continue
                new = row_costs(torch.stack([row for move in moves for _, row in move]))
                totals, k = [], 0
                for move in moves:
                    totals.append(sum(float(new[k + m]) - float(current[r]) for m, (r, _) in enumerate(move)))
                    k += len(move)
                best = min(range(len(moves)), key=totals.__getitem__)
                if totals[best] < -1e-9 * float(current.sum()):
                    k = sum(len(m) for m in moves[:best])
                    for m, (r, row) in enumerate(moves[best]):
                        grid[r], current[r] = row, new[k + m]
                    improved = True
            if progress:
                print(f"dager assembly: sweep {sweeps}, layer-2 distance {float(current.sum()):.4g}", flush=True)
            if details.get("stopped") or (not improved and not self._repair(grid, current, bag, pad, token_costs)):
                break
        details.update(assembly_sweeps=sweeps, assembly_cost=float(current.sum()))
        return grid

    def _repair(self, grid: torch.Tensor, current: torch.Tensor, bag: list[int], pad: int,
                token_costs: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Each record's worst positions try every bag token; the best change per record is kept, in place.
        Returns whether any record improved."""
        if not self.repair_positions or len(bag) > 2048:
            return False
        per_token = token_costs(grid)
        improved = False
        for r in range(len(grid)):
            worst = torch.argsort(per_token[r], descending=True)[: self.repair_positions]
            tries = []
            for p in worst.tolist():
                if grid[r, p] == pad:
                    continue
                tries += [a for a in (_with_token(grid[r], p, v) for v in bag if v != grid[r, p])
                          if not _duplicates(grid, [(r, a)], pad)]
            if not tries:
                continue
            costs = token_costs(torch.stack(tries)).sum(1)
            k = int(costs.argmin())
            if float(costs[k]) < float(current[r]) * (1 - 1e-9):
                grid[r], current[r] = tries[k], costs[k]
                improved = True
        return improved


def _ranked(dist: torch.Tensor) -> torch.Tensor:
    """Each row's distances ranked within the row: ``log10(d / median(d))`` (0 everywhere for fewer than
    ``RANKED_MIN`` tokens, where a median says nothing)."""
    if dist.shape[-1] < RANKED_MIN:
        return torch.zeros_like(dist)
    logd = dist.clamp_min(1e-300).log10()
    return logd - logd.median(dim=-1, keepdim=True).values


def _chosen(z: torch.Tensor) -> torch.Tensor:
    """The continuations each prefix (row) keeps by its ranked distances, when there are enough tokens to rank
    (``RANKED_MIN``; else every one, and the threshold alone decides): the nearest, and every other that stands
    out as far (below ``BRANCH_Z``: records that share the prefix); none when no token stands out (``END_Z``,
    ``END_GAP``): the record ended there."""
    if z.shape[-1] < RANKED_MIN:
        return torch.ones_like(z, dtype=torch.bool)
    two, which = torch.topk(z, 2, dim=-1, largest=False)
    ended = (two[:, 0] > END_Z) & (two[:, 1] - two[:, 0] < END_GAP)
    keep = z < BRANCH_Z
    keep[torch.arange(z.shape[0]), which[:, 0]] |= ~ended
    return keep


def _ambiguous(span: Span) -> bool:
    return span.decision is not None and span.decision.ambiguous


def _with_token(row: torch.Tensor, position: int, token: int) -> torch.Tensor:
    """A copy of ``row`` holding ``token`` at ``position``."""
    out = row.clone()
    out[position] = token
    return out


def _duplicates(grid: torch.Tensor, move: list[tuple[int, torch.Tensor]], pad: int) -> bool:
    """Whether a move makes a record agree with another at more than a quarter of its positions. A copy of a
    well-placed record costs about as little as the record itself, so without this the search would trade a poorly
    placed record for a near-duplicate. Records may still share a token at a position, as they do (bundled
    records, batches of 2 to 8, seeds 0-2: at most 20 % of a record's positions agree with another's)."""
    changed = {r for r, _ in move}
    new = {r: row for r, row in move}
    rows = [new.get(k, grid[k]) for k in range(len(grid))]
    for r in changed:
        live = rows[r] != pad
        for k, other in enumerate(rows):
            if k != r and int(((other == rows[r]) & live).sum()) * 4 > int(live.sum()):
                return True
    return False


def _initial_records(per_position: list[list[int]], rows: int, length: int, eos: int | None,
                     pad: int | None) -> torch.Tensor:
    """A first assignment of each position's tokens to records ``(rows, length)``: in rank order to the records
    not yet ended by an end-of-sequence token; the rest is padding."""
    grid = torch.full((rows, length), -1 if pad is None else pad, dtype=torch.long)
    ended = [False] * rows
    for p, picks in enumerate(per_position):
        alive = [r for r in range(rows) if not ended[r]]
        for r, v in zip(alive, picks):
            grid[r, p] = v
            if eos is not None and v == eos:
                ended[r] = True
    return grid


ATTACKS.register("dager")(DAGER)
