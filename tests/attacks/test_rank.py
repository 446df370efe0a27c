"""The shared rank decision: a cut at the gap above the gradient's rounding noise, ambiguity said, not hidden."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.rank import (MIN_GAP, check_rtol, decide_rank, largest_gap, noise_floor, record, spectrum,
                                   surface)
from gradleak.errors import ConfigError

pytestmark = pytest.mark.numerics  # rank decisions: .ci/run runs these on two CPU paths


def _low_rank(rank: int, shape: tuple[int, int], smallest: float, seed: int = 0) -> torch.Tensor:
    """A float64 matrix of exact ``rank`` with singular values from 1 down to ``smallest``."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(shape[0], rank, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], rank, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, torch.log10(torch.tensor(smallest)).item(), rank, dtype=torch.float64)
    return (u * s) @ v.T


@pytest.mark.parametrize("shape", [(64, 64), (256, 768)])
def test_float32_rounding_stays_under_the_floor_and_the_rank_is_clear(shape: tuple[int, int]) -> None:
    """Storing a rank-10 matrix in float32 fills the other directions with rounding noise; the estimated floor
    lies above that noise (measured: the 11th value at 0.51 and 0.68 of the floor, both CPU paths), the true directions
    (down to 1e-5) far above it, so the cut is the true rank, clear."""
    g = _low_rank(10, shape, 1e-5).float()
    _, s, floor = spectrum(g)
    assert float(s[10] / s[0]) < floor < 1e-5
    decision = decide_rank(s, floor)
    assert decision.rank == 10 and not decision.ambiguous and decision.gap > 1e2 and decision.rule == "gap"
    assert decision.details()["ambiguous"] is False


def test_a_spectrum_that_decays_through_the_floor_is_flagged_ambiguous_with_candidates() -> None:
    """The bert-tiny situation: true directions decay smoothly (ratio 1.7 per step) into the float32 noise, so no
    cut has a gap; the rank is the count above the floor, flagged, with the cuts around the floor as
    candidates, and ``surface`` says so."""
    g = _low_rank(40, (64, 64), 1e-9).float()
    _, s, floor = spectrum(g)
    decision = decide_rank(s, floor)
    above = int((s > floor * s[0]).sum())
    assert decision.ambiguous and decision.gap < MIN_GAP and decision.rule == "floor"
    assert decision.rank == above and above in decision.candidates and len(decision.candidates) >= 3
    details: dict = {}
    record(details, "layer1", decision)
    with pytest.warns(RuntimeWarning, match="ambiguous rank: layer1"):
        notes = surface(details, "test")
    assert details["ambiguous_rank"] == notes and len(notes) == 1
    assert details["rank_decision"]["layer1"]["candidates"] == list(decision.candidates)


def test_bounds_and_overrides() -> None:
    s = torch.tensor([1.0, 0.5, 1e-3, 1e-9, 1e-10], dtype=torch.float64)
    assert decide_rank(s, 1e-8).rank == 3
    assert decide_rank(s, 1e-8, most=2).rank == 2
    override = decide_rank(s, 1e-8, rtol=1e-2)
    assert override.rank == 2 and override.rule == "rtol" and override.gap == pytest.approx(500.0)
    assert largest_gap(s, least=1, most=4).rank == 3
    assert decide_rank(torch.zeros(3, dtype=torch.float64), 0.0).rank == 0
    assert noise_floor(s, (5, 5), torch.float64) < noise_floor(s, (5, 5), torch.float32)
    for bad in (-1, 0, 1.0, 2.0, "1e-8", float("nan")):
        with pytest.raises(ConfigError, match="rtol must be a number in"):
            check_rtol(bad, "dager")  # type: ignore[arg-type]
    check_rtol(None, "dager")
    with pytest.raises(ConfigError, match="rtol"):
        ATTACKS.build("dager", rtol=-1)
