"""SPEAR exact batch recovery (Dimitrov et al. 2024) on an MLP with a ReLU first layer, over bundled photos.

The search is the paper's sampling, then ours: a Cocktail Party separation of what is not yet found guides
reweighted-l1 to the exact directions (see gradleak.attacks.spear). For each batch size, prints the share of samples recovered at >= 60 dB PSNR, the label accuracy, the wall time
and the width of the ReLU layer, beside the batch sizes the SPEAR paper reports. Same seed, same numbers.

Paper figures (Dimitrov et al., "SPEAR: Exact Gradient Inversion of Batches in Federated Learning",
NeurIPS 2024, arXiv:2403.03945, abstract): exact recovery of ImageNet batches up to b ~ 25 with a parallel GPU
implementation, running time exponential in b. The follow-up SPEAR++ (Bakarsky et al. 2025, arXiv:2510.24200,
abstract) reports batches 10x larger via sparsely-used dictionary learning. Per-batch times were not looked up
(the reference code eth-sri/SPEAR could not be fetched here), so none are printed.

``--cnn``: SPEAR on the fully connected layer of a small CNN (conv 3->8, ReLU, pool, conv 8->16, ReLU, pool,
flatten to 256 features, Linear(256, width) + ReLU, classifier). The recovered layer inputs are the features;
prints the share of samples whose features are exact (relative error < 1e-6 against the features the true images
give, computed here, outside the attack), the label accuracy, the mean PSNR of the images feature inversion makes
from them, the PSNR of the dataset's mean image (the blind guess) and the wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.attacks.feature_inversion import layer_input
from gradleak.data import load_dataset
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate

PAPER = "paper: exact up to b~25 (ImageNet, GPU; time exponential in b); SPEAR++: 10x larger b"


def observe(batch: int, size: int, hidden: int, seed: int):
    ds = load_dataset("photos", size=size)
    x, y = ds.batch(list(range(batch)))
    spec = ModelSpec("mlp", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": size,
                             "hidden": (hidden,)})
    torch.manual_seed(seed)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


def small_cnn(num_classes: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, width), nn.ReLU(), nn.Linear(width, num_classes),
    )


def run_cnn(batches: list[int], width: int, seed: int, settings: dict) -> None:
    """SPEAR on the CNN's fully connected layer ("7"), 16x16 photos."""
    ds = load_dataset("photos", size=16)
    print(f"cnn: photos 16x16, conv-relu-pool x2 -> 256 features -> Linear(256, {width}) + ReLU, seed {seed}, "
          f"spear {settings}")
    for b in batches:
        x, y = ds.batch(list(range(b)))
        torch.manual_seed(seed)
        spec = ModelSpec.from_module(small_cnn(ds.num_classes, width))
        obs, truth = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)
        t = time.perf_counter()
        rec = ATTACKS.build("spear", layer="7", **settings).reconstruct(obs, seed=seed)
        wall = time.perf_counter() - t
        model = obs.build_model()
        mean, std = obs.normalization()
        true_f = layer_input(model, model[7], (truth.inputs - mean) / std).double()
        exact = 0
        if "features" in rec.details:
            f = torch.tensor(rec.details["features"], dtype=torch.float64)
            err = torch.cdist(true_f, f)  # each true sample against its nearest recovered features
            near = f[err.argmin(1)]
            exact = int(((near - true_f).norm(dim=1) / true_f.norm(dim=1) < 1e-6).sum())
        s = score(rec.inputs, rec.labels, truth)
        labels = sum(s.label_correct) / b if rec.labels is not None else 0.0
        blind = score(ds.images.mean(0, keepdim=True).expand_as(truth.inputs).clone(), None, truth)
        d = rec.details
        print(f"spear cnn batch {b:3d} width {width}: features exact {100 * exact / b:5.1f}%, labels "
              f"{100 * labels:5.1f}%, inverted images {sum(s.psnr) / b:.2f} dB (blind guess: dataset mean image "
              f"{sum(blind.psnr) / b:.2f} dB), directions {d['directions']}/{d['rank']}, certified "
              f"{sum(d['certified'])}/{b}, {wall:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="*", default=[16, 64])
    p.add_argument("--width-per-sample", type=int, default=64, help="ReLU layer width = this x batch")
    p.add_argument("--width", type=int, default=0, help="fixed ReLU layer width (overrides --width-per-sample)")
    p.add_argument("--trials", type=int, default=20_000, help="the paper's sampled submatrices")
    p.add_argument("--guide-rounds", type=int, default=4, help="rounds of the Cocktail-guided search (ours; 0: off)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of reweighted-l1 starts (ours)")
    p.add_argument("--starts", type=int, default=50, help="random starts per round")
    p.add_argument("--size", type=int, default=16, help="image side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cnn", action="store_true", help="attack the fully connected layer of a small CNN instead")
    p.add_argument("--cnn-width", type=int, default=256, help="units of the CNN's ReLU fully connected layer")
    p.add_argument("--min-zero-share", type=float, default=0.3,
                   help="--cnn: share of live units a candidate must zero (the samples' ReLU patterns overlap there)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.cnn:
        run_cnn(args.batches, args.cnn_width, args.seed,
                {"max_trials": args.trials, "guide_rounds": args.guide_rounds, "irls_rounds": args.rounds,
                 "irls_starts": args.starts, "min_zero_share": args.min_zero_share})
        return
    print(PAPER)
    print(f"settings: trials {args.trials}, guided rounds {args.guide_rounds}, rounds {args.rounds} x {args.starts} starts, width "
          f"{args.width or str(args.width_per_sample) + ' x batch'}, photos {args.size}x{args.size}, seed {args.seed}")
    for b in args.batches:
        width = args.width or args.width_per_sample * b
        obs, truth = observe(b, args.size, width, args.seed)
        t = time.perf_counter()
        rec = ATTACKS.build("spear", max_trials=args.trials, guide_rounds=args.guide_rounds, irls_rounds=args.rounds,
                            irls_starts=args.starts).reconstruct(obs, seed=args.seed)
        wall = time.perf_counter() - t
        s = score(rec.inputs, rec.labels, truth)
        share = sum(v >= 60 for v in s.psnr) / b
        labels = sum(s.label_correct) / b if rec.labels is not None else 0.0
        d = rec.details
        print(f"spear batch {b:3d} width {width:5d}: {100 * share:5.1f}% at >= 60 dB, labels {100 * labels:5.1f}%,"
              f" directions {d['directions']}/{d['rank']}, certified {sum(d['certified'])}/{b}, guided rounds "
              f"{d['guide_rounds']}, {wall:.1f} s")


if __name__ == "__main__":
    main()
