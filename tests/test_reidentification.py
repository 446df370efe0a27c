"""Re-identification: the truth's rank in a line-up, in pixel and feature space."""

from __future__ import annotations

import pytest
import torch

from gradleak.data import load_dataset
from gradleak.models import build_model
from gradleak.reidentification import classifier_features, rank_in_lineup
from gradleak.victim import normalize


@pytest.fixture(scope="module")
def faces():
    return load_dataset("faces", size=32)


@pytest.mark.parametrize("space", ["pixels", "features"])
def test_the_truth_ranks_first_and_a_guess_ranks_last(faces, space):
    truth, _ = faces.batch([0, 1, 2])
    others = faces.images[10:60]
    embed = None
    if space == "features":
        torch.manual_seed(0)
        model = build_model("lenet", in_channels=1, num_classes=40, image_size=32)
        embed = classifier_features(model, lambda x: normalize(x, faces.mean, faces.std))
    near = (truth + 0.02 * torch.randn_like(truth)).clamp(0, 1)
    found = rank_in_lineup(near, truth, others, embed=embed, space=space)
    assert found.ranks == [1, 1, 1] and found.top1 == 1.0 and found.lineup == 51
    gray = torch.full_like(truth, 0.5)
    guessed = rank_in_lineup(gray, truth, others, embed=embed, space=space)
    # a constant image does not single out its sample: far from first, near chance
    assert guessed.top1 == 0.0
    assert found.chance == pytest.approx(1 / 51)


def test_a_noisy_reconstruction_ranks_by_how_much_is_left():
    ds = load_dataset("faces", size=32)
    truth, _ = ds.batch([5])
    others = ds.images[20:120]
    ranks = [rank_in_lineup((truth + s * torch.randn_like(truth)).clamp(0, 1), truth, others).ranks[0]
             for s in (0.05, 2.0)]
    assert ranks[0] == 1 and ranks[1] > 1
