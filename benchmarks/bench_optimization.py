"""Optimisation attacks: fidelity at fixed budgets, seconds per iteration, batched-restart cost (issue 3).

    .venv/bin/python benchmarks/bench_optimization.py                      # everything, the issue's budgets
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_optimization.py --only paths --restart-threads 1
    .venv/bin/python benchmarks/bench_optimization.py --only ig --ig-iterations 500 --ig-images 2

Sections:
- ``ig``: Inverting Gradients (Geiping et al. 2020) on the ConvNet (width 64, random init), 32x32 bundled photos,
  batch 1, labels known; the images are attacked as one batched computation (``reconstruct_many``: with Adam
  each result equals a separate run). Prints PSNR per image and the mean at fixed budgets, and s/iteration.
- ``paths``: seconds per evaluation of every way the engine could compute the objective and its gradient (issue
  22): one restart through the autograd twin or torch.func; ``--restarts`` restarts as a loop of the twin or
  vmapped (the channel-stacked restarts these runs also timed are gone: see ``optimization.evaluation``); LeNet and ConvNet-64, batch 1 and 8, oneDNN and native convolutions,
  interleaved. ``optimization.evaluation`` keeps the paths that pay; its docstring quotes the figures.
- ``fedavg``: batch 4, 5 local steps of batch 2 (lr 0.1) on LeNet; the FedAvg attack (unrolled steps) against
  Inverting Gradients reading the delta as one gradient, same budget and seed.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.optimization import EngineConfig, UpdateMatcher, optimize_many
from gradleak.attacks.optimization.evaluation import conv_backend, flush_denormals
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.metrics import psnr, score

IG_INDICES = (3, 14, 25, 36, 47, 58, 69, 80, 91, 2)  # one crop of each of the ten photos


def bench_ig(iterations: int, images: int, budgets: list[int], model_mode: str) -> None:
    print(f"\n== Inverting Gradients, ConvNet-64 (random init, BatchNorm in {model_mode} mode), photos 32x32, batch 1, "
          f"labels known, {images} images x {iterations} iterations")
    victims = [make_victim(ExperimentConfig(dataset="photos", model="convnet", model_kwargs={"width": 64},
                                            indices=(i,), leak_labels=True, seed=0, model_mode=model_mode))
               for i in IG_INDICES[:images]]
    truths = torch.cat([t.inputs for _, t in victims])
    budgets = sorted({b for b in budgets if b <= iterations} | {iterations})
    at_budget: dict[int, torch.Tensor] = {}
    restarts = 1

    def snapshot(i: int, pixels: torch.Tensor) -> None:
        # pixels before update i, i.e. after i updates; (images * restarts, 1, C, H, W); printed at once so that
        # a run stopped early still reports the budgets it reached
        if i in budgets:
            at_budget[i] = pixels[::restarts, 0].clone()
            values = psnr(at_budget[i], truths)
            print(f"  {i:>6} iterations: mean PSNR {float(values.mean()):6.2f} dB   per image "
                  + " ".join(f"{float(v):.2f}" for v in values)
                  + f"   ({(time.perf_counter() - start) / max(i, 1):.3f} s/iteration so far)", flush=True)

    noise = torch.rand(truths.shape, generator=torch.Generator().manual_seed(0))
    print(f"  reference: PSNR of uniform noise {float(psnr(noise, truths).mean()):.2f} dB, of mid-gray "
          f"{float(psnr(torch.full_like(truths, 0.5), truths).mean()):.2f} dB", flush=True)
    attack = ATTACKS.build("inverting", iterations=iterations, restarts=restarts)
    start = time.perf_counter()
    # the engine directly (reconstruct_many without a callback would do the same) to snapshot the budgets
    recons = optimize_many([o for o, _ in victims], attack.engine(victims[0][0]), labels=[o.labels for o, _ in victims],
                           attack_name="inverting", settings=attack.settings(), seed=0, callback=snapshot)
    wall = time.perf_counter() - start
    at_budget[iterations] = torch.stack([r.inputs[0] for r in recons])
    values = psnr(at_budget[iterations], truths)
    print(f"  {iterations:>6} iterations: mean PSNR {float(values.mean()):6.2f} dB   per image "
          + " ".join(f"{float(v):.2f}" for v in values) + "   (final, best restart)")
    print(f"  final objective per image: " + " ".join(f"{float(r.restart_objectives.min()):.4f}" for r in recons))
    print(f"  {wall:.1f} s for {images} images x {iterations} iterations in one batch: "
          f"{wall / iterations:.3f} s/iteration ({wall / iterations / images:.3f} s per image-iteration)")


def bench_paths(iterations: dict[str, int], rounds: int, threads: int, restarts: int, batches: list[int]) -> None:
    """Seconds per evaluation (objective + gradient) of each way the engine could compute it, interleaved, best
    of ``rounds``: the evidence for which paths ``optimization.evaluation`` keeps."""
    torch.set_num_threads(threads)
    print(f"\n== Evaluation paths, {threads} thread(s), denormals flushed: seconds per evaluation, best of {rounds} "
          f"rounds; oneDNN (mkl) and native convolutions")
    for model, kwargs in (("lenet", {}), ("convnet", {"width": 64})):
        for b in batches:
            obs, truth = make_victim(ExperimentConfig(dataset="photos", model=model, model_kwargs=kwargs,
                                                      indices=IG_INDICES[:b], batch_size=b, leak_labels=True))
            matcher = UpdateMatcher([obs], EngineConfig(objective="cosine", priors={"tv": 0.2}), "cpu")
            ev = matcher.evaluator
            xs = torch.randn(1, restarts, b, *obs.input_shape, generator=torch.Generator().manual_seed(0))
            ys = truth.labels.view(1, 1, -1).expand(1, restarts, -1).contiguous()
            one = (xs[:, :1], ys[:, :1])
            steps = {
                "1: autograd twin": lambda: matcher.value_and_grad(*one, False),
                "1: torch.func": lambda: ev.functional(*one, False),
                f"{restarts}: twin in a loop": lambda: [matcher.value_and_grad(xs[:, k:k + 1], ys[:, k:k + 1], False)
                                                       for k in range(restarts)],
                f"{restarts}: torch.func vmap (the engine's path)": lambda: ev.functional(xs, ys, False),
            }
            times: dict[tuple[str, str], list[float]] = {}
            with flush_denormals(torch.device("cpu")):
                for _ in range(rounds):  # interleaved so that load from elsewhere hits all alike
                    for name, step in steps.items():
                        for backend in ("mkldnn", "native"):
                            with conv_backend(backend, torch.device("cpu")):
                                step()  # warm-up
                                start = time.perf_counter()
                                for _ in range(iterations[model]):
                                    step()
                            times.setdefault((name, backend), []).append((time.perf_counter() - start)
                                                                         / iterations[model])
            print(f"  {model:>8} batch {b}: " + ", ".join(
                f"{name} {min(times[(name, 'mkldnn')]):.4f} (native {min(times[(name, 'native')]):.4f})"
                for name in steps), flush=True)


def bench_fedavg(iterations: int, image_size: int) -> None:
    print(f"\n== FedAvg attack: LeNet, photos {image_size}x{image_size}, batch 4, 5 local steps of batch 2, "
          f"lr 0.1, labels known, {iterations} iterations")
    obs, truth = make_victim(ExperimentConfig(dataset="photos", image_size=image_size, model="lenet",
                                              indices=(3, 17, 45, 88), protocol="fedavg", local_steps=5,
                                              local_batch_size=2, local_lr=0.1, leak_labels=True))
    settings = dict(iterations=iterations, tv=0.01, schedule="cosine")
    for name in ("fedavg", "inverting"):
        start = time.perf_counter()
        recon = ATTACKS.build(name, **settings).reconstruct(obs, seed=0)
        wall = time.perf_counter() - start
        s = score(recon.inputs, recon.labels, truth)
        label = "fedavg (unrolled steps)" if name == "fedavg" else "baseline: delta as one gradient"
        print(f"  {label:>32}: mean PSNR {s.means()['psnr']:6.2f} dB  per image "
              + " ".join(f"{v:.2f}" for v in s.psnr) + f"   {wall / iterations:.3f} s/iteration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=("ig", "paths", "fedavg"), default=["paths", "fedavg", "ig"])
    parser.add_argument("--ig-iterations", type=int, default=2000)
    parser.add_argument("--ig-images", type=int, default=5)
    parser.add_argument("--ig-model-mode", choices=("eval", "train"), default="eval",
                        help="BatchNorm mode of the victim: eval as in Geiping et al.'s experiments (default); in "
                             "train mode at batch 1 each image is normalised by its own statistics and the cosine "
                             "objective stalls near 0.87 (11.9 dB at 2,000 iterations)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--lenet-iterations", type=int, default=20)
    parser.add_argument("--convnet-iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds per path")
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--fedavg-iterations", type=int, default=500)
    parser.add_argument("--fedavg-size", type=int, default=32)
    cores = torch.get_num_threads()  # torch's default: every core, what a user's attack runs with
    parser.add_argument("--threads", type=int, default=cores, help=f"torch threads for ig and fedavg (default {cores})")
    parser.add_argument("--restart-threads", type=int, nargs="+", default=sorted({1, cores}),
                        help="thread counts the restart ratio is measured at (default 1 and every core: one thread "
                             "isolates the per-call overhead, every core is what a user's attack gets)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {cores} cores, cpu")
    if "paths" in args.only:
        for threads in args.restart_threads:
            bench_paths({"lenet": args.lenet_iterations, "convnet": args.convnet_iterations}, args.rounds, threads,
                        args.restarts, args.batches)
    torch.set_num_threads(args.threads)
    if "fedavg" in args.only:
        bench_fedavg(args.fedavg_iterations, args.fedavg_size)
    if "ig" in args.only:
        bench_ig(args.ig_iterations, args.ig_images, args.budgets, args.ig_model_mode)


if __name__ == "__main__":
    main()
