"""Fidelity and speed of the analytic attacks on bundled real images; prints one table.

    .venv/bin/python benchmarks/bench_analytic.py [--device cpu] [--rgap-images 3]

Rows:
- linear: fully connected input layer (Phong et al. 2017; Geiping et al. 2020) on an MLP, batch 1 (exact
  to float precision) and batches 4 and 8 (only samples that own a hidden unit separate).
- rgap: R-GAP (Zhu & Blaschko 2021) on CNN6, 32x32 photos, batch 1. Reference: the paper's repository shows
  49 dB on its demo image.
- imprint: Robbing the Fed (Fowl et al. 2022), batch 64, 128 bins, one client and the sum of 8 clients' updates
  (8 images each). Reference: with equal-mass bins a sample is alone in its bin with probability
  (1 - 1/128)^63 = 0.61, the ceiling of the fraction recovered exactly.
- reference in the same run: iDLG (optimisation, L-BFGS) on the same batch-1 MLP capture as the linear row.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.data import load_dataset
from gradleak.malicious import imprint_server, simulate_aggregate
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate


class _Clock:
    """Wall and process CPU time of a block (CPU time stays meaningful when other jobs share the cores)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _row(name: str, setting: str, recon, truth, clock: _Clock, extra: str = "") -> None:
    scores = score(recon.inputs, recon.labels, truth)
    psnr = torch.tensor(scores.psnr).clamp(max=200.0)
    frac = float((psnr >= 40).float().mean())
    print(f"{name:<9} {setting:<34} {float(psnr.mean()):>7.1f} {float(psnr.min()):>7.1f} {frac:>7.2f} "
          f"{clock.wall:>7.3f} {clock.cpu:>7.3f}  {extra}")


def _observe(dataset: str, indices: list[int], model: str, device: str, **kwargs):
    ds = load_dataset(dataset)
    x, y = ds.batch(indices)
    c, h, _ = ds.input_shape
    spec = ModelSpec(model, {"in_channels": c, "num_classes": ds.num_classes, "image_size": h, **kwargs})
    torch.manual_seed(0)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rgap-images", type=int, default=3, help="photos attacked with R-GAP")
    args = parser.parse_args()
    dev = args.device
    torch.set_grad_enabled(True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}")
    print(f"{'attack':<9} {'setting':<34} {'PSNR':>7} {'min':>7} {'>=40dB':>7} {'wall_s':>7} {'cpu_s':>7}  notes")

    # -- linear layer -------------------------------------------------------------------------------------
    for dataset, index in (("photos", 3), ("faces", 17), ("digits", 5)):
        obs, truth = _observe(dataset, [index], "mlp", dev)
        with _Clock() as clock:
            recon = ATTACKS.build("linear").reconstruct(obs, device=dev)
        err = float((recon.inputs - truth.inputs).abs().max())
        _row("linear", f"mlp {dataset} batch 1", recon, truth, clock, f"max abs error {err:.1e}")
        if dataset == "photos":
            with _Clock() as clock:
                ref = ATTACKS.build("idlg", iterations=100).reconstruct(obs, device=dev, seed=0)
            _row("idlg", "same capture, 100 L-BFGS evals (ref)", ref, truth, clock)
    for batch in (4, 8):
        obs, truth = _observe("faces", list(range(batch)), "mlp", dev)
        with _Clock() as clock:
            recon = ATTACKS.build("linear").reconstruct(obs, device=dev)
        _row("linear", f"mlp faces batch {batch}", recon, truth, clock,
             f"certified {sum(recon.details['recovered'])}/{batch}")

    # -- R-GAP ---------------------------------------------------------------------------------------------
    for index in list(range(0, 100, 100 // max(args.rgap_images, 1)))[: args.rgap_images]:
        obs, truth = _observe("photos", [index], "cnn6", dev)
        with _Clock() as clock:
            recon = ATTACKS.build("rgap").reconstruct(obs, device=dev)
        ranks = " ".join(f"{r['rank']}/{r['unknowns']}" for r in recon.details["layers"])
        _row("rgap", f"cnn6 photos[{index}] 32x32 batch 1", recon, truth, clock, f"rank/unknowns {ranks}")

    # -- imprint -------------------------------------------------------------------------------------------
    for dataset in ("faces", "digits", "photos"):
        ds = load_dataset(dataset)
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
        x, y = ds.batch(perm[:64].tolist())
        c, h, _ = ds.input_shape
        torch.manual_seed(0)
        server = imprint_server("convnet", in_channels=c, num_classes=ds.num_classes, image_size=h,
                                base_kwargs={"width": 16}, bins=128, seed=0)
        model = server.build_model()
        obs, truth = simulate(server.model_spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std,
                              model=model, device=dev)
        with _Clock() as clock:
            recon = ATTACKS.build("imprint").reconstruct(obs, device=dev)
        d = recon.details
        _row("imprint", f"convnet {dataset} batch 64, 128 bins", recon, truth, clock,
             f"occupied bins {d['occupied_bins']}, flagged {sum(d['recovered'])}")
        batches = [(x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]) for i in range(8)]
        obs, truth = simulate_aggregate(server.model_spec, batches, num_classes=ds.num_classes, mean=ds.mean,
                                        std=ds.std, model=model, reduce="sum", device=dev)
        with _Clock() as clock:
            recon = ATTACKS.build("imprint").reconstruct(obs, device=dev)
        _row("imprint", f"convnet {dataset} sum of 8 clients x 8", recon, truth, clock,
             f"occupied bins {recon.details['occupied_bins']}")
    print("PSNR is capped at 200 dB for exact recoveries; '>=40dB' is the fraction of the batch at PSNR >= 40 dB;")
    print("wall_s and cpu_s time the attack alone (cpu_s: process CPU time, all threads).")


if __name__ == "__main__":
    main()
