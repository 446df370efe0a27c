import dataclasses

import pytest
import torch

from gradleak.errors import ConfigError
from gradleak.split import SplitDefense, errors_removed, train_split


def test_returned_gradients_are_the_servers_true_gradients(digits16):
    run = train_split(digits16, cut=2, steps=5, observe=4, seed=1)
    obs = run.observation
    fields = {f.name for f in dataclasses.fields(obs)}
    assert "images" not in fields and "inputs" not in fields
    server = obs.architecture().server(obs.cut)
    server.load_state_dict(obs.server_state)
    z = obs.smashed.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(server(z), run.truth.labels, reduction="sum").backward()
    torch.testing.assert_close(obs.returned, z.grad)
    client = obs.white_box_client()
    torch.testing.assert_close(client(run.truth.inputs), obs.smashed)


def test_training_beats_the_majority_class_and_is_reproducible(digits16):
    a = train_split(digits16, cut=1, steps=40, observe=4, seed=3)
    b = train_split(digits16, cut=1, steps=40, observe=4, seed=3)
    assert a.test_accuracy == b.test_accuracy
    assert a.learned and a.test_accuracy > a.majority_accuracy + 0.4  # majority class: about 0.11
    torch.testing.assert_close(a.observation.smashed, b.observation.smashed)


def test_majority_accuracy_and_public_set_come_from_the_held_out_split(digits16):
    run = train_split(digits16, cut=2, steps=0, observe=4, seed=0)
    test_labels = torch.cat([run.truth.labels, run.public_labels])  # the test split: observed, then public
    assert run.majority_accuracy == pytest.approx(float(test_labels.bincount().max()) / len(test_labels))
    assert len(run.public_images) == len(run.public_labels) == len(test_labels) - 4
    assert not run.learned  # untrained: near the majority class
    assert errors_removed(0.55, 0.1) == pytest.approx(0.5) and errors_removed(0.9, 0.9) == 0.0


def test_hostile_configuration(digits16):
    with pytest.raises(ConfigError, match="block 1, 2 or 3"):
        train_split(digits16, cut=0)
    with pytest.raises(ConfigError, match="steps"):
        train_split(digits16, steps=-1)
    with pytest.raises(ConfigError, match="smashed_noise"):
        SplitDefense(smashed_noise=-1.0)
