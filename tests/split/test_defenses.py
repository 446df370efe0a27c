import torch

from gradleak.split import (SplitDefense, distance_correlation, equalise_and_noise, score_inversion, train_split,
                            white_box_inversion)


def test_distance_correlation_of_dependent_and_independent_batches():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=gen)
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1.0) < 1e-4
    small = torch.rand(256, 2, generator=gen)
    assert float(distance_correlation(small, torch.rand(256, 2, generator=gen))) < 0.3  # independent
    assert float(distance_correlation(small, small.pow(2) + 0.05 * torch.rand(256, 2, generator=gen))) > 0.9


def test_equalised_gradients_have_one_norm_without_noise():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(10, 4, 3, 3, generator=gen) * torch.arange(1, 11).view(10, 1, 1, 1)
    out = equalise_and_noise(g, 0.0, gen).flatten(1).norm(dim=1)
    torch.testing.assert_close(out, torch.full((10,), float(g.flatten(1).norm(dim=1).mean())))


# Defenses of the smashed data, each beside a positive control of the same size (cut 2, 8 observed digits, 60 SGD
# steps at lr 0.05): the undefended network learns and its white-box inversion leaks.

def _white_box(run):
    return white_box_inversion(run.observation)


def test_smashed_noise_0_1_learns_and_brings_inversion_to_the_best_guess_but_still_reidentifies(
        digits16, assert_learned, inversion_leaks):
    """Measured: undefended 0.793 accuracy, 34.4 dB, 5/8 leaked; noise 0.1: 0.717 accuracy, 20.1 dB against the
    best guess's 20.4 dB, none leaked, yet every reconstruction still picks its digit out of a line-up of 100
    (the truth and 99 public digits, pixel space)."""
    plain = train_split(digits16, cut=2, steps=60, observe=8, seed=0)
    noisy = train_split(digits16, cut=2, steps=60, observe=8, seed=0, defense=SplitDefense(smashed_noise=0.1))
    assert_learned(plain)
    ok, line = inversion_leaks(plain, _white_box(plain), 0.5)
    assert ok, f"positive control: {line}"
    assert_learned(noisy)
    scores = score_inversion(noisy, _white_box(noisy))
    m = scores.means()
    print(f"undefended {line}\nnoise 0.1: accuracy {noisy.test_accuracy:.3f}, PSNR {m['psnr']:.2f} dB; "
          f"{scores.verdict()}")
    assert not any(scores.leaked) and m["psnr"] < m["best_baseline_psnr"] + 3.0
    assert m["reid_top1_pixels"] >= 0.5  # chance about 1 %: the pixels no longer leak, the identity does


def test_nopeek_on_digits_either_learns_and_leaks_or_stops_the_leak_and_does_not_learn(
        digits16, assert_learned, inversion_leaks):
    """NoPeek (Vepakomma et al. 2020) on this SplitCNN: no weight we tried both learns and stops the white-box
    inversion. Measured (seed 0): weight 0.2: 0.720 accuracy, 40.0 dB vs the best guess's 20.4 dB, 5/8 leaked;
    weight 0.3: the client's ReLUs die (smashed data all zero), 0.081 accuracy under the majority class's 0.117,
    8.3-9.6 dB. (Weights 0.25-0.3 at 300 steps and lr 0.01 end between: 0.24-0.76 accuracy, still learned and
    leaking at 0.25, unlearned at 0.3; see the README.)"""
    runs = {w: train_split(digits16, cut=2, steps=60, observe=8, seed=0, defense=SplitDefense(nopeek=w))
            for w in (0.0, 0.2, 0.3)}
    for w in (0.0, 0.2):  # the positive control, and the weight that still learns: both leak
        assert_learned(runs[w])
        ok, line = inversion_leaks(runs[w], _white_box(runs[w]), 0.5)
        print(f"NoPeek {w}: accuracy {runs[w].test_accuracy:.3f}; {line}")
        assert ok, f"NoPeek {w}: {line}"
    strong = runs[0.3]
    scores = score_inversion(strong, _white_box(strong))
    print(f"NoPeek 0.3: accuracy {strong.test_accuracy:.3f} (majority {strong.majority_accuracy:.3f}); "
          f"{scores.verdict()}")
    assert not strong.learned and not any(scores.leaked)
