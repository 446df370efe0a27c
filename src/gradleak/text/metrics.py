"""Scores of a text reconstruction: ROUGE-1/2/L (``rouge-score``), exact sequences, token accuracy, secrets.

Recovered sequences are first matched one-to-one to the true ones (Hungarian assignment on token-level
disagreement), since an attack recovers a batch as a set. *Secrets recovered* is what an auditor reports: the share
of the batch's PII spans (names, emails, phone numbers, accounts, ...) that appear verbatim in the decoded
reconstruction matched to their record.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from gradleak.text.corpus import Record


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

    def means(self) -> dict[str, float | None]:
        n = len(self.exact)
        total = sum(self.secrets_total)
        return {"rouge1": sum(self.rouge1) / n, "rouge2": sum(self.rouge2) / n, "rougeL": sum(self.rougeL) / n,
                "exact": sum(self.exact) / n, "token_accuracy": sum(self.token_accuracy) / n,
                "secrets_recovered": None if total == 0 else sum(self.secrets_found) / total}


def _strip(ids: list[int], ignore: set[int]) -> list[int]:
    return [i for i in ids if i not in ignore]


def score_text(recovered: torch.Tensor, truth: torch.Tensor, decode, *, pad_id: int | None = None,
               ignore_ids: tuple[int, ...] = (), records: list[Record] | None = None) -> TextScores:
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
