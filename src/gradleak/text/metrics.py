"""Scores of a text reconstruction: ROUGE-1/2/L (``rouge-score``), exact sequences, token accuracy, secrets.

Recovered sequences are first matched one-to-one to the true ones (Hungarian assignment on token-level
disagreement), since an attack recovers a batch as a set. *Secrets recovered* is what an auditor reports: the share
of the batch's PII spans (names, emails, phone numbers, accounts, ...) that appear verbatim in the decoded
reconstruction matched to their record.

Text baselines (``bag_baselines``): what an attacker gets from the leaked token bag alone, without ordering it
from the update (the text side of ``gradleak.baselines``): random draws from the bag, and the bag in the order
of its tokens' frequency in public text. A record counts as leaked only when its ROUGE-1 beats the best of them by
``Margins.rouge1``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch
from scipy.optimize import linear_sum_assignment

from gradleak.attacks.text.token_bag import token_bag
from gradleak.errors import GradleakError
from gradleak.observation import Observation
from gradleak.text.corpus import Record, private_records
from gradleak.text.tokenizer import Tokenizer

#: seed offset of the records that stand for public text (the victims' records use small seeds)
PUBLIC_SEED = 7_000_003


@dataclass(frozen=True)
class TextScores:
    """Per true sequence, in truth order; ``assignment[i]`` is the reconstruction matched to truth ``i``."""

    rouge1: list[float]
    rouge2: list[float]
    rougeL: list[float]
    exact: list[bool]
    token_accuracy: list[float]
    secrets_found: list[int]
    secrets_total: list[int]
    assignment: list[int]
    recovered_text: list[str]
    true_text: list[str]
    #: per baseline name, per true record: {"rouge1": [...], "rouge2": [...]} (``with_baselines``)
    baselines: dict[str, dict[str, list[float]]] | None = None
    #: per true record: ROUGE-1 beats the best baseline's by the margin (``with_baselines``)
    leaked: list[bool] | None = None

    def with_baselines(self, baselines: dict[str, dict[str, list[float]]], margin: float) -> TextScores:
        """These scores beside ``baselines`` (``bag_baselines``), each record judged leaked or not: its ROUGE-1
        beats the best guess's by ``margin``, or its ROUGE-2 does (word order the bag cannot give: where records
        are scored as token ids, the bag alone reaches ROUGE-1 near 1 at batch 1, and only order tells a leak)."""
        n = len(self.rouge1)
        best1 = [max(b["rouge1"][i] for b in baselines.values()) for i in range(n)]
        best2 = [max(b["rouge2"][i] for b in baselines.values()) for i in range(n)]
        leaked = [r1 >= b1 + margin or r2 >= b2 + margin
                  for r1, r2, b1, b2 in zip(self.rouge1, self.rouge2, best1, best2)]
        return replace(self, baselines=baselines, leaked=leaked)

    def baseline_means(self) -> dict[str, dict[str, float]]:
        n = len(self.rouge1)
        return {name: {k: sum(v) / n for k, v in b.items()} for name, b in (self.baselines or {}).items()}

    def means(self) -> dict[str, float | None]:
        n = len(self.exact)
        total = sum(self.secrets_total)
        return {"rouge1": sum(self.rouge1) / n, "rouge2": sum(self.rouge2) / n, "rougeL": sum(self.rougeL) / n,
                "exact": sum(self.exact) / n, "token_accuracy": sum(self.token_accuracy) / n,
                "secrets_recovered": None if total == 0 else sum(self.secrets_found) / total,
                "leaked": None if self.leaked is None else sum(self.leaked) / n}


def _strip(ids: list[int], ignore: set[int]) -> list[int]:
    return [i for i in ids if i not in ignore]


def score_text(recovered: torch.Tensor, truth: torch.Tensor, decode, *, pad_id: int | None = None,
               ignore_ids: tuple[int, ...] = (), records: list[Record] | None = None, match: bool = True) -> TextScores:
    """Score recovered token ids ``(B', L)`` against the true ids ``(B, L)``; ``decode(ids) -> str``. Padding and
    ``ignore_ids`` (e.g. an end-of-sequence marker) are left out of both. ``records`` (the truth's records, in
    order) supply the secrets to look for."""
    from rouge_score import rouge_scorer

    ignore = {i for i in (pad_id, *ignore_ids) if i is not None}
    rec = [_strip(r, ignore) for r in recovered.tolist()]
    true = [_strip(t, ignore) for t in truth.tolist()]
    cost = torch.zeros(len(true), max(len(rec), 1))
    for i, t in enumerate(true):
        for j, r in enumerate(rec):
            length = max(len(t), len(r), 1)
            agree = sum(a == b for a, b in zip(t, r))
            cost[i, j] = 1.0 - agree / length
    if not match:  # already in truth order (a guess made per record)
        rows, cols = list(range(min(len(true), len(rec)))), list(range(min(len(true), len(rec))))
    else:
        rows, cols = linear_sum_assignment(cost.numpy()) if rec else ([], [])
    assignment = [-1] * len(true)
    for i, j in zip(rows, cols):
        assignment[int(i)] = int(j)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    out: dict[str, list] = {k: [] for k in ("rouge1", "rouge2", "rougeL", "exact", "token_accuracy",
                                            "secrets_found", "secrets_total", "recovered_text", "true_text")}
    for i, t in enumerate(true):
        r = rec[assignment[i]] if assignment[i] >= 0 else []
        t_text, r_text = decode(t), decode(r)
        s = scorer.score(t_text, r_text)
        out["rouge1"].append(s["rouge1"].fmeasure)
        out["rouge2"].append(s["rouge2"].fmeasure)
        out["rougeL"].append(s["rougeL"].fmeasure)
        out["exact"].append(r == t)
        out["token_accuracy"].append(sum(a == b for a, b in zip(t, r)) / max(len(t), 1))
        secrets = records[i].secret_values() if records is not None else []
        out["secrets_found"].append(sum(value in r_text for _, value in secrets))
        out["secrets_total"].append(len(secrets))
        out["recovered_text"].append(r_text)
        out["true_text"].append(t_text)
    return TextScores(assignment=assignment, **out)


def bag_guesses(truth: torch.Tensor, bag: set[int] | list[int], *, pad_id: int | None = None,
                ignore_ids: tuple[int, ...] = (), public: list[list[int]] | None = None, draws: int = 5,
                seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """What the leaked token ``bag`` gives without the update, shaped like ``truth`` ``(B, L)`` (padding and
    ``ignore_ids`` kept where the truth has them: lengths are known): ``"random from bag"``, ``draws`` batches of
    tokens drawn uniformly from the bag; ``"bag by public frequency"``, the bag's tokens, most frequent in
    ``public`` token sequences first (ties by id), cycled over each record."""
    ignore = {i for i in (pad_id, *ignore_ids) if i is not None}
    tokens = sorted(int(t) for t in bag if int(t) not in ignore) or sorted(ignore)[:1] or [0]
    keep = torch.zeros_like(truth, dtype=torch.bool)
    for i in ignore:
        keep |= truth == i
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor(tokens)
    random = [torch.where(keep, truth, pool[torch.randint(len(pool), truth.shape, generator=gen)]) for _ in range(draws)]
    counts = Counter(t for seq in (public or []) for t in seq)
    ordered = torch.tensor(sorted(tokens, key=lambda t: (-counts[t], t)))
    cycled = ordered[torch.arange(truth.shape[1]) % len(ordered)].expand_as(truth)
    return {"random from bag": random, "bag by public frequency": [torch.where(keep, truth, cycled)]}


def bag_baselines(truth: torch.Tensor, bag: set[int] | list[int], decode, *, pad_id: int | None = None,
                  ignore_ids: tuple[int, ...] = (), public: list[list[int]] | None = None, draws: int = 5,
                  seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """ROUGE-1/2 per true record ``(B, L)`` of each ``bag_guesses`` guess (the mean over the random draws)."""
    out: dict[str, dict[str, list[float]]] = {}
    guesses = bag_guesses(truth, bag, pad_id=pad_id, ignore_ids=ignore_ids, public=public, draws=draws, seed=seed)
    for name, batches in guesses.items():
        scored = [score_text(g, truth, decode, pad_id=pad_id, ignore_ids=ignore_ids, match=False) for g in batches]
        out[name] = {k: [sum(getattr(s, k)[i] for s in scored) / len(scored) for i in range(len(truth))]
                     for k in ("rouge1", "rouge2")}
    return out


def attacker_bag(obs: Observation, tokenizer: Tokenizer, *, seed: int = 0,
                 public_records: int = 500) -> tuple[set[int], list[list[int]]]:
    """What the text attacker knows without ordering anything: the token bag the update leaks (``token_bag``; the
    whole vocabulary where the bag cannot be read, a weaker guess) and public text's token sequences (records
    generated under another seed: the same kind of text, none of the private records; none when
    ``public_records`` is 0, e.g. for a tokenizer that cannot encode)."""
    try:
        bag = token_bag(obs)
    except GradleakError:
        bag = set(range(tokenizer.vocab_size))
    public = [tokenizer.encode(r.text) for r in private_records(public_records, seed=PUBLIC_SEED + seed)] \
        if public_records else []
    return bag, public


def text_guesses(obs: Observation, truth: torch.Tensor, tokenizer: Tokenizer, *,
                 seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """``bag_guesses`` from ``attacker_bag``: token ids shaped like ``truth``."""
    bag, public = attacker_bag(obs, tokenizer, seed=seed)
    return bag_guesses(truth, bag, pad_id=tokenizer.pad_id, ignore_ids=(tokenizer.eos_id,), public=public, seed=seed)


def text_baselines(obs: Observation, truth: torch.Tensor, tokenizer: Tokenizer, *, seed: int = 0,
                   public_text: bool = True) -> dict[str, dict[str, list[float]]]:
    """``bag_baselines`` from ``attacker_bag``: each guess's ROUGE-1/2 per true record (``public_text=False``: the
    tokenizer cannot encode, so the bag's order falls back to token ids)."""
    bag, public = attacker_bag(obs, tokenizer, seed=seed, public_records=500 if public_text else 0)
    return bag_baselines(truth, bag, tokenizer.decode, pad_id=tokenizer.pad_id, ignore_ids=(tokenizer.eos_id,),
                         public=public, seed=seed)
