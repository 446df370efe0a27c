"""LAMP on a randomly initialised BERT classifier (bert-tiny), one bundled record of 60 tokens, known length."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.text.lamp import _moves, language_prior, sequence_nll

pytest.importorskip("transformers")

FAST = {"steps": 60, "init_candidates": 16, "candidates": 16, "swap_every": 20, "prior_steps": 60}


def test_lamp_beats_random_tokens(record_case, text_scores, random_tokens) -> None:
    """ROUGE-1 well above random vocabulary tokens, and more tokens in place than random draws from the batch's
    own bag (which already hold the right unigrams)."""
    case, obs = record_case
    recon = ATTACKS.build("lamp", **FAST).reconstruct(obs, seed=0)
    ours = text_scores(case, recon.inputs)
    vocab = [text_scores(case, ids) for ids in random_tokens(case, 10, bag=False)]
    bag = [text_scores(case, ids) for ids in random_tokens(case, 10, bag=True)]
    vocab_r1 = sum(s["rouge1"] for s in vocab) / len(vocab)
    bag_acc = sum(s["token_accuracy"] for s in bag) / len(bag)
    assert ours["rouge1"] >= vocab_r1 + 0.08, (ours, vocab_r1)
    assert ours["token_accuracy"] >= 2 * bag_acc, (ours, bag_acc)
    assert recon.details["moves_applied"] >= 1  # the discrete step did something


def test_prior_prefers_real_records(record_case) -> None:
    """The locally trained prior (other records, same tokenizer) finds a real record likelier than its shuffle."""
    case, obs = record_case
    prior = language_prior(obs.inputs.tokenizer, obs.inputs.vocab_size, steps=60)
    ids = case.truth.inputs
    mask = (ids != case.tokenizer.pad_id).long()
    n = int(mask.sum()) - 1
    gen = torch.Generator().manual_seed(0)
    shuffled = ids.clone()
    shuffled[0, :n] = ids[0, torch.randperm(n, generator=gen)]
    nll = sequence_nll(prior, torch.stack([ids, shuffled]), mask)
    assert float(nll[0]) < float(nll[1]) - 0.5, nll


def test_moves_permute_only_the_movable_positions() -> None:
    gen = torch.Generator().manual_seed(0)
    orders = _moves(10, 14, 40, gen)
    assert torch.equal(orders[0], torch.arange(14))  # the identity is always a candidate
    for row in orders:
        assert sorted(row[:10].tolist()) == list(range(10)) and row[10:].tolist() == list(range(10, 14))
    assert sum(not torch.equal(r, torch.arange(14)) for r in orders) >= 30
