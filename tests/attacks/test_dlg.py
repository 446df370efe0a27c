"""DLG and iDLG on the shared engine keep their behaviour: near-exact recovery on LeNet."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.metrics import score


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models are overhead-bound: one thread is faster and does not oversubscribe shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_idlg_recovers_a_face_on_lenet() -> None:
    obs, truth = make_victim(ExperimentConfig(dataset="faces", image_size=16, num_classes=100, indices=(0,)))
    recon = ATTACKS.build("idlg", iterations=150).reconstruct(obs, seed=0)
    scores = score(recon.inputs, recon.labels, truth)
    assert scores.label_correct == [True]
    assert scores.means()["psnr"] > 30


def test_dlg_optimises_soft_labels() -> None:
    obs, truth = make_victim(ExperimentConfig(dataset="faces", image_size=16, num_classes=100, indices=(0,)))
    recon = ATTACKS.build("dlg", iterations=150).reconstruct(obs, seed=0)
    assert recon.labels.tolist() == truth.labels.tolist()
    assert score(recon.inputs, recon.labels, truth).means()["psnr"] > 20
