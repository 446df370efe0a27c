"""Split learning leakage on a bundled dataset: smashed-data inversion per cut, label leakage per defense.

Part 1: a SplitCNN trained for real, cut after block 1, 2 or 3; PSNR of the white-box inversion (He et al. 2019)
and of UnSplit (Erdogan et al. 2022) on held-out images the server saw as smashed data.
Part 2: a binary task (one digit vs the rest, Li et al. 2022's setting); AUC of the norm and cosine label-leakage
attacks on the gradients returned across the cut, and what each defense brings them (and the inversion PSNR) to,
at what test accuracy.

    .venv/bin/python benchmarks/bench_split.py            # defaults below, about 1-2 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.data import load_dataset
from gradleak.metrics import psnr
from gradleak.split import (SplitDefense, cosine_attack_scores, leakage_auc, norm_attack_scores, train_split,
                            unsplit_inversion, white_box_inversion)

DEFENSES = [SplitDefense(), SplitDefense(smashed_noise=0.1), SplitDefense(smashed_noise=0.3),
            SplitDefense(nopeek=0.1), SplitDefense(nopeek=0.2), SplitDefense(nopeek=1.0), SplitDefense(gradient_noise=0.5),
            SplitDefense(gradient_noise=1.0)]


def cuts(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset, size=args.size, channels=1)
    rows = []
    for cut in (1, 2, 3):
        run = train_split(data, cut=cut, steps=args.steps, observe=args.observe, seed=args.seed)
        wb = white_box_inversion(run.observation, seed=args.seed)
        us = unsplit_inversion(run.observation, seed=args.seed)
        rows.append({"cut": cut, "smashed_shape": list(run.observation.smashed.shape[1:]),
                     "test_accuracy": run.test_accuracy,
                     "white_box_psnr": float(psnr(wb, run.truth.inputs).mean()),
                     "unsplit_psnr": float(psnr(us, run.truth.inputs).mean())})
        print(f"cut after block {cut}: smashed {rows[-1]['smashed_shape']}, acc {run.test_accuracy:.3f}, "
              f"white-box PSNR {rows[-1]['white_box_psnr']:.2f} dB, UnSplit PSNR {rows[-1]['unsplit_psnr']:.2f} dB",
              flush=True)
    return rows


def defenses(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset, size=args.size, channels=1)
    rows = []
    for defense in DEFENSES:
        binary = train_split(data, cut=2, steps=args.binary_steps, positive_class=args.positive, observe=256,
                             seed=args.seed, defense=defense)
        y = binary.truth.labels
        known = int((y == 1).nonzero()[0])
        returned = binary.observation.returned
        multi = train_split(data, cut=2, steps=args.steps, observe=args.observe, seed=args.seed, defense=defense)
        wb = white_box_inversion(multi.observation, seed=args.seed)
        rows.append({"defense": defense.name, "binary_accuracy": binary.test_accuracy,
                     "norm_auc": leakage_auc(norm_attack_scores(returned), y),
                     "cosine_auc": leakage_auc(cosine_attack_scores(returned, known), y),
                     "accuracy": multi.test_accuracy,
                     "white_box_psnr_cut2": float(psnr(wb, multi.truth.inputs).mean())})
        r = rows[-1]
        print(f"{r['defense']:>18}: binary acc {r['binary_accuracy']:.3f}, norm AUC {r['norm_auc']:.3f}, "
              f"cosine AUC {r['cosine_auc']:.3f} | 10-class acc {r['accuracy']:.3f}, "
              f"white-box PSNR (cut 2) {r['white_box_psnr_cut2']:.2f} dB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", help="bundled dataset (digits, faces, photos) [digits]")
    parser.add_argument("--size", type=int, default=16, help="image side, multiple of 4 [16]")
    parser.add_argument("--steps", type=int, default=60, help="training steps, 10-class task [60]")
    parser.add_argument("--binary-steps", type=int, default=150, help="training steps, binary task [150]")
    parser.add_argument("--positive", type=int, default=0, help="positive class of the binary task [0]")
    parser.add_argument("--observe", type=int, default=8, help="images inverted per cut [8]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write all figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {"args": vars(args), "cuts": cuts(args), "defenses": defenses(args)}
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
