"""Shared fixtures: small real victims built from the bundled data."""

from __future__ import annotations

import pytest
import torch

from gradleak.data import load_dataset
from gradleak.observation import GroundTruth, ModelSpec, Observation
from gradleak.victim import simulate


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``): one group a test file, so a module's fixtures are
    built once, unless the file names its own group (the files that start a local Ray share ``"ray"``, so two Ray
    clusters never start at once)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(autouse=True, scope="session")
def _threads_per_worker() -> None:
    """With N pytest-xdist workers on C cores, each worker's torch uses C // N threads instead of C."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory) -> None:
    """Recorded backend choices and cached models go to a folder of this test session, not the user's cache."""
    import os

    os.environ["GRADLEAK_CACHE"] = str(tmp_path_factory.mktemp("gradleak-cache"))


@pytest.fixture(scope="session")
def faces():
    return load_dataset("faces")


@pytest.fixture()
def face_observation(faces) -> tuple[Observation, GroundTruth]:
    """A LeNet (DLG's 100-way head) FedSGD gradient of one real face."""
    x, y = faces.batch([3])
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 100, "image_size": 32})
    return simulate(spec, x, y, num_classes=100, mean=faces.mean, std=faces.std, seed=1)


@pytest.fixture(scope="session")
def assert_matches_google():
    """``check(epsilon, sigma, q, count)``: ``epsilon`` is Google's ``dp-accounting`` RDP figure for ``count``
    Gaussian steps at noise multiplier ``sigma``, Poisson-sampled at ``q`` (``q = 1``: no sampling), within 2 %
    (Opacus's and Google's RDP order grids differ: measured agreement 0-1 %), and not under Google's tighter PLD
    figure. An independent accountant for every epsilon gradleak reports (tests/defenses/test_dp_accounting.py)."""
    import dp_accounting
    from dp_accounting import pld, rdp

    def check(epsilon: float, sigma: float, q: float, count: int, delta: float = 1e-5) -> None:
        step = dp_accounting.GaussianDpEvent(sigma)
        if q < 1:
            step = dp_accounting.PoissonSampledDpEvent(q, step)
        event = dp_accounting.SelfComposedDpEvent(step, count)
        by_rdp, by_pld = rdp.RdpAccountant(), pld.PLDAccountant()
        by_rdp.compose(event)
        by_pld.compose(event)
        expected, floor = float(by_rdp.get_epsilon(delta)), float(by_pld.get_epsilon(delta))
        assert epsilon == pytest.approx(expected, rel=0.02), (epsilon, expected)
        assert epsilon >= floor * 0.999, (epsilon, floor)

    return check


@pytest.fixture(scope="session")
def assert_leaks():
    """``check(inputs, labels, truth, obs, public=None, share=1.0) -> Scores``: the one assertion every image
    attack test makes. The reconstruction is scored beside the attacker's guesses (mid-gray, the public mean image
    and, with ``public``, the best of those images: ``baselines.ImageGuesses``), and at least ``share`` of the
    samples must be *leaked*: beat the best guess by 3 dB PSNR and 0.1 SSIM. A guess submitted in place of the
    attack's output fails it (tests/attacks/test_contract.py checks that for every registered attack)."""
    from gradleak.baselines import ImageGuesses
    from gradleak.metrics import score

    def check(inputs, labels, truth, obs, public=None, share: float = 1.0):
        scores = score(inputs, labels, truth, guesses=ImageGuesses.of(obs.inputs, public))
        leaked = sum(scores.leaked) / len(scores.leaked)
        assert leaked >= share, (f"leaked {leaked:.2f} < {share}: PSNR {[round(p, 2) for p in scores.psnr]} vs best "
                                 f"guess {[round(p, 2) for p in scores.baselines.best_psnr]}, SSIM "
                                 f"{[round(p, 3) for p in scores.ssim]} vs {[round(p, 3) for p in scores.baselines.best_ssim]}")
        return scores

    return check


@pytest.fixture(scope="session")
def assert_text_leaks():
    """``check(scores, obs, truth_ids, tokenizer, share=1.0) -> TextScores``: the one assertion every text attack
    test makes: at least ``share`` of the records beat the best guess from the leaked token bag (random draws, the
    bag by public frequency: ``text.metrics.text_baselines``) by 0.2 ROUGE-1 or 0.2 ROUGE-2."""
    from gradleak.baselines import Margins
    from gradleak.text.metrics import text_baselines

    def check(scores, obs, truth_ids, tokenizer, share: float = 1.0):
        judged = scores.with_baselines(text_baselines(obs, truth_ids, tokenizer), Margins().rouge1)
        leaked = sum(judged.leaked) / len(judged.leaked)
        assert leaked >= share, (f"leaked {leaked:.2f} < {share}: ROUGE-1 {[round(r, 3) for r in judged.rouge1]} "
                                 f"vs the bag's {judged.baseline_means()}")
        return judged

    return check
