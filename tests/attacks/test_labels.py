"""Label inference: iDLG's rule, Yin et al.'s column minimum, and label counting, on real untrained models."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks.labels import (
    LABEL_RULES,
    infer_labels,
    label_count_accuracy,
    label_existence_accuracy,
    round_counts,
)
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim


def _victim(**kw: object):
    base: dict[str, object] = {"dataset": "digits", "image_size": 16, "model": "mlp", "model_kwargs": {"hidden": (64,)}}
    base.update(kw)
    return make_victim(ExperimentConfig(**base))  # type: ignore[arg-type]


def test_registered_by_name() -> None:
    assert {"idlg", "yin", "count"} <= set(LABEL_RULES.names())
    with pytest.raises(ConfigError, match="unknown label rule"):
        infer_labels(_victim(indices=(0,))[0], "nope")


def test_idlg_rule_single_sample_and_refuses_batches() -> None:
    for index in (0, 11, 25):
        obs, truth = _victim(indices=(index,), model="lenet", model_kwargs={})
        assert infer_labels(obs, "idlg").tolist() == truth.labels.tolist()
    obs, _ = _victim(batch_size=4)
    with pytest.raises(ConfigError, match="batch size 1"):
        infer_labels(obs, "idlg")


def test_yin_rule_recovers_distinct_labels() -> None:
    # one image of each of 6 different digits
    obs, truth = _victim(indices=(0, 1, 2, 3, 4, 5))
    assert sorted(infer_labels(obs, "yin").tolist()) == sorted(truth.labels.tolist())


@pytest.mark.parametrize("model,kwargs", [("mlp", {"hidden": (64,)}), ("lenet", {"uniform_init": False})])
def test_count_rule_recovers_repeated_labels(model: str, kwargs: dict) -> None:
    for seed in range(3):
        obs, truth = _victim(batch_size=16, model=model, model_kwargs=kwargs, seed=seed)
        assert torch.bincount(truth.labels).max() > 1  # repeats are present: the rule must count them
        predicted = infer_labels(obs, "count")
        assert label_count_accuracy(predicted, truth.labels) == 1.0
        assert label_existence_accuracy(predicted, truth.labels) == 1.0


def test_count_beats_column_minimum_with_repeats() -> None:
    obs, truth = _victim(batch_size=16, seed=1)
    assert label_count_accuracy(infer_labels(obs, "yin"), truth.labels) < label_count_accuracy(
        infer_labels(obs, "count"), truth.labels
    )


def test_scores_on_known_multisets() -> None:
    truth = torch.tensor([1, 1, 2, 3])
    assert label_count_accuracy(torch.tensor([1, 2, 3, 1]), truth) == 1.0
    assert label_count_accuracy(torch.tensor([1, 2, 2, 3]), truth) == 0.75
    assert label_existence_accuracy(torch.tensor([1, 2, 2, 3]), truth) == 1.0
    assert label_existence_accuracy(torch.tensor([1, 2, 4, 4]), truth) == 0.5  # {1,2} of {1,2,3,4}


def test_round_counts_sums_and_is_non_negative() -> None:
    counts = round_counts(torch.tensor([2.6, -0.3, 1.2, 0.4]), 4)
    assert counts.tolist() == [3, 0, 1, 0]
    assert int(round_counts(torch.rand(10) * 3, 7).sum()) == 7
