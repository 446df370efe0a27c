"""Scoring and random baselines shared by the text-attack tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gradleak.text.metrics import score_text


@pytest.fixture
def text_scores() -> Callable[..., dict]:
    """Mean ROUGE/exact/secrets of recovered ids against a text case's truth."""

    def scores(case, ids: torch.Tensor) -> dict:
        tok = case.tokenizer
        return score_text(ids, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                          records=case.records).means()

    return scores


@pytest.fixture
def random_tokens() -> Callable[..., list[torch.Tensor]]:
    """Baselines with the true lengths: tokens drawn uniformly from the vocabulary, or from the batch's own bag."""

    def draw(case, draws: int, *, bag: bool) -> list[torch.Tensor]:
        truth, tok = case.truth.inputs, case.tokenizer
        pool = (torch.tensor(sorted(set(truth.flatten().tolist()) - {tok.pad_id, tok.eos_id})) if bag
                else torch.arange(2, tok.vocab_size))
        gen = torch.Generator().manual_seed(123)
        keep = (truth == tok.pad_id) | (truth == tok.eos_id)
        return [torch.where(keep, truth, pool[torch.randint(0, len(pool), truth.shape, generator=gen)])
                for _ in range(draws)]

    return draw


@pytest.fixture(scope="module")
def record_case():
    """One bundled record classified by a random bert-tiny (TAG, LAMP), with its length known to the attacker."""
    from gradleak.text.victim import text_victim

    torch.set_num_threads(1)
    case = text_victim("bert-tiny", 1, seed=0)
    ids = case.truth.inputs
    lengths = (ids != case.tokenizer.pad_id).sum(1).tolist()
    return case, case.observation.with_update(case.observation.update, lengths=lengths)
