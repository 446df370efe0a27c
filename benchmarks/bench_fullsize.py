"""Full-size images (issue 25, item 5): ResNet-18 in its ImageNet layout at 128x128 and 224x224, batch 1 and 8.

    .venv/bin/python benchmarks/bench_fullsize.py --help
    .venv/bin/python benchmarks/bench_fullsize.py --threads 1 --sizes 224 --batches 1 --iterations 60 \
        --share-buffers --attacks inverting dip inverting+bn                       # a README row (CPU)
    .venv/bin/python benchmarks/bench_fullsize.py --threads 1 --sizes 224 --batches 8 --iterations 20 \
        --share-buffers --attacks inverting                                        # batch 8 (about 5 min)
    .venv/bin/python benchmarks/bench_fullsize.py --device cuda --iterations 4800 --share-buffers \
        --attacks inverting dip inverting+bn                                       # the published budget, on a GPU

The victim is ``resnet18-imagenet`` (He et al. 2016, Table 1: 7x7 stride-2 stem, 3x3 stride-2 max pooling, four
stages of two BasicBlocks; the layout GradInversion, Yin et al. 2021, attacks at 224x224) on the bundled colour
photos, BatchNorm in train mode, one FedSGD gradient, at initialisation (``--stages init``) and after a short
cached pretraining (``trained``: ``--trained-steps`` steps on the photos that share nothing with the private
batches). The private batches, the observed updates, the re-identification features and the pretraining are
``bench_realistic``'s (``victims``, ``feature_model``), so a row here is the realistic protocol at full size.

Attacks, on the same batches: Inverting Gradients as published (``inverting``, Geiping et al. 2020; its defaults
but ``--iterations``, no BN prior), then each other attack of ``--attacks`` stopped at the wall time Inverting
Gradients took on that batch where it has a time limit (``dip``: the deep image prior, Ulyanov et al. 2018), else
run for the same number of iterations (``inverting+bn``: with the BN-statistics prior whose reference is the
client's own batch statistics, read off the BatchNorm buffer change its update carries, Yin et al. 2021,
Hatamizadeh et al. 2022; it needs ``--share-buffers``: the client sends its state dict after one local step, whose
weight delta is ``-lr`` times the gradient). Threat model: an honest-but-curious server that reads the update it
receives.

Columns: the share of images **leaked** (beats the best of the attacker's guesses, mid-gray, the public mean
image and the best image of a disjoint public set, by 3 dB PSNR and 0.1 SSIM), **top-1 re-identification** among
the true image and up to 99 public ones (pixels / features of a LeNet trained on the public photos), PSNR and SSIM
beside the best guess's, seconds per iteration (the attack's wall time over its iterations, its label inference
included: at batch > 1 the counting rule runs 256 probe images through the model, about 12 iterations' worth at
224x224) and per batch. A row whose leaked share is 0 is "no leak", whatever
its PSNR. Grids (truth over each attack, images downscaled to ``--grid-side``) go to
``benchmarks/results/fullsize_*.png``. The last line prints the whole run's wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

from bench_realistic import feature_model, tally, victims
from gradleak.attacks import ATTACKS
from gradleak.attacks.inverting import InvertingGradients
from gradleak.baselines import ImageGuesses
from gradleak.data import load_dataset
from gradleak.metrics import score
from gradleak.report.grid import save_grid

MODEL = "resnet18-imagenet"
DATASET = "photos"


def build_attack(name: str, iterations: int, budget_s: float | None):
    """The reference attack runs ``iterations``; another stops at ``budget_s`` seconds where it has a time limit
    (its iteration cap lifted), else runs the same iterations. ``NAME+bn``: the attack with its BN-statistics prior
    on at its default weight (``bn=None``: the reference the update carries, as ``bench_realistic`` runs it);
    ``inverting`` (and ``dip``) alone run without one (``bn=0``): Inverting Gradients as published."""
    base = name.removesuffix("+bn")
    cls = ATTACKS.get(base)
    fields = {f.name for f in dataclasses.fields(cls)}
    settings: dict = {}
    if isinstance(cls, type) and issubclass(cls, InvertingGradients):  # dip too: its prior is the generator alone
        settings["bn"] = None if name.endswith("+bn") else 0.0
    elif name.endswith("+bn"):
        raise SystemExit(f"--attacks {name}: attack {base!r} has no BN-statistics prior")
    if budget_s is not None and "time_limit_s" in fields:
        return ATTACKS.build(base, iterations=10**6, time_limit_s=budget_s, **settings)
    return ATTACKS.build(base, iterations=iterations, **settings)


def shrink_png(path: Path, colors: int = 128) -> None:
    """Re-save a grid with a palette of ``colors``: a third of the bytes (noise-like reconstructions compress
    badly as true colour), no visible change at this size."""
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def run_row(args: argparse.Namespace, size: int, stage: str, batch: int) -> list[dict]:
    """One victim setting (size, stage, batch), every attack of ``--attacks`` on the same ``--samples`` batches."""
    names = ["inverting"] + [a for a in args.attacks if a != "inverting"]
    ds = load_dataset(DATASET, size=size)
    started = time.perf_counter()
    embed = feature_model(DATASET, size, args.feature_steps, args.seed)
    cases, acc = victims(args, DATASET, size, MODEL, stage, batch, "fedsgd")
    setup_s = time.perf_counter() - started
    keys = ("leaked", "reid_px", "reid_ft", "psnr", "ssim", "best_p", "best_s", "seconds", "iterations")
    found = {a: {k: [] for k in keys} for a in names}
    guess_names: list[str] = []
    grid: dict[str, list[torch.Tensor]] = {"truth": [], **{a: [] for a in names}}
    captions: dict[str, list[str]] = {"truth": [], **{a: [] for a in names}}
    lineup = 0
    for s, (indices, obs, truth) in enumerate(cases):
        public = ds.images[ds.disjoint_from(indices)]
        guesses = ImageGuesses.of(obs.inputs, public, seed=s)
        budget = None
        for name in names:
            attack = build_attack(name, args.iterations, budget)
            start = time.perf_counter()
            recon = attack.reconstruct(obs, device=args.device, seed=args.seed + s)
            elapsed = time.perf_counter() - start
            budget = budget or elapsed
            scores = score(recon.inputs, recon.labels, truth, guesses=guesses, embed=embed)
            tally(found[name], scores, recon, elapsed, time_key="seconds")
            lineup = scores.reidentification["pixels"].lineup
            by_guess = scores.baselines.psnr
            guess_names.append(max(by_guess, key=lambda g: sum(by_guess[g])))
            grid[name].append(recon.inputs.detach().cpu()[scores.assignment])
            captions[name] += [f"{p:.1f} dB" + (" leaked" if k else "") for p, k in zip(scores.psnr, scores.leaked)]
        grid["truth"].append(truth.inputs.detach().cpu())
        captions["truth"] += [f"best guess {p:.1f} dB" for p in scores.baselines.best_psnr]
    if args.grid:
        shared = "_buffers" if args.share_buffers else ""
        path = Path(args.grid) / f"fullsize_{size}_{stage}_b{batch}{shared}.png"
        small = [F.interpolate(torch.cat(v), size=min(size, args.grid_side), mode="bilinear", antialias=True)
                 for v in grid.values()]
        save_grid(small, list(grid), path, captions=list(captions.values()))
        shrink_png(path)
        print(f"grid: {path}", flush=True)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    best_guess = max(set(guess_names), key=guess_names.count)
    update = "state dict (+BN buffers)" if args.share_buffers else "gradient"
    return [{"size": size, "stage": stage, "train_acc": acc, "batch": batch, "update": update, "attack": a,
             "iterations": mean(f["iterations"]), "leaked": mean(f["leaked"]), "leaked_n": int(sum(f["leaked"])),
             "n": len(f["psnr"]), "reid_px": mean(f["reid_px"]), "reid_ft": mean(f["reid_ft"]), "lineup": lineup,
             "psnr": mean(f["psnr"]), "best_p": mean(f["best_p"]), "ssim": mean(f["ssim"]), "best_s": mean(f["best_s"]),
             "best_guess": best_guess, "s_per_it": sum(f["seconds"]) / sum(f["iterations"]),
             "seconds": mean(f["seconds"]), "setup_s": setup_s} for a, f in found.items()]


HEAD = ("| size | stage (train acc) | batch | update | attack (iterations) | leaked | re-id top-1 px / feat (chance) | "
        "PSNR vs best guess | SSIM vs best guess | best guess | s / it | s / batch |")


def markdown(rows: list[dict]) -> str:
    lines = [HEAD, "|---" * 12 + "|"]
    for r in rows:
        acc = "" if r["train_acc"] is None else f" ({r['train_acc']:.2f})"
        verdict = f"{r['leaked']:.0%}" if r["leaked"] > 0 else "0% (no leak)"
        lines.append(
            f"| {r['size']}x{r['size']} | {r['stage']}{acc} | {r['batch']} | {r['update']} | {r['attack']} "
            f"({r['iterations']:.0f}) | "
            f"{verdict} ({r['leaked_n']}/{r['n']}) | {r['reid_px']:.0%} / {r['reid_ft']:.0%} (1/{r['lineup']}) | "
            f"{r['psnr']:.2f} vs {r['best_p']:.2f} dB | {r['ssim']:.3f} vs {r['best_s']:.3f} | {r['best_guess']} | "
            f"{r['s_per_it']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 128])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--stages", nargs="+", default=["init"], choices=["init", "epoch", "trained"])
    p.add_argument("--iterations", type=int, default=50, help="Inverting Gradients' iterations (its step decay "
                   "scales with them); the other attacks get its wall time")
    p.add_argument("--attacks", nargs="+", default=["inverting", "dip"], help="beside Inverting Gradients, each "
                   "at its wall time per batch (registered names, e.g. 'dip')")
    p.add_argument("--samples", type=int, default=1, help="private batches per row (seeds seed..seed+samples-1)")
    p.add_argument("--trained-steps", type=int, default=30, help="pretraining steps (batches of 32) of 'trained'")
    p.add_argument("--feature-steps", type=int, default=300, help="training steps of the re-identification LeNet")
    p.add_argument("--grid", default="benchmarks/results", help="folder for the grids ('' for none)")
    p.add_argument("--grid-side", type=int, default=96, help="side of each image in a grid, in pixels")
    p.add_argument("--share-buffers", action=argparse.BooleanOptionalAction, default=None,
                   help="the client sends its state dict after one local step, so the update carries its BatchNorm "
                   "running-statistics change (needed by 'inverting+bn'; default: the gradient alone)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device here")
    args.width = 64  # read by bench_realistic.victims for the convnet only
    start = time.perf_counter()
    rows = []
    for size in args.sizes:
        for stage in args.stages:
            for batch in args.batches:
                got = run_row(args, size, stage, batch)
                rows += got
                print("\n".join(markdown(got).splitlines()[2:]), f"(setup {got[0]['setup_s']:.0f} s)", flush=True)
    print()
    print(markdown(rows))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f} s (device {args.device}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
