"""Exact and large-batch recovery: SPEAR (Dimitrov et al. 2024) and the Cocktail Party attack (Kariyappa 2023).

Prints, per batch size, the share of samples recovered at >= 60 dB (SPEAR) or the mean PSNR after matching
(Cocktail Party, beside the mean-image baseline), and wall time. Same seed, same numbers.
The papers' reported figures are not printed yet (not looked up from their reference code in this version).
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


def observe(batch: int, size: int, hidden: int, seed: int):
    ds = load_dataset("photos", size=size)
    x, y = ds.batch(list(range(batch)))
    spec = ModelSpec("mlp", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": size,
                             "hidden": (hidden,)})
    torch.manual_seed(seed)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spear-batches", type=int, nargs="*", default=[8], help="SPEAR batch sizes (paper: 16-100)")
    p.add_argument("--spear-trials", type=int, default=20_000, help="submatrices sampled at most")
    p.add_argument("--cocktail-batches", type=int, nargs="*", default=[64], help="Cocktail Party batch sizes")
    p.add_argument("--size", type=int, default=16, help="image side")
    p.add_argument("--hidden", type=int, default=200, help="width of the ReLU first layer")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    for b in args.spear_batches:
        obs, truth = observe(b, args.size, args.hidden, args.seed)
        t = time.perf_counter()
        rec = ATTACKS.build("spear", max_trials=args.spear_trials).reconstruct(obs, seed=args.seed)
        wall = time.perf_counter() - t
        s = score(rec.inputs, rec.labels, truth)
        share = sum(v >= 60 for v in s.psnr) / b
        print(f"spear    batch {b:4d}: {100 * share:5.1f}% at >= 60 dB, certified {sum(rec.details['certified'])}"
              f"/{b}, {wall:.1f} s")
    for b in args.cocktail_batches:
        obs, truth = observe(b, args.size, max(args.hidden, 2 * b), args.seed)
        t = time.perf_counter()
        rec = ATTACKS.build("cocktail").reconstruct(obs, seed=args.seed)
        wall = time.perf_counter() - t
        psnr = score(rec.inputs, None, truth).psnr
        base = score(truth.inputs.mean(0, keepdim=True).expand_as(truth.inputs).clone(), None, truth).psnr
        print(f"cocktail batch {b:4d}: mean PSNR {sum(psnr) / b:.2f} dB (mean image {sum(base) / b:.2f} dB), "
              f"{wall:.1f} s")


if __name__ == "__main__":
    main()
