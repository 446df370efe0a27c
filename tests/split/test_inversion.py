"""Smashed-data inversion PSNR after blocks 1, 2, 3 (white box and UnSplit) on bundled digits."""

import pytest

from gradleak.metrics import psnr
from gradleak.split import SplitDefense, train_split, unsplit_inversion, white_box_inversion


@pytest.mark.parametrize("cut,white_min,unsplit_min", [(1, 27.0, 19.0), (2, 21.0, 13.0), (3, 17.0, 7.0)])
def test_inversion_per_cut(digits16, cut, white_min, unsplit_min):
    run = train_split(digits16, cut=cut, steps=60, observe=2, seed=0)
    white = float(psnr(white_box_inversion(run.observation), run.truth.inputs).mean())
    unsplit = float(psnr(unsplit_inversion(run.observation), run.truth.inputs).mean())
    blank = float(psnr(run.truth.inputs * 0 + run.truth.inputs.mean(), run.truth.inputs).mean())
    print(f"cut {cut}: white box {white:.2f} dB, UnSplit {unsplit:.2f} dB, flat grey {blank:.2f} dB")
    assert white > white_min and unsplit > unsplit_min
    assert white > unsplit  # knowing the client's weights helps


def test_nopeek_lowers_white_box_psnr(digits16):
    plain = train_split(digits16, cut=2, steps=30, observe=4, seed=0)
    nopeek = train_split(digits16, cut=2, steps=30, observe=4, seed=0, defense=SplitDefense(nopeek=2.0))
    p = float(psnr(white_box_inversion(plain.observation, steps=200), plain.truth.inputs).mean())
    q = float(psnr(white_box_inversion(nopeek.observation, steps=200), nopeek.truth.inputs).mean())
    assert q < p - 3.0
