"""``gradleak`` command line: demo, capture, attack, list. Every command has ``--help``.

Errors that come from bad input (``GradleakError``) print one line naming the problem and exit with 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradleak.errors import ConfigError, GradleakError


def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["iterations=300", "labels='infer'"]`` -> dict; values are Python literals, else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _indices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--indices expects comma-separated integers, got {text!r}") from None


def _common(p: argparse.ArgumentParser, out_default: str | None = None) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of model init, batch choice and attack init")
    if out_default is not None:
        p.add_argument("--out", default=out_default, help=f"report folder (default: {out_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _victim_args(p: argparse.ArgumentParser, dataset: str, num_classes: int | None) -> None:
    p.add_argument("--dataset", default=dataset, help="bundled name (faces, digits, photos) or FORMAT:PATH "
                   "(cifar10:DIR, imagefolder:DIR, npz:FILE)")
    p.add_argument("--indices", help="comma-separated indices of the private batch (default: drawn by --seed)")
    p.add_argument("--batch-size", type=int, default=1, help="private batch size when --indices is not given")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--model", default="lenet", help="model name (see `gradleak list`)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model setting, repeatable")
    p.add_argument("--num-classes", type=int, default=num_classes,
                   help="size of the model's output layer (default: the dataset's classes)")
    p.add_argument("--model-mode", choices=("train", "eval"), default="train")
    p.add_argument("--protocol", choices=("fedsgd", "fedavg"), default="fedsgd",
                   help="fedsgd: one gradient; fedavg: weight delta of --local-steps SGD steps")
    p.add_argument("--local-steps", type=int, default=1)
    p.add_argument("--local-lr", type=float, default=0.1)
    p.add_argument("--local-batch-size", type=int, default=None)
    p.add_argument("--leak-labels", action="store_true", help="the labels are part of what the server sees")
    p.add_argument("--clients", type=int, default=1,
                   help="split the batch into N equal clients; the server sees the sum of their updates (fedsgd)")


def _attack_args(p: argparse.ArgumentParser, attack: str) -> None:
    p.add_argument("--attack", default=attack, help="attack name (see `gradleak list`)")
    p.add_argument("--iterations", type=int, default=None, help="attack iterations (objective evaluations)")
    p.add_argument("--restarts", type=int, default=None, help="restarts, run as one batch")
    p.add_argument("--attack-arg", action="append", metavar="KEY=VALUE", help="attack setting, repeatable")


def _attack_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = parse_assignments(args.attack_arg, "--attack-arg")
    for key in ("iterations", "restarts"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    return kwargs


def _experiment_config(args: argparse.Namespace) -> Any:
    from gradleak.experiment import ExperimentConfig

    return ExperimentConfig(
        dataset=args.dataset, image_size=args.image_size, indices=_indices(args.indices), batch_size=args.batch_size,
        model=args.model, model_kwargs=parse_assignments(args.model_arg, "--model-arg"), num_classes=args.num_classes,
        model_mode=args.model_mode, protocol=args.protocol, local_steps=args.local_steps, local_lr=args.local_lr,
        local_batch_size=args.local_batch_size, leak_labels=args.leak_labels, clients=args.clients,
        attack=getattr(args, "attack", "idlg"), attack_kwargs=_attack_kwargs(args) if hasattr(args, "attack") else {},
        seed=args.seed, device=args.device,
    )


def _print_summary(metrics: dict[str, Any], out: Path) -> None:
    mean = metrics["mean"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print(
        f"{metrics['attack']['name']}: PSNR {fmt(mean['psnr'], '.2f')} dB  SSIM {fmt(mean['ssim'], '.3f')}  "
        f"MSE {fmt(mean['mse'], '.2e')}  label accuracy {fmt(mean['label_accuracy'], '.2f')}  "
        f"({metrics['iterations']} iterations, {metrics['wall_time_s']:.1f} s)"
    )
    print(f"recovered labels {metrics['per_sample']['recovered_label']}, true {metrics['per_sample']['true_label']}")
    recovered = metrics.get("details", {}).get("recovered")
    if recovered is not None:
        print(f"samples the attack flags as recovered: {sum(recovered)} of {len(recovered)} (details in metrics.json)")
    print(f"report: {out / 'grid.png'}, {out / 'metrics.json'}")


def cmd_demo(args: argparse.Namespace) -> int:
    from gradleak.experiment import run_experiment

    config = _experiment_config(args)
    result = run_experiment(config, out=args.out, progress=not args.quiet)
    _print_summary(result.metrics, Path(args.out))
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from gradleak.capture import save_capture, save_truth
    from gradleak.experiment import make_victim

    obs, truth = make_victim(_experiment_config(args))
    path = save_capture(obs, args.out)
    truth_path = Path(args.truth) if args.truth else path.with_name(path.stem + ".truth.safetensors")
    save_truth(truth, truth_path)
    print(f"capture: {path} ({obs.update_kind}, batch {obs.batch_size}, model {obs.model_spec.name})")
    print(f"ground truth (keep it away from the attacker): {truth_path}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from gradleak.attacks import ATTACKS
    from gradleak.capture import load_capture, load_truth
    from gradleak.metrics import score
    from gradleak.report.files import write_report

    obs = load_capture(args.capture)
    truth = load_truth(args.truth) if args.truth else None
    attack = ATTACKS.build(args.attack, **_attack_kwargs(args))
    recon = attack.reconstruct(obs, device=args.device, seed=args.seed, progress=not args.quiet)
    scores = score(recon.inputs, recon.labels, truth) if truth is not None else None
    out = Path(args.out)
    metrics = write_report(out, obs, recon, scores, truth, seed=args.seed, device=args.device,
                           extra={"capture": str(args.capture)})
    _print_summary(metrics, out)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from gradleak.attacks import ATTACKS, LABEL_RULES
    from gradleak.attacks.objectives import OBJECTIVES
    from gradleak.attacks.priors import PRIORS
    from gradleak.data import DATASETS, FORMATS
    from gradleak.models import MODELS

    listing = {
        "models": MODELS.names(), "datasets": DATASETS.names(), "data formats": sorted(FORMATS),
        "attacks": ATTACKS.names(), "label rules": LABEL_RULES.names(), "objectives": OBJECTIVES.names(),
        "priors": PRIORS.names(),
    }
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        for key, names in listing.items():
            print(f"{key:>12}: {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradleak", description="Gradient inversion: attacks, defenses, audits.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="attack one bundled real face with iDLG on LeNet and report",
                          description="Simulate a client on a bundled image, attack its gradient, write a report.")
    _victim_args(demo, dataset="faces", num_classes=100)
    demo.set_defaults(indices="0")
    _attack_args(demo, attack="idlg")
    _common(demo, out_default="out/demo")
    demo.set_defaults(func=cmd_demo)

    cap = sub.add_parser("capture", help="simulate a victim and write a capture file",
                         description="Simulate a client's update and save what the server sees (safetensors).")
    _victim_args(cap, dataset="faces", num_classes=None)
    _common(cap)
    cap.add_argument("--out", default="capture.safetensors", help="capture file to write")
    cap.add_argument("--truth", default=None, help="ground-truth file (default: beside --out, .truth.safetensors)")
    cap.set_defaults(func=cmd_capture)

    att = sub.add_parser("attack", help="attack a capture file and write a report",
                         description="Reconstruct inputs and labels from a capture; score them if --truth is given.")
    att.add_argument("capture", help="capture file (.safetensors) written by `gradleak capture` or a red team")
    att.add_argument("--truth", default=None, help="ground-truth file, to score the reconstruction")
    _attack_args(att, attack="idlg")
    _common(att, out_default="out/attack")
    att.set_defaults(func=cmd_attack)

    lst = sub.add_parser("list", help="list registered models, datasets, attacks, objectives and priors")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GradleakError as exc:
        print(f"gradleak: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
