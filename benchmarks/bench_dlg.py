"""DLG/iDLG speed and fidelity against the published DLG loop, in one run.

Reference: the plain recipe of Zhu et al. (2019) as published — dummy image and dummy label from noise,
``torch.optim.LBFGS`` with its defaults (lr 1, no line search), and a closure that recomputes the
double-backward through ``torch.autograd.grad`` in a Python loop. Same model, weights, threads and dtype.

One *iteration* is one objective evaluation (one forward, one gradient, one double-backward) for every
method, so budgets compare equal compute. PSNR is measured after every evaluation; the time spent measuring
is excluded from every method's clock. Run: ``python benchmarks/bench_dlg.py [--images 5] [--budget 600]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from gradleak.attacks import ATTACKS
from gradleak.data import load_dataset
from gradleak.metrics import psnr
from gradleak.observation import ModelSpec, Observation
from gradleak.victim import simulate

TARGET_DB = 30.0


class Clock:
    """Wall time that excludes the measuring callbacks; records (seconds, PSNR) after each evaluation."""

    def __init__(self, truth: torch.Tensor) -> None:
        self.truth = truth
        self.start = time.perf_counter()
        self.paused = 0.0
        self.points: list[tuple[float, float]] = []

    def record(self, pixels: torch.Tensor) -> None:
        t0 = time.perf_counter()
        value = float(psnr(pixels.detach().reshape(self.truth.shape).clamp(0, 1), self.truth).mean())
        self.points.append((t0 - self.start - self.paused, value))
        self.paused += time.perf_counter() - t0

    def time_to(self, db: float) -> float:
        return next((t for t, p in self.points if p >= db), float("inf"))

    def evals_to(self, db: float) -> float:
        return next((i + 1 for i, (_, p) in enumerate(self.points) if p >= db), float("inf"))

    def psnr_at(self, iteration: int) -> float:
        if not self.points:
            return float("nan")
        return self.points[min(iteration, len(self.points)) - 1][1]


def reference_dlg(obs: Observation, truth: torch.Tensor, budget: int, seed: int) -> Clock:
    """The published DLG loop (soft label, LBFGS defaults), instrumented only to record PSNR."""
    torch.manual_seed(seed)
    net = obs.build_model()
    mean, std = obs.normalization()
    original = [obs.update[n] for n, _ in net.named_parameters()]
    dummy_data = torch.randn((obs.batch_size, *obs.input_shape)).requires_grad_(True)
    dummy_label = torch.randn((obs.batch_size, obs.num_classes)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label])
    clock = Clock(truth)
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        optimizer.zero_grad()
        pred = net(dummy_data)
        loss = torch.mean(torch.sum(-F.softmax(dummy_label, dim=-1) * F.log_softmax(pred, dim=-1), 1))
        dy_dx = torch.autograd.grad(loss, net.parameters(), create_graph=True)
        grad_diff = 0
        for gx, gy in zip(dy_dx, original):
            grad_diff += ((gx - gy) ** 2).sum()
        grad_diff.backward()
        evals += 1
        clock.record(dummy_data * std + mean)
        return grad_diff

    while evals < budget:
        loss = optimizer.step(closure)
        if not torch.isfinite(loss):
            break
    return clock


def gradleak_attack(name: str) -> Callable[[Observation, torch.Tensor, int, int], Clock]:
    def run(obs: Observation, truth: torch.Tensor, budget: int, seed: int) -> Clock:
        clock = Clock(truth)
        attack = ATTACKS.build(name, iterations=budget)
        clock.start = time.perf_counter()
        attack.reconstruct(obs, seed=seed, callback=lambda _i, x: clock.record(x[0]))
        return clock

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="faces")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--budget", type=int, default=600, help="objective evaluations per run")
    parser.add_argument("--num-classes", type=int, default=100, help="LeNet head size (DLG used 100)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    indices = torch.linspace(0, len(ds) // 2 - 1, args.images).long().tolist()  # faces: the first half are faces
    methods = {"reference DLG loop": reference_dlg, "gradleak DLG": gradleak_attack("dlg"),
               "gradleak iDLG": gradleak_attack("idlg")}
    results: dict[str, list[Clock]] = {m: [] for m in methods}
    for k, index in enumerate(indices):
        x, y = ds.batch([index])
        spec = ModelSpec("lenet", {"in_channels": ds.input_shape[0], "num_classes": args.num_classes, "image_size": 32})
        obs, truth = simulate(spec, x, y, num_classes=args.num_classes, mean=ds.mean, std=ds.std, seed=k)
        for name, method in methods.items():
            results[name].append(method(obs, truth.inputs, args.budget, k))
    print(f"{args.dataset} images {indices}, LeNet ({args.num_classes} classes), batch 1, float32, "
          f"{torch.get_num_threads()} threads, budget {args.budget} evaluations")
    ref_times = [c.time_to(TARGET_DB) for c in results["reference DLG loop"]]
    ref_median = statistics.median(ref_times)
    header = f"{'method':<20} {'median s to 30 dB':>18} {'median evals':>13} {'reached':>8} {'PSNR@100':>9} {'PSNR@300':>9} {'s/iter':>8} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for name, clocks in results.items():
        times = [c.time_to(TARGET_DB) for c in clocks]
        median = statistics.median(times)
        evals = statistics.median(c.evals_to(TARGET_DB) for c in clocks)
        reached = sum(t < float("inf") for t in times)
        p100 = statistics.mean(c.psnr_at(100) for c in clocks)
        p300 = statistics.mean(c.psnr_at(300) for c in clocks)
        per_iter = statistics.mean(c.points[-1][0] / len(c.points) for c in clocks)
        ratio = ref_median / median if median > 0 else float("inf")
        print(f"{name:<20} {median:>18.3f} {evals:>13.0f} {reached:>5}/{len(times):<2} {p100:>9.2f} {p300:>9.2f} {per_iter:>8.4f} {ratio:>8.1f}x")


if __name__ == "__main__":
    main()
