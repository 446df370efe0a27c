"""SPEAR exact batch recovery (Dimitrov et al. 2024) on an MLP with a ReLU first layer, over bundled photos.

The search is the paper's sampling, then ours: a Cocktail Party separation of what is not yet found guides
reweighted-l1 to the exact directions (see gradleak.attacks.spear). For each batch size, prints the share of samples recovered at >= 60 dB PSNR, the label accuracy, the wall time
and the width of the ReLU layer, beside the batch sizes the SPEAR paper reports. Same seed, same numbers.

Paper figures (Dimitrov et al., "SPEAR: Exact Gradient Inversion of Batches in Federated Learning",
NeurIPS 2024, arXiv:2403.03945, abstract): exact recovery of ImageNet batches up to b ~ 25 with a parallel GPU
implementation, running time exponential in b. The follow-up SPEAR++ (Bakarsky et al. 2025, arXiv:2510.24200,
abstract) reports batches 10x larger via sparsely-used dictionary learning. Per-batch times were not looked up
(the reference code eth-sri/SPEAR could not be fetched here), so none are printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
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
    args = p.parse_args()
    torch.set_num_threads(1)
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
