"""Batch label inference: label-count and label-existence accuracy over random batches (issue 3).

    .venv/bin/python benchmarks/bench_labels.py [--trials 50] [--batch-sizes 8 24]

Victims: untrained LeNet (PyTorch's default init) and MLP (256, 256), 10 classes, batches drawn at random from
the bundled digits (1,797 real images, 10 classes), so a batch of 24 repeats labels. Rules compared:
``count`` (gradleak's LLG/iLRG-style counting), ``yin`` (column minimum, Yin et al. 2021), and iDLG's sign
criterion (Zhao et al. 2020) extended to batches: the classes whose bias gradient is negative, the most
negative repeated to fill the batch. A last row shows the limit of counting on LeNet with DLG's U(-0.5, 0.5)
init, whose softmax saturates. Scores: count accuracy ``sum_c min(n_hat_c, n_c) / B``, existence accuracy
``|P & T| / |P | T|`` of the class sets, averaged over trials.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks.labels import classifier_gradient, infer_labels, label_count_accuracy, label_existence_accuracy
from gradleak.data import load_dataset
from gradleak.observation import ModelSpec, Observation
from gradleak.victim import simulate


def idlg_sign(obs: Observation) -> torch.Tensor:
    """iDLG's criterion per class: negative bias-gradient entries mark present classes."""
    _, bias = classifier_gradient(obs)
    assert bias is not None
    present = (bias < 0).nonzero().flatten()
    if present.numel() == 0:
        present = bias.argmin().view(1)
    fill = bias.argmin().repeat(max(0, obs.batch_size - present.numel()))
    return torch.cat([present, fill])[: obs.batch_size]


VICTIMS = {
    "lenet": ("lenet", {"uniform_init": False}),
    "mlp": ("mlp", {"hidden": (256, 256)}),
    "lenet-dlg-init": ("lenet", {"uniform_init": True}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("digits", size=32)
    rules = {
        "count": lambda o: infer_labels(o, "count"),
        "yin": lambda o: infer_labels(o, "yin"),
        "idlg-sign": idlg_sign,
    }
    print(f"{'victim':>15} {'B':>3} | " + " | ".join(f"{r:>9}: count  exist" for r in rules) + " | s/trial")
    for victim, (model, kwargs) in VICTIMS.items():
        for b in args.batch_sizes:
            acc = {r: ([], []) for r in rules}
            start = time.perf_counter()
            for trial in range(args.trials):
                gen = torch.Generator().manual_seed(trial)
                idx = torch.randint(len(ds), (b,), generator=gen).tolist()
                inputs, labels = ds.batch(idx)
                torch.manual_seed(trial)
                spec = ModelSpec(model, {"in_channels": 1, "num_classes": args.num_classes, "image_size": 32, **kwargs})
                obs, truth = simulate(spec, inputs, labels, num_classes=args.num_classes, mean=ds.mean, std=ds.std)
                for name, rule in rules.items():
                    predicted = rule(obs)
                    acc[name][0].append(label_count_accuracy(predicted, truth.labels))
                    acc[name][1].append(label_existence_accuracy(predicted, truth.labels))
            per = (time.perf_counter() - start) / args.trials
            cells = [f"{'':>10} {sum(c) / len(c):.4f} {sum(e) / len(e):.4f}" for c, e in acc.values()]
            print(f"{victim:>15} {b:>3} | " + " | ".join(cells) + f" | {per:.2f}", flush=True)


if __name__ == "__main__":
    main()
