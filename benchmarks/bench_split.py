"""Split learning leakage on a bundled dataset, every figure beside what a guess gets (issue 21).

Part 1: a SplitCNN trained for real (60 SGD steps, lr 0.05), cut after block 1, 2 or 3; the white-box inversion
(He et al. 2019) and UnSplit (Erdogan et al. 2022) of held-out images the server saw as smashed data, each beside
the attacker's best guess (mid-gray, the public mean image, the best of the held-out public images, per sample)
and the share of samples leaked (3 dB and 0.1 SSIM over the best guess); the test accuracy beside the majority
class's.
Part 2: each defense at cut 2. The 10-class network (as part 1) with its white-box inversion beside the best
guess; a binary task (one digit vs the rest, Li et al. 2022's setting; 300 SGD steps, lr 0.01) with the norm and
cosine label attacks' AUC (chance 0.5) and the accuracy of the labels they infer at the public prior beside the
majority class. A network that did not learn (accuracy under the majority class plus half its errors) is marked,
and its leakage means nothing for a network a user trains.

    .venv/bin/python benchmarks/bench_split.py                 # seed 0, about 30-60 s on one core
    .venv/bin/python benchmarks/bench_split.py --seeds 0,1     # the README's two seeds
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.data import load_dataset
from gradleak.split import (SplitDefense, SplitRun, cosine_attack_scores, norm_attack_scores, score_inversion,
                            score_label_leakage, train_split, unsplit_inversion, white_box_inversion)

DEFENSES = [SplitDefense(), SplitDefense(smashed_noise=0.1), SplitDefense(smashed_noise=0.3),
            SplitDefense(nopeek=0.1), SplitDefense(nopeek=0.2), SplitDefense(nopeek=0.3),
            SplitDefense(gradient_noise=4.0), SplitDefense(gradient_noise=16.0)]


def _learning(run: SplitRun) -> dict:
    return {"accuracy": run.test_accuracy, "majority": run.majority_accuracy, "learned": run.learned}


def _inversion(run: SplitRun, reconstruction: torch.Tensor) -> dict:
    m = score_inversion(run, reconstruction).means()
    return {k: m[k] for k in ("psnr", "ssim", "best_baseline_psnr", "best_baseline_ssim", "leaked",
                              "reid_top1_pixels")}


def _acc(d: dict) -> str:
    return f"acc {d['accuracy']:.3f} (majority {d['majority']:.3f}{'' if d['learned'] else ', DID NOT LEARN'})"


def _inv(d: dict) -> str:
    return (f"{d['psnr']:.2f} dB / {d['ssim']:.3f} vs guess {d['best_baseline_psnr']:.2f} / "
            f"{d['best_baseline_ssim']:.3f}, leaked {d['leaked']:.2f}, re-id {d['reid_top1_pixels']:.2f}")


def cuts(data, args: argparse.Namespace, seed: int) -> list[dict]:
    rows = []
    for cut in (1, 2, 3):
        run = train_split(data, cut=cut, steps=args.steps, observe=args.observe, seed=seed)
        rows.append({"seed": seed, "cut": cut, "smashed_shape": list(run.observation.smashed.shape[1:]),
                     **_learning(run),
                     "white_box": _inversion(run, white_box_inversion(run.observation, seed=seed)),
                     "unsplit": _inversion(run, unsplit_inversion(run.observation, seed=seed))})
        r = rows[-1]
        print(f"seed {seed} cut {cut}: smashed {r['smashed_shape']}, {_acc(r)} | white box {_inv(r['white_box'])} "
              f"| UnSplit {_inv(r['unsplit'])}", flush=True)
    return rows


def defenses(data, args: argparse.Namespace, seed: int) -> list[dict]:
    rows = []
    for defense in DEFENSES:
        binary = train_split(data, cut=2, steps=args.binary_steps, lr=args.binary_lr, positive_class=args.positive,
                             observe=256, seed=seed, defense=defense)
        returned = binary.observation.returned
        known = int((binary.truth.labels == 1).nonzero()[0])
        labels = {name: score_label_leakage(binary, scores) for name, scores in
                  (("norm", norm_attack_scores(returned)), ("cosine", cosine_attack_scores(returned, known)))}
        multi = train_split(data, cut=2, steps=args.steps, observe=args.observe, seed=seed, defense=defense)
        rows.append({"seed": seed, "defense": defense.name, "binary": _learning(binary),
                     **{f"{k}_attack": {"auc": v.auc, "inferred_accuracy": v.accuracy, "majority": v.majority,
                                        "leaked": v.leaked} for k, v in labels.items()},
                     "multi": _learning(multi),
                     "white_box_cut2": _inversion(multi, white_box_inversion(multi.observation, seed=seed))})
        r = rows[-1]
        print(f"seed {seed} {r['defense']:>17}: binary {_acc(r['binary'])}; "
              + "; ".join(f"{k} AUC {v.auc:.3f} labels {v.accuracy:.3f}{' LEAKED' if v.leaked else ''}"
                          for k, v in labels.items())
              + f" | 10-class {_acc(r['multi'])}; white box {_inv(r['white_box_cut2'])}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", help="bundled dataset (digits, faces, photos) [digits]")
    parser.add_argument("--size", type=int, default=16, help="image side, multiple of 4 [16]")
    parser.add_argument("--steps", type=int, default=60, help="training steps, 10-class task [60]")
    parser.add_argument("--binary-steps", type=int, default=300, help="training steps, binary task [300]")
    parser.add_argument("--binary-lr", type=float, default=0.01, help="learning rate, binary task [0.01]")
    parser.add_argument("--positive", type=int, default=0, help="positive class of the binary task [0]")
    parser.add_argument("--observe", type=int, default=8, help="images inverted per cut [8]")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds [0]")
    parser.add_argument("--json", help="write all figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, size=args.size, channels=1)
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"args": vars(args), "cuts": [r for s in seeds for r in cuts(data, args, s)],
              "defenses": [r for s in seeds for r in defenses(data, args, s)]}
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
