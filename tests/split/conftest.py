import pytest
import torch

from gradleak.baselines import Margins
from gradleak.data import load_dataset
from gradleak.split import SplitRun, score_inversion


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", size=16, channels=1)


def _assert_learned(run: SplitRun) -> None:
    """Every leakage measurement first shows the network learned: it removes ``LEARNED_SHARE`` of the errors of
    always answering the test set's majority class."""
    assert run.learned, (f"the network did not learn: test accuracy {run.test_accuracy:.3f} vs majority class "
                         f"{run.majority_accuracy:.3f} ({run.errors_removed:.0%} of its errors removed)")


def _inversion_leaks(run: SplitRun, reconstruction, min_leaked: float) -> tuple[bool, str]:
    """The claim every inversion test makes: mean PSNR beats the best guess's by the PSNR margin (3 dB) and at
    least ``min_leaked`` of the samples are leaked (3 dB and 0.1 SSIM over the best guess, per sample)."""
    scores = score_inversion(run, reconstruction)
    m = scores.means()
    ok = m["psnr"] >= m["best_baseline_psnr"] + Margins().psnr_db and m["leaked"] >= min_leaked
    return ok, f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}; {scores.verdict()}"


@pytest.fixture
def assert_learned():
    return _assert_learned


@pytest.fixture
def inversion_leaks():
    return _inversion_leaks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The split CNN's convolutions are tiny: one torch thread runs them faster than two contending ones (the
    package's tests run on 2 shared cores), so these modules use one and give the count back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
