"""The flags of every ``gradleak`` command. Building the parser imports nothing but ``argparse``: ``--help`` and
a mistyped flag answer at once, and a command's own dependencies load only when it runs (``gradleak.cli``)."""

from __future__ import annotations

import argparse

from gradleak.cli.status import BAD_INPUT, NOTHING_RECOVERED, SOME_FAILED

#: --model of the commands that simulate an image victim (demo, capture, defend, tradeoff)
MODEL_HELP = ("registry name (see `gradleak list`), your factory as package.module:factory or path/file.py:factory "
              "(naming it here trusts it; called with in_channels, num_classes, image_size and the --model-arg "
              "settings), or hf:MODEL_TYPE with --model-config: a transformers image classifier (vit, convnext, "
              "...) built from its config")
MODEL_CONFIG_HELP = "Hugging Face config file of an hf: model (JSON; --model-arg settings override its keys)"


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
    p.add_argument("--model", default="lenet", metavar="SOURCE", help=MODEL_HELP)
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model setting, repeatable")
    p.add_argument("--model-config", default=None, metavar="JSON", help=MODEL_CONFIG_HELP)
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
    p.add_argument("--allow-large", action="store_true",
                   help="lift the bounds on image size, dataset size and labels read from files")


def _attack_args(p: argparse.ArgumentParser, attack: str | None, default_help: str = "") -> None:
    p.add_argument("--attack", default=attack, help=f"attack name (see `gradleak list`){default_help}")
    p.add_argument("--iterations", type=int, default=None, help="attack iterations (objective evaluations)")
    p.add_argument("--restarts", type=int, default=None, help="restarts, run as one batch")
    p.add_argument("--attack-arg", action="append", metavar="KEY=VALUE", help="attack setting, repeatable")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="optimisation attacks: save progress to FILE and resume from it if it exists")


def _defense_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--defense", default=None, help="defense applied in the client's step (see `gradleak list`)")
    p.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="defense setting, repeatable")


def _utility_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--utility-dataset", default=None, help="dataset the defended model is trained on "
                   "(default: --dataset)")
    p.add_argument("--train-steps", type=int, default=300, help="SGD steps of the utility training (default 300)")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--train-lr", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.25)


def _own_files_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own model and files (instead of a capture)")
    g.add_argument("--model", default=None, metavar="SOURCE",
                   help="registry name, your factory as package.module:factory or path/file.py:factory (naming it "
                   "here trusts it), or hf:MODEL_TYPE with --model-config")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="factory/model setting, repeatable")
    g.add_argument("--model-config", default=None, metavar="JSON", help="Hugging Face config file (hf: models)")
    g.add_argument("--hf-head", default="causal_lm", help="Hugging Face head: causal_lm, masked_lm, "
                   "sequence_classification, base")
    g.add_argument("--weights", default=None, metavar="FILE", help="the model's weights (safetensors or .pt)")
    g.add_argument("--update", default=None, metavar="FILE", help="the shared gradient or weight delta")
    g.add_argument("--update-kind", choices=("gradient", "weight_delta"), default="gradient")
    g.add_argument("--local-steps", type=int, default=1, help="weight delta: the client's local SGD steps")
    g.add_argument("--local-lr", type=float, default=None, help="weight delta: the client's learning rate")
    g.add_argument("--local-batch-size", type=int, default=None, help="weight delta: local mini-batch size")
    g.add_argument("--input-kind", choices=("image", "tokens", "features"), default="image")
    g.add_argument("--input-shape", default=None, metavar="C,H,W", help="images: one image's shape")
    g.add_argument("--mean", default=None, help="images/features: comma-separated normalisation mean")
    g.add_argument("--std", default=None, help="images/features: comma-separated normalisation std")
    g.add_argument("--num-features", type=int, default=None, help="features: entries per vector")
    g.add_argument("--seq-len", type=int, default=None, help="tokens: sequence length")
    g.add_argument("--vocab-size", type=int, default=None, help="tokens: vocabulary size")
    g.add_argument("--pad-token-id", type=int, default=None, help="tokens: padding id")
    g.add_argument("--task", choices=("classification", "causal_lm", "masked_lm"), default=None,
                   help="training task (default: classification, causal_lm for hf causal_lm heads)")
    g.add_argument("--num-classes", type=int, default=None, help="classification: number of classes")
    g.add_argument("--batch-size", type=int, default=1, help="examples behind the update")
    g.add_argument("--model-mode", choices=("train", "eval"), default="train")
    p.add_argument("--trust-model", action="append", default=[], metavar="MODULE:FACTORY",
                   help="allow a capture's model factory (import path and function) to be imported and called; "
                   "repeatable; a bare module trusts none of its functions")
    p.add_argument("--allow-large", action="store_true",
                   help="lift the bounds on batch size, input size and model size read from files")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public", default=None, metavar="DATASET",
                   help="the attacker's public images, disjoint from the private batch (bundled name or FORMAT:PATH): "
                   "their best match is a baseline, and they make the re-identification line-up")
    p.add_argument("--margin-psnr", type=float, default=3.0, metavar="DB",
                   help="a sample is leaked when it beats the best guess by this PSNR (default 3 dB) ...")
    p.add_argument("--margin-ssim", type=float, default=0.1,
                   help="... and by this SSIM (default 0.1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradleak", description="Gradient inversion: attacks, defenses, audits.",
        epilog=f"exit status: 0 done; {SOME_FAILED} some sweep experiments failed (see the table); {BAD_INPUT} bad "
        "input, or a run the machine's memory cannot hold (one line on stderr, nothing run); "
        f"{NOTHING_RECOVERED} the attack ran and recovered nothing (DAGER found no token sequence: one line on "
        "stderr, no report written, so that a script never takes an empty reconstruction for a result)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="attack one bundled real face with iDLG on LeNet and report",
                          description="Simulate a client on a bundled image, attack its gradient, write a report.")
    _victim_args(demo, dataset="faces", num_classes=100)
    _defense_args(demo)
    _attack_args(demo, attack=None, default_help=" (default: idlg; dager with --text)")
    _common(demo, out_default="out/demo")
    txt = demo.add_argument_group("text (--text)")
    txt.add_argument("--text", action="store_true",
                     help="a language-model fine-tuning update on bundled private records, attacked by DAGER")
    txt.add_argument("--text-model", default="gpt2-small",
                     choices=("gpt2-tiny", "gpt2-mini", "gpt2-small", "bert-tiny", "bert-base"))
    txt.add_argument("--records", type=int, default=8, help="private records in the batch (text)")
    txt.add_argument("--pretrain-steps", type=int, default=0,
                     help="train the text model here first for this many steps (cached)")

    cap = sub.add_parser("capture", help="simulate a victim and write a capture file",
                         description="Simulate a client's update and save what the server sees (safetensors).")
    _victim_args(cap, dataset="faces", num_classes=None)
    _defense_args(cap)
    _common(cap)
    cap.add_argument("--out", default="capture.safetensors", help="capture file to write")
    cap.add_argument("--truth", default=None, help="ground-truth file (default: beside --out, .truth.safetensors)")
    cap.add_argument("--force", action="store_true", help="overwrite an existing capture and truth file")

    att = sub.add_parser("attack", help="attack a capture (or your own model, weights and update files)",
                         description="Reconstruct inputs and labels from a capture, or from your own files "
                         "(--model, --weights, --update and the input description); score them if --truth is given.")
    att.add_argument("capture", nargs="?", default=None,
                     help="capture file (.safetensors) written by `gradleak capture` or `gradleak.record`")
    att.add_argument("--truth", default=None, help="ground-truth file, to score the reconstruction")
    att.add_argument("--tokenizer", default=None, metavar="PATH",
                     help="text captures: your tokenizer (a tokenizers JSON file, or the folder save_pretrained "
                     "wrote) to decode the records; checked against the vocabulary digest the capture carries")
    _baseline_args(att)
    _own_files_args(att)
    _attack_args(att, attack="idlg")
    _common(att, out_default="out/attack")

    dfd = sub.add_parser("defend", help="measure a defense's price: test accuracy when trained with it, epsilon",
                         description="Train a model with a defense on a bundled dataset (short fixed schedule) and "
                         "report its test accuracy beside the undefended baseline, and epsilon where it has one.")
    dfd.add_argument("--defense", required=True, help="defense name (see `gradleak list`)")
    dfd.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="defense setting, repeatable")
    dfd.add_argument("--dataset", default="digits", help="bundled dataset to train on (default digits)")
    dfd.add_argument("--image-size", type=int, default=32)
    dfd.add_argument("--allow-large", action="store_true", help="lift the bounds on image and dataset size")
    dfd.add_argument("--model", default="lenet", metavar="SOURCE", help=MODEL_HELP)
    dfd.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model setting, repeatable")
    dfd.add_argument("--model-config", default=None, metavar="JSON", help=MODEL_CONFIG_HELP)
    _utility_args(dfd)
    _common(dfd)
    dfd.add_argument("--out", default=None, help="folder for utility.json (optional)")

    trd = sub.add_parser("tradeoff", help="leakage against utility: an attack against a defense at several strengths",
                         description="Attack a defended victim at each strength and train with the defense; write a "
                         "table (strength, PSNR, SSIM, label accuracy, test accuracy, epsilon) and a plot.")
    trd.add_argument("--defense", required=True, help="defense name (see `gradleak list`)")
    trd.add_argument("--values", required=True, help="comma-separated strengths, e.g. 0,0.01,0.1,1")
    trd.add_argument("--param", default=None, help="parameter the strengths set (default: the defense's strength "
                     "parameter, e.g. noise_multiplier for dpsgd, std for gaussian)")
    trd.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="fixed defense setting, repeatable")
    trd.add_argument("--images", default="0,1,2", help="indices attacked, one private batch each (default 0,1,2)")
    _victim_args(trd, dataset="digits", num_classes=None)
    _attack_args(trd, attack="idlg")
    _utility_args(trd)
    _common(trd, out_default="out/tradeoff")

    ins = sub.add_parser("inspect", help="show what a capture, truth or tensor file holds, without attacking",
                         description="Print the model, input description, task, update and what leaked in a "
                         "capture; the tensors of a weights or gradient file. Runs no model code.")
    ins.add_argument("file", help="capture, truth, safetensors or PyTorch (weights_only) file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")

    lst = sub.add_parser("list", help="list registered models, datasets, attacks, objectives and priors")
    lst.add_argument("--json", action="store_true")

    fla = sub.add_parser("fl-audit", aliases=["audit"], help="simulate a Flower federation and audit its leakage",
                         description="Run N Flower clients in one process (run_simulation), record every update the "
                         "server sees (only aggregates with --secure-aggregation, Flower's SecAgg+), attack each "
                         "and write a per-round, per-client report.")
    fla.add_argument("config", nargs="?", help="audit config (.toml/.yaml) with [federation] and [audit] tables")
    fla.add_argument("--clients", type=int, default=None, help="number of clients (overrides the config)")
    fla.add_argument("--rounds", type=int, default=None)
    fla.add_argument("--protocol", choices=("fedsgd", "fedavg", "dp"), default=None)
    fla.add_argument("--dataset", default=None)
    fla.add_argument("--model", default=None, help="registry name or your factory package.module:factory "
                     "(naming it here trusts it; called with in_channels, num_classes, image_size, model_kwargs)")
    fla.add_argument("--trust-model", action="append", default=[], metavar="MODULE:FACTORY",
                     help="allow the config's model factory to be imported and called; repeatable")
    fla.add_argument("--secure-aggregation", action="store_true", help="Flower SecAgg+: the server sees sums only")
    fla.add_argument("--filter-threshold", type=float, default=None, metavar="DB",
                     help="filter updates whose predicted attack PSNR (gradleak.risk) is above DB before FedAvg; "
                     "DB must lie in the risk score's range (about 5 to 50 dB)")
    fla.add_argument("--filter-action", choices=("drop", "clip", "flag"), default=None,
                     help="what the filter does with a risky update (default: drop; needs a threshold)")
    fla.add_argument("--attack", default=None)
    fla.add_argument("--iterations", type=int, default=None)
    fla.add_argument("--aggregate-as", choices=("client", "batch"), default=None,
                     help="attack an aggregate as one client's update (client) or as one batch of all (batch)")
    fla.add_argument("--out", default=None, help="report folder (default from the config: out/fl-audit)")
    fla.add_argument("--allow-large", action="store_true",
                     help="lift the bounds on the examples per round and image size")
    fla.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    fla.add_argument("--quiet", action="store_true")

    swp = sub.add_parser("sweep", help="run a grid of experiments on Ray, resumable",
                         description="Expand the config's grid and run each experiment as a Ray task (local Ray by "
                         "default, --address for a cluster); results stream into one CSV/Parquet table, done "
                         "experiments are skipped, failures are recorded and the rest go on.")
    swp.add_argument("config", help="sweep config (.toml/.yaml) with [sweep], [base] and [grid] tables")
    swp.add_argument("--address", default=None, help="existing Ray cluster address (e.g. ray://host:10001 or auto)")
    swp.add_argument("--out", default=None, help="results folder (overrides [sweep] out)")
    swp.add_argument("--retry-errors", action="store_true", help="run again the experiments recorded as errors")
    swp.add_argument("--max-experiments", type=int, default=None, metavar="N",
                     help="allow a grid of up to N experiments (default: [sweep] max_experiments, 10000)")
    swp.add_argument("--no-report", action="store_true", help="do not write report.html next to the table")
    swp.add_argument("--force", action="store_true",
                     help="write into a folder or table that another sweep (or anything but this sweep) wrote; "
                     "without it such a table is refused, never overwritten or merged")
    swp.add_argument("--quiet", action="store_true")

    rep = sub.add_parser("report", help="write a self-contained HTML report",
                         description="From a sweep results table (.csv/.parquet), a run folder (metrics.json) or an "
                         "audit folder (audit.json), write one HTML file with every image embedded.")
    rep.add_argument("source", help="results table, run folder or audit folder")
    rep.add_argument("--out", default=None, help="HTML file (default: report.html beside the source)")
    rep.add_argument("--config", default=None, help="config file to include in the report")

    spl = sub.add_parser("split", help="split learning: smashed-data inversion and label leakage, with defenses")
    spl.add_argument("--dataset", default="digits", help="bundled dataset [digits]")
    spl.add_argument("--image-size", type=int, default=16, help="image side, multiple of 4 [16]")
    spl.add_argument("--cut", type=int, default=2, help="cut after block 1, 2 or 3 [2]")
    spl.add_argument("--steps", type=int, default=60, help="training steps [60]")
    spl.add_argument("--observe", type=int, default=8, help="images the server sees as smashed data [8]")
    spl.add_argument("--positive-class", type=int, default=0, help="positive class of the label-leakage task [0]")
    spl.add_argument("--smashed-noise", type=float, default=0.0, help="defense: noise std on smashed data")
    spl.add_argument("--nopeek", type=float, default=0.0, help="defense: NoPeek distance-correlation weight")
    spl.add_argument("--gradient-noise", type=float, default=0.0, help="defense: returned-gradient perturbation")
    spl.add_argument("--seed", type=int, default=0)
    spl.add_argument("--allow-large", action="store_true", help="lift the bounds on image size, steps and --observe")
    spl.add_argument("--out", default="split-run", help="report folder [split-run]")
    return parser
