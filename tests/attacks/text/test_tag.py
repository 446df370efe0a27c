"""TAG on a randomly initialised BERT classifier (bert-tiny), one bundled record of 60 tokens, known length."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.text.embedding_search import candidate_gradients, embed, gradient_distance, text_problem
from gradleak.errors import ConfigError
from gradleak.text.metrics import text_baselines, text_guesses
from gradleak.text.victim import text_victim

pytest.importorskip("transformers")


def test_tag_matches_the_gradient_closer_than_every_bag_guess_but_leaks_no_text(record_case, text_scores) -> None:
    """TAG (60 steps) matches the observed gradient more closely than every guess the leaked token bag gives
    (random draws from the bag, the bag in public-frequency order): replacing TAG's output by a guess fails here.
    It does **not** leak text on this case: its ROUGE-1 stays within the 0.2 margin of the best bag guess
    (measured: 0.175 against 0.185 for random bag draws and 0.286 for the bag in public-frequency order), as the
    README says; making TAG worth running is issue 23."""
    case, obs = record_case
    recon = ATTACKS.build("tag", steps=60).reconstruct(obs, seed=0)
    problem = text_problem(obs)
    with torch.no_grad():
        def dist(ids: torch.Tensor) -> float:
            x = embed(problem, ids)[None]
            return float(gradient_distance(problem, candidate_gradients(problem, x, recon.labels[None]), "l2l1"))
        guesses = text_guesses(obs, case.truth.inputs, case.tokenizer)
        assert dist(recon.inputs) < min(dist(ids) for batches in guesses.values() for ids in batches)
    assert recon.labels.tolist() == case.truth.labels.tolist()  # from the classifier bias, not leaked
    ours = text_scores(case, recon.inputs)
    bag = text_baselines(obs, case.truth.inputs, case.tokenizer)
    print("TAG ROUGE-1", round(ours["rouge1"], 3), "bag guesses", {k: round(v["rouge1"][0], 3) for k, v in bag.items()})


@pytest.mark.numerics  # same seed, same path, twice: exact
def test_tag_is_deterministic_and_keeps_known_positions(record_case) -> None:
    case, obs = record_case
    a = ATTACKS.build("tag", steps=3).reconstruct(obs, seed=5).inputs
    b = ATTACKS.build("tag", steps=3).reconstruct(obs, seed=5).inputs
    assert torch.equal(a, b)
    n = obs.info["lengths"][0]
    assert int(a[0, n - 1]) == case.tokenizer.eos_id
    assert set(a[0, : n - 1].tolist()) <= set(case.truth.inputs.flatten().tolist())  # the bag only


def test_tag_refuses_a_language_model_update() -> None:
    case = text_victim("gpt2-tiny", 1, seed=0)
    with pytest.raises(ConfigError, match="handles classification tasks"):
        ATTACKS.build("tag", steps=1).reconstruct(case.observation)
