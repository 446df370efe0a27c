"""The realistic evaluation protocol (issue 21): attacks where users train, every figure beside what a guess gets.

    .venv/bin/python benchmarks/bench_realistic.py --help
    .venv/bin/python benchmarks/bench_realistic.py --quick          # the README table (photos, convnet width 64, 32x32)
    .venv/bin/python benchmarks/bench_realistic.py --datasets photos faces --sizes 32 64 --batches 1 8 32 \\
        --stages init epoch trained --protocols fedsgd fedavg        # the whole grid (hours on 2 CPU cores)

Each row is one victim setting, attacked on ``--samples`` private batches (seeds ``seed .. seed+samples-1``):
- **stage**: ``init`` (the server's model at initialisation), ``epoch`` (trained about one epoch, batches of 32, on
  the images that share nothing with the row's private batches), ``trained`` (``--trained-steps`` steps; the
  accuracy it reached on those images is printed). One model per row; pretraining is cached
  (``training.pretrained``).
- **batch** 1, 8, 32; **protocol** ``fedsgd`` (one gradient) or ``fedavg`` (``--local-epochs`` epochs of
  ``--local-batches`` mini-batches of the private batch, SGD ``--local-lr``: the weight delta); BatchNorm stays in
  train mode (``model_mode=train``) where the model has it (ResNet-18).
- **attack**: Inverting Gradients (``inverting``, Geiping et al. 2020) on FedSGD, its unrolled variant (``fedavg``)
  on FedAvg, as published (no BN prior: ``bn=0``); with ``--attacks dip``, the deep image prior (Ulyanov et al.
  2018) beside it on the same batches, stopped at the wall time Inverting Gradients took on each; with
  ``--attacks inverting+bn`` (``fedavg+bn`` on FedAvg), the same attack, same iterations, with the BN-statistics
  prior whose reference is the client's own batch statistics, read off the BatchNorm buffer change its update
  carries (``attacks.bn_statistics``); threat model: honest-but-curious server (it only reads the update it
  receives).
- **buffers** (``--share-buffers``, row label ``+buffers``): the client sends its state dict, so its update carries
  the change of its BatchNorm running statistics (``client_step(share_buffers=True)``). For ``fedsgd`` that is a
  client that takes one local step and sends its state dict (Flower's PyTorch examples; its weight delta is
  ``-lr`` times the gradient, which cosine matching cannot tell apart); FedAvg clients share them by default.
Columns: the share of samples **leaked** (the reconstruction beats the best of the attacker's guesses (mid-gray,
the public mean image, the best image of a disjoint public set) by 3 dB PSNR and 0.1 SSIM), **top-1
re-identification** in a line-up of the true sample and up to 99 public images (pixels, and the features of a
LeNet trained on the public images), mean PSNR/SSIM beside the best guess's, and wall time per batch.
A row whose leaked share is 0 is "no leak", whatever its PSNR. Same seed, same numbers (apart from times).

Issue 25's must-show, measured on this 2-core machine shared by six jobs (5-16 s per iteration: times are loaded
times; a row split over processes with ``--only`` is the same model and draws), 40 iterations per attack,
``--share-buffers --attacks inverting+bn --threads 1``:

| model | stage | batch | attack | leaked | re-id top-1 px / feat | PSNR vs best guess | SSIM vs best guess |
|---|---|---|---|---|---|---|---|
| convnet (ConvNet-64) | trained (0.92) | 1 (3 photos) | inverting | no leak (0/3) | 0/3 / 0/3 | 8.21 vs 16.74 dB | 0.021 vs 0.312 |
| convnet (ConvNet-64) | trained (0.92) | 1 (3 photos) | inverting+bn | no leak (0/3) | 0/3 / 0/3 | 8.86 vs 16.74 dB | 0.012 vs 0.312 |
| convnet (ConvNet-64) | init | 8 (1 batch, 20 it) | inverting | no leak (0/8) | 0/8 / 0/8 | 10.05 vs 13.77 dB | 0.022 vs 0.267 |
| convnet (ConvNet-64) | init | 8 (1 batch, 20 it) | inverting+bn | no leak (0/8) | 1/8 / 2/8 | 10.85 vs 13.77 dB | 0.033 vs 0.267 |
| resnet18 | init | 1 (5 photos) | inverting | no leak (0/5) | 0/5 / 0/5 | 8.80 vs 15.23 dB | 0.015 vs 0.339 |
| resnet18 | init | 1 (5 photos) | inverting+bn | no leak (0/5) | 0/5 / 1/5 | 9.87 vs 15.23 dB | 0.022 vs 0.339 |
| resnet18 | init | 8 (1 batch, 20 it) | inverting | no leak (0/8) | 0/8 / 1/8 | 9.83 vs 13.77 dB | 0.021 vs 0.267 |
| resnet18 | init | 8 (1 batch, 20 it) | inverting+bn | no leak (0/8) | 1/8 / 2/8 | 10.13 vs 13.77 dB | 0.025 vs 0.267 |

(``--models convnet --stages trained --batches 1 --samples 3 --only {0,1,2} --iterations 40``; ResNet-18:
``--models resnet18 --stages init --batches 1 --samples 3 --only {0,1,2}`` and ``--samples 5 --only {3,4}``
(at init the model and each seed's draw do not depend on ``--samples``), ``--batches 8 --samples 1 --iterations
20``, and the same at batch 8 for ``--models convnet --stages init``.) Seconds per batch swung with the load
(ConvNet-64 b1: 294-298 s published, 526-542 s with the prior, run one after the other; ResNet-18 b1: 200-632 s
vs 147-204 s), so they say nothing of the prior's cost. 40 iterations is far below the attack's budget (the
reconstructions are still mostly noise; the grids are ``benchmarks/results/realistic_photos32_*+buffers.png``);
the carried statistics add 0.3-1.1 dB at equal iterations (and one or two more top-1 re-identifications of 8 at
batch 8) and do not make a leak. The trained ResNet-18 rows and 5 held-out photos on the trained ConvNet-64 did
not fit: pretraining a model for a new held-out pool (300 steps) did not finish in 20 minutes at this load, so
the ConvNet-64 row uses the cached pool of 3 photos.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.deep_prior import DeepImagePrior
from gradleak.baselines import ImageGuesses
from gradleak.data import load_dataset
from gradleak.metrics import score
from gradleak.model_spec import ModelSpec
from gradleak.observation import LocalTraining
from gradleak.reidentification import classifier_features
from gradleak.report.grid import save_grid
from gradleak.training import accuracy, pretrained
from gradleak.victim import normalize, simulate

PRETRAIN_BATCH = 32


def stage_steps(stage: str, public_size: int, trained_steps: int) -> int:
    """Pretraining steps of a stage: none, one pass over the public images in batches of 32, or ``trained_steps``."""
    return {"init": 0, "epoch": math.ceil(public_size / PRETRAIN_BATCH), "trained": trained_steps}[stage]


def feature_model(dataset: str, size: int, steps: int, seed: int):
    """A LeNet trained on the whole dataset but the first private batch's images: the re-identification feature
    space (no downloaded weights). Cached like every pretraining."""
    ds = load_dataset(dataset, size=size)
    c = ds.input_shape[0]
    spec = ModelSpec("lenet", {"in_channels": c, "num_classes": ds.num_classes, "image_size": size})
    model = spec.build()
    model.load_state_dict(pretrained(spec, ds, list(range(len(ds))), steps=steps, seed=seed))
    return classifier_features(model, lambda x: normalize(x, ds.mean, ds.std))


def victims(args: argparse.Namespace, dataset: str, size: int, model: str, stage: str, batch: int, protocol: str):
    """The ``--samples`` private batches of a row (drawn by seed as ``make_victim`` draws them) and each one's
    observed update, from ONE model per row: initialised under ``--seed`` and, past ``init``, pretrained on the
    images that share nothing with any of the row's batches (``ImageDataset.disjoint_from``; cached), so that the
    stage costs one pretraining, not one per batch. Returns [(indices, observation, truth)] and the accuracy the
    model reached on its pretraining images (``None`` at ``init``)."""
    ds = load_dataset(dataset, size=size)
    c = ds.input_shape[0]
    spec = ModelSpec(model, {"in_channels": c, "num_classes": ds.num_classes, "image_size": size,
                             **({"width": args.width} if model == "convnet" else {})})
    draws = [torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed + s))[:batch].tolist()
             for s in range(args.samples)]
    pool = ds.disjoint_from(sorted({i for d in draws for i in d}))
    torch.manual_seed(args.seed)
    net = spec.build()
    steps = stage_steps(stage, len(pool), args.trained_steps)
    acc = None
    if steps:
        net.load_state_dict(pretrained(spec, ds, pool, steps=steps, seed=args.seed, device=args.device))
        acc = accuracy(net, ds, pool)
    local = None
    if protocol == "fedavg":
        local = LocalTraining(args.local_epochs * args.local_batches, args.local_lr, max(1, batch // args.local_batches))
    out = []
    for indices in draws:
        x, y = ds.batch(indices)
        obs, truth = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, protocol=protocol,
                              local_training=local, model=copy.deepcopy(net), model_mode="train",
                              device=args.device, info={"dataset": ds.name, "indices": indices},
                              share_buffers=args.share_buffers)
        out.append((indices, obs, truth))
    return out, acc


def tally(row: dict, scores, recon, elapsed: float, time_key: str = "times") -> None:
    """Add one private batch's scores to a row's running figures (the keys ``markdown`` and the other benchmarks'
    row printers read): time, iterations, leaked verdicts, top-1 re-identifications, PSNR and SSIM beside the
    best guess's."""
    row[time_key].append(elapsed)
    row["iterations"].append(recon.iterations)
    row["leaked"] += scores.leaked
    row["reid_px"] += [r == 1 for r in scores.reidentification["pixels"].ranks]
    row["reid_ft"] += [r == 1 for r in scores.reidentification["features"].ranks]
    row["psnr"] += scores.psnr
    row["ssim"] += scores.ssim
    row["best_p"] += scores.baselines.best_psnr
    row["best_s"] += scores.baselines.best_ssim


def run_row(args: argparse.Namespace, dataset: str, size: int, model: str, stage: str, batch: int,
            protocol: str) -> list[dict]:
    """One victim setting, every attack of ``--attacks`` on the same private batches: Inverting Gradients (or its
    unrolled FedAvg variant) first, then the others each limited to the wall time it took on that batch."""
    reference = "inverting" if protocol == "fedsgd" else "fedavg"
    other = {"inverting": "fedavg", "fedavg": "inverting"}  # each attack's variant on the other protocol
    asked = [a if a.removesuffix("+bn") != other[reference] else reference + a.removeprefix(other[reference])
             for a in args.attacks]
    names = [reference] + [a for a in asked if a != reference]
    ds = load_dataset(dataset, size=size)
    embed = feature_model(dataset, size, args.feature_steps, args.seed)
    found = {a: {k: [] for k in ("leaked", "reid_px", "reid_ft", "psnr", "ssim", "best_p", "best_s", "times",
                                 "iterations")} for a in names}
    cases, acc = victims(args, dataset, size, model, stage, batch, protocol)
    lineup = 0
    grid: dict[str, list[torch.Tensor]] = {"truth": [], **{a: [] for a in names}}
    for s, (indices, obs, truth) in enumerate(cases):
        if args.only is not None and s not in args.only:
            continue
        public = ds.images[ds.disjoint_from(indices)]
        budget = None
        for name in names:
            start = time.perf_counter()
            if name == "dip":
                # not registered by name yet (the attack contract's tables list every registered attack)
                attack = DeepImagePrior(iterations=10**6 if budget else args.iterations, time_limit_s=budget)
            elif name.endswith("+bn"):  # the BN prior on the client's carried statistics, at its default weight
                attack = ATTACKS.build(name.removesuffix("+bn"), iterations=args.iterations, bn=None)
            else:  # as published: no BN prior, whatever the update carries
                published = {"bn": 0.0} if name in ("inverting", "fedavg") else {}
                attack = ATTACKS.build(name, iterations=args.iterations, **published)
            recon = attack.reconstruct(obs, device=args.device, seed=args.seed + s)
            elapsed = time.perf_counter() - start
            budget = budget or elapsed
            scores = score(recon.inputs, recon.labels, truth, guesses=ImageGuesses.of(obs.inputs, public, seed=s),
                           embed=embed)
            grid[name].append(recon.inputs.detach().cpu()[scores.assignment])
            tally(found[name], scores, recon, elapsed)
            lineup = scores.reidentification["pixels"].lineup
            print(f"  sample {s} {name}: leaked {sum(scores.leaked)}/{len(scores.leaked)}, PSNR "
                  f"{sum(scores.psnr) / len(scores.psnr):.2f} vs best guess "
                  f"{sum(scores.baselines.best_psnr) / len(scores.psnr):.2f} dB, SSIM "
                  f"{sum(scores.ssim) / len(scores.ssim):.3f} vs "
                  f"{sum(scores.baselines.best_ssim) / len(scores.ssim):.3f}, "
                  f"re-id top-1 px {sum(r == 1 for r in scores.reidentification['pixels'].ranks)}/{len(scores.leaked)} "
                  f"feat {sum(r == 1 for r in scores.reidentification['features'].ranks)}/{len(scores.leaked)}, "
                  f"{elapsed:.0f} s", flush=True)
        grid["truth"].append(truth.inputs)
    if args.grid:
        shared = ("+buffers" if args.share_buffers else "") + (
            "_samples" + "-".join(map(str, args.only)) if args.only is not None else "")
        path = f"{args.grid}/realistic_{dataset}{size}_{model}_{stage}_b{batch}_{protocol}{shared}.png"
        save_grid([torch.cat(v) for v in grid.values()], list(grid), path)
        print(f"grid: {path}", flush=True)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return [{"dataset": dataset, "size": size, "model": model, "stage": stage, "train_acc": acc, "batch": batch,
             "protocol": protocol + ("+buffers" if args.share_buffers else ""),
             "attack": f"{a} ({mean(f['iterations']):.0f} it)", "leaked": mean(f["leaked"]),
             "reid_pixels": mean(f["reid_px"]), "reid_features": mean(f["reid_ft"]), "lineup": lineup,
             "psnr": mean(f["psnr"]), "best_guess_psnr": mean(f["best_p"]), "ssim": mean(f["ssim"]),
             "best_guess_ssim": mean(f["best_s"]), "seconds": mean(f["times"]), "samples": len(f["psnr"]),
             "leaked_samples": int(sum(f["leaked"]))} for a, f in found.items()]


def markdown(rows: list[dict]) -> str:
    head = ("| data | model | stage (train acc) | batch | protocol | attack | leaked | re-id top-1 px / feat "
            "(chance) | PSNR vs best guess | SSIM vs best guess | s / batch |")
    lines = [head, "|---" * 11 + "|"]
    for r in rows:
        acc = "" if r["train_acc"] is None else f" ({r['train_acc']:.2f})"
        count = f"{r['leaked_samples']}/{r['samples']}" if "leaked_samples" in r else ""
        verdict = f"{r['leaked']:.0%} ({count})" if r["leaked"] > 0 else f"0% (no leak) ({count})"
        lines.append(
            f"| {r['dataset']} {r['size']}px | {r['model']} | {r['stage']}{acc} | {r['batch']} | {r['protocol']} | "
            f"{r['attack']} | {verdict} | {r['reid_pixels']:.0%} / {r['reid_features']:.0%} (1/{r['lineup']}) | "
            f"{r['psnr']:.2f} vs {r['best_guess_psnr']:.2f} dB | {r['ssim']:.3f} vs {r['best_guess_ssim']:.3f} | "
            f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the README grid: photos 32px, convnet (width 64), init and trained, "
                   "batch 1 and 8, fedsgd, 2 samples, 200 iterations (about an hour on 2 loaded cores)")
    p.add_argument("--datasets", nargs="+", default=["photos", "faces"])
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--models", nargs="+", default=["convnet", "resnet18"])
    p.add_argument("--stages", nargs="+", default=["init", "epoch", "trained"], choices=["init", "epoch", "trained"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--protocols", nargs="+", default=["fedsgd", "fedavg"], choices=["fedsgd", "fedavg"])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--samples", type=int, default=3, help="private batches per row (seeds seed..seed+samples-1)")
    p.add_argument("--only", nargs="+", type=int, default=None, help="attack only these of the row's samples "
                   "(0-based; the model and the draws stay those of all --samples): one row split over processes")
    p.add_argument("--trained-steps", type=int, default=300, help="pretraining steps of the 'trained' stage")
    p.add_argument("--feature-steps", type=int, default=300, help="training steps of the re-identification LeNet")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--local-batches", type=int, default=2, help="FedAvg mini-batches per local epoch")
    p.add_argument("--local-lr", type=float, default=0.05)
    p.add_argument("--width", type=int, default=64, help="convnet width (64: the paper's ConvNet-64, Geiping et al. 2020)")
    p.add_argument("--attacks", nargs="+", default=["inverting"], help="beside Inverting Gradients (fedavg on "
                   "FedAvg), each at its wall time per batch: 'dip' (the deep image prior, Ulyanov et al. 2018)")
    p.add_argument("--share-buffers", action=argparse.BooleanOptionalAction, default=None,
                   help="the client's update carries its BatchNorm running-statistics change (default: the "
                   "protocol's: yes for fedavg, no for fedsgd)")
    p.add_argument("--grid", default=None, help="a folder for one PNG per row: the private images, then each "
                   "attack's reconstructions matched to them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.quick:
        args.datasets, args.sizes, args.models, args.stages = ["photos"], [32], ["convnet"], ["init", "trained"]
        args.batches, args.protocols, args.iterations, args.samples = [1, 8], ["fedsgd"], 200, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for dataset in args.datasets:
        for size in args.sizes:
            for model in args.models:
                for stage in args.stages:
                    for batch in args.batches:
                        for protocol in args.protocols:
                            got = run_row(args, dataset, size, model, stage, batch, protocol)
                            rows += got
                            print("\n".join(markdown(got).splitlines()[2:]), flush=True)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
