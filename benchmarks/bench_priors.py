"""Image priors for trained networks (issue 25, item 2) on the realistic protocol: GIAS's generative prior (``gias``,
Jeon et al. 2021) and the deep image prior (``dip``, Ulyanov et al. 2018) beside Inverting Gradients (Geiping et al.
2020), each stopped at the wall time Inverting Gradients took on the same private batch.

    .venv/bin/python benchmarks/bench_priors.py --help
    .venv/bin/python benchmarks/bench_priors.py --stage trained --samples 5 --iterations 200 --threads 1

Victims and scores are ``bench_realistic``'s (one model per row, pretrained on the images disjoint from every
private batch of the row and cached; the same guesses, re-identification line-ups and leak verdict). The generator
of ``gias`` is trained once per row on crops of the same public images (the row's dataset less the source photos of
its private batches, ``exclude``) and cached; that one-time training is printed apart and not counted in the
attack's time, as the victim's pretraining is not. Threat model: honest-but-curious server.

Measured (``--stage trained --samples 3 --iterations 200 --threads 1 --attacks gias``, the paper's ConvNet-64
trained to 0.92, 3 star-field crops, 2 heavily loaded cores; benchmarks/results/priors_photos32_convnet_trained_b1.md):
Inverting Gradients 8.75 dB / SSIM 0.066, gias 14.22 dB / 0.238, best guess 16.74 dB / 0.312: no leak for either;
gias's reconstructions are re-identified top-1 by the features in 2 of 3 (Inverting Gradients 0 of 3, chance 1/91),
and on one photo it beats the best guess's PSNR (18.63 vs 16.98 dB) but not by the 3 dB a leak needs.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_realistic import feature_model, markdown, tally, victims
from gradleak.attacks.deep_prior import DeepImagePrior
from gradleak.attacks.generative_prior import GenerativeImagePrior
from gradleak.attacks.inverting import InvertingGradients
from gradleak.baselines import ImageGuesses
from gradleak.data import load_dataset
from gradleak.metrics import score
from gradleak.report.grid import save_grid

PRIORS = ("gias", "dip")


def private_sources(ds, cases) -> tuple[str, ...]:
    """The classes of every private image of the row: for the photos, their source pictures (left out of the
    generator's public crops, as they are out of the public set of the guesses and the pretraining)."""
    return tuple(sorted({ds.class_names[int(ds.labels[i])] for indices, _, _ in cases for i in indices}))


def run(args: argparse.Namespace) -> list[dict]:
    """One row (dataset, size, model, stage, batch, fedsgd): Inverting Gradients, then each prior at its time."""
    ds = load_dataset(args.dataset, size=args.size)
    embed = feature_model(args.dataset, args.size, args.feature_steps, args.seed)
    cases, acc = victims(args, args.dataset, args.size, args.model, args.stage, args.batch, "fedsgd")
    exclude = private_sources(ds, cases) if ds.label_is_source else ()
    gias = dict(width=args.gen_width, latent_dim=args.latent_dim, train_steps=args.train_steps, public=args.dataset,
                exclude=exclude, latent_share=args.latent_share, lr=args.latent_lr, generator_lr=args.generator_lr,
                init_candidates=args.init_candidates)
    if "gias" in args.attacks:
        start = time.perf_counter()
        GenerativeImagePrior(**gias).generator(cases[0][1])
        print(f"gias generator (public: {args.dataset} less {list(exclude)}): "
              f"{time.perf_counter() - start:.0f} s (0 when cached)", flush=True)
    names = ["inverting", *[a for a in args.attacks if a != "inverting"]]
    keys = ("leaked", "reid_px", "reid_ft", "psnr", "ssim", "best_p", "best_s", "times", "iterations")
    found = {a: {k: [] for k in keys} for a in names}
    grid: dict[str, list[torch.Tensor]] = {"truth": [], **{a: [] for a in names}}
    lineup = 0
    for s, (indices, obs, truth) in enumerate(cases):
        public = ds.images[ds.disjoint_from(indices)]
        budget = None
        for name in names:
            if name == "inverting":
                attack = InvertingGradients(iterations=args.iterations)
            elif name == "gias":
                attack = GenerativeImagePrior(iterations=10**6, time_limit_s=budget, **gias)
            else:
                attack = DeepImagePrior(iterations=10**6, time_limit_s=budget)
            start = time.perf_counter()
            recon = attack.reconstruct(obs, device=args.device, seed=args.seed + s)
            elapsed = time.perf_counter() - start
            budget = budget or elapsed
            sc = score(recon.inputs, recon.labels, truth, guesses=ImageGuesses.of(obs.inputs, public, seed=s),
                       embed=embed)
            grid[name].append(recon.inputs.detach().cpu()[sc.assignment])
            tally(found[name], sc, recon, elapsed)
            lineup = sc.reidentification["pixels"].lineup
            print(f"sample {s} {indices} {name}: {recon.iterations} it, {elapsed:.1f} s, objective "
                  f"{float(recon.restart_objectives.min()):.4f}, PSNR {sc.psnr} vs best guess "
                  f"{sc.baselines.best_psnr}, SSIM {sc.ssim} vs {sc.baselines.best_ssim}, leaked {sc.leaked}",
                  flush=True)
        grid["truth"].append(truth.inputs)
    if args.grid:
        path = f"{args.grid}/priors_{args.dataset}{args.size}_{args.model}_{args.stage}_b{args.batch}.png"
        save_grid([torch.cat(v) for v in grid.values()], list(grid), path)
        print(f"grid: {path}", flush=True)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return [{"dataset": args.dataset, "size": args.size, "model": args.model, "stage": args.stage, "train_acc": acc,
             "batch": args.batch, "protocol": "fedsgd", "attack": f"{a} ({mean(f['iterations']):.0f} it)",
             "leaked": mean(f["leaked"]), "reid_pixels": mean(f["reid_px"]), "reid_features": mean(f["reid_ft"]),
             "lineup": lineup, "psnr": mean(f["psnr"]), "best_guess_psnr": mean(f["best_p"]),
             "ssim": mean(f["ssim"]), "best_guess_ssim": mean(f["best_s"]), "seconds": mean(f["times"]),
             "samples": len(f["psnr"]), "leaked_samples": int(sum(f["leaked"]))} for a, f in found.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="photos")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--model", default="convnet")
    p.add_argument("--stage", default="trained", choices=["init", "epoch", "trained"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--attacks", nargs="+", default=["gias"], choices=PRIORS, help="priors beside Inverting Gradients")
    p.add_argument("--iterations", type=int, default=200, help="Inverting Gradients' iterations (sets the budget)")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--trained-steps", type=int, default=300)
    p.add_argument("--feature-steps", type=int, default=300)
    p.add_argument("--width", type=int, default=64, help="convnet width (64: the paper's ConvNet-64)")
    p.add_argument("--gen-width", type=int, default=GenerativeImagePrior.width)
    p.add_argument("--latent-dim", type=int, default=GenerativeImagePrior.latent_dim)
    p.add_argument("--train-steps", type=int, default=GenerativeImagePrior.train_steps)
    p.add_argument("--latent-share", type=float, default=GenerativeImagePrior.latent_share)
    p.add_argument("--latent-lr", type=float, default=GenerativeImagePrior.lr)
    p.add_argument("--generator-lr", type=float, default=GenerativeImagePrior.generator_lr)
    p.add_argument("--init-candidates", type=int, default=GenerativeImagePrior.init_candidates)
    p.add_argument("--grid", default=None, help="a folder for the PNG: private images, then each attack's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(share_buffers=None)  # bench_realistic's victims: the protocol's own (FedSGD: no buffers)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
