"""Labels of a BERT-style classifier's batch from its head's bias gradient."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks.labels import label_multiset_accuracy
from gradleak.attacks.text.labels import sequence_labels
from gradleak.text.victim import text_victim

pytest.importorskip("transformers")


@pytest.mark.parametrize("batch", [1, 4])
def test_sequence_labels_match_the_batch(batch: int) -> None:
    case = text_victim("bert-tiny", batch, seed=0)
    predicted = sequence_labels(case.observation)
    assert predicted.shape == (batch,)
    assert label_multiset_accuracy(predicted, case.truth.labels) == 1.0, (predicted, case.truth.labels)


def test_sequence_labels_refuse_a_language_model_update() -> None:
    from gradleak.errors import ConfigError

    case = text_victim("gpt2-tiny", 1, seed=0)
    with pytest.raises(ConfigError, match="classification"):
        sequence_labels(case.observation)
    assert torch.is_tensor(case.truth.inputs)
