"""``gradleak`` command line. Every command has ``--help``.

- ``demo`` (images, or ``--text``), ``capture``, ``attack``, ``inspect``: the core loop on bundled data or a
  capture, scored beside the attacker's guesses when the truth is given;
- ``defend``, ``tradeoff``: a defense's price (accuracy, epsilon) and leakage against utility;
- ``fl-audit`` (``audit``), ``sweep``, ``report``, ``split``: Flower federations, grids on Ray, HTML reports,
  split learning;
- ``list``: the registries.

Errors that come from bad input (``GradleakError``) print one line naming the problem and exit with 2; an attack
that ran and recovered nothing exits with 3.
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
    p.add_argument("--allow-large", action="store_true",
                   help="lift the bounds on image size, dataset size and labels read from files")


def _attack_args(p: argparse.ArgumentParser, attack: str | None, default_help: str = "") -> None:
    p.add_argument("--attack", default=attack, help=f"attack name (see `gradleak list`){default_help}")
    p.add_argument("--iterations", type=int, default=None, help="attack iterations (objective evaluations)")
    p.add_argument("--restarts", type=int, default=None, help="restarts, run as one batch")
    p.add_argument("--attack-arg", action="append", metavar="KEY=VALUE", help="attack setting, repeatable")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="optimisation attacks: save progress to FILE and resume from it if it exists")


def _attack_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--attack-arg`` settings with ``--iterations``, ``--restarts`` and ``--checkpoint`` merged in; a flag the
    named attack has no setting for is refused by its own name (DAGER has no iterations)."""
    import dataclasses

    from gradleak.attacks import ATTACKS

    kwargs = parse_assignments(args.attack_arg, "--attack-arg")
    name = getattr(args, "attack", None) or "idlg"
    factory = ATTACKS.get(name)
    fields = {f.name for f in dataclasses.fields(factory)} if dataclasses.is_dataclass(factory) else None
    for key in ("iterations", "restarts", "checkpoint"):
        if getattr(args, key, None) is not None:
            if fields is not None and key not in fields:
                raise ConfigError(f"{_flag(key)} does not apply to attack {name!r} (its settings: "
                                  f"{', '.join(sorted(fields))}; give them with --attack-arg)")
            kwargs[key] = getattr(args, key)
    return kwargs


def _experiment_config(args: argparse.Namespace) -> Any:
    from gradleak.experiment import ExperimentConfig

    return ExperimentConfig(
        dataset=args.dataset, image_size=args.image_size, indices=_indices(args.indices), batch_size=args.batch_size,
        model=args.model, model_kwargs=parse_assignments(args.model_arg, "--model-arg"), num_classes=args.num_classes,
        model_mode=args.model_mode, protocol=args.protocol, local_steps=args.local_steps, local_lr=args.local_lr,
        local_batch_size=args.local_batch_size, leak_labels=args.leak_labels, clients=args.clients,
        attack=getattr(args, "attack", None) or "idlg",
        attack_kwargs=_attack_kwargs(args) if hasattr(args, "attack") else {},
        seed=args.seed, device=args.device, **_defense_fields(args),
    )


def _defense_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--defense", default=None, help="defense applied in the client's step (see `gradleak list`)")
    p.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="defense setting, repeatable")


def _defense_fields(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "defense", None) is None:
        if getattr(args, "defense_arg", None):
            raise ConfigError("--defense-arg given without --defense")
        return {}
    return {"defense": args.defense, "defense_kwargs": parse_assignments(args.defense_arg, "--defense-arg")}


def _utility_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--utility-dataset", default=None, help="dataset the defended model is trained on "
                   "(default: --dataset)")
    p.add_argument("--train-steps", type=int, default=300, help="SGD steps of the utility training (default 300)")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--train-lr", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.25)


def _utility_config(args: argparse.Namespace) -> Any:
    from gradleak.utility import UtilityConfig

    return UtilityConfig(
        dataset=args.utility_dataset or args.dataset, image_size=args.image_size, model=args.model,
        model_kwargs=parse_assignments(args.model_arg, "--model-arg"), steps=args.train_steps,
        batch_size=args.train_batch_size, lr=args.train_lr, test_fraction=args.test_fraction, seed=args.seed,
        device=args.device,
    )


def _literal_list(text: str, flag: str) -> tuple[Any, ...]:
    values = tuple(parse_assignments([f"v={t.strip()}"], flag)["v"] for t in text.split(",") if t.strip())
    if not values:
        raise ConfigError(f"{flag} expects comma-separated values, got {text!r}")
    return values


def cmd_defend(args: argparse.Namespace) -> int:
    from gradleak.defenses import build_defense
    from gradleak.utility import measure_utility

    defense = build_defense(args.defense, **parse_assignments(args.defense_arg, "--defense-arg"))
    result = measure_utility(defense, _utility_config(args))
    cfg = result.config
    print(f"utility of {defense.describe() if defense else 'no defense'}: {cfg.model} on {cfg.dataset}, "
          f"{cfg.steps} steps of batch {cfg.batch_size} ({result.train_size} train / {result.test_size} test images)")
    print(f"test accuracy {result.accuracy:.3f} (undefended {result.baseline_accuracy:.3f})")
    if result.privacy is not None:
        print(result.privacy.describe())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "utility.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        print(f"report: {out / 'utility.json'}")
    return 0


def cmd_tradeoff(args: argparse.Namespace) -> int:
    from gradleak.tradeoff import TradeoffConfig, markdown_table, run_tradeoff, write_tradeoff

    base = _experiment_config(args)
    _check_experiment_memory(base)
    config = TradeoffConfig(
        defense=args.defense, strengths=_literal_list(args.values, "--values"), param=args.param,
        defense_kwargs=parse_assignments(args.defense_arg, "--defense-arg"), experiment=base,
        images=_indices(args.images), utility=_utility_config(args),
    )
    rows = run_tradeoff(config, progress=None if args.quiet else lambda r: print("  " + " | ".join(r.cells()), flush=True))
    paths = write_tradeoff(rows, config, args.out)
    print(markdown_table(rows, config.strength_param))
    print(f"table: {paths['csv']}, {paths['md']}; plot: {paths['png']}")
    return 0


#: exit status when the attack ran and recovered nothing (DAGER found no sequence): not bad input (2), and not
#: a result either, so that a script never takes an empty reconstruction for one
EXIT_NOTHING_RECOVERED = 3


def _print_summary(metrics: dict[str, Any], out: Path) -> None:
    mean = metrics["mean"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    if metrics["observation"]["inputs"].get("kind", "image") != "tokens":
        print(
            f"{metrics['attack']['name']}: PSNR {fmt(mean['psnr'], '.2f')} dB  SSIM {fmt(mean['ssim'], '.3f')}  "
            f"MSE {fmt(mean['mse'], '.2e')}  label accuracy {fmt(mean['label_accuracy'], '.2f')}  "
            f"({metrics['iterations']} iterations, {metrics['wall_time_s']:.1f} s)"
        )
        print(f"recovered labels {metrics['per_sample']['recovered_label']}, true "
              f"{metrics['per_sample']['true_label']}")
        print(f"verdict: {metrics['verdict']}")
    details = metrics.get("details", {})
    if details.get("sequences_found") is not None:
        print(f"{metrics['attack']['name']}: {details['sequences_found']} sequences found for a batch of "
              f"{metrics['observation']['batch_size']} ({metrics['wall_time_s']:.1f} s)")
    recovered = details.get("recovered")
    if recovered is not None:
        print(f"samples the attack flags as recovered: {sum(recovered)} of {len(recovered)} (details in metrics.json)")
    _print_written(out, ("grid.png", "metrics.json", "reconstruction.safetensors"))


def _print_written(out: Path, names: Sequence[str]) -> None:
    """Name the report files that exist: never one that was not written."""
    written = [str(out / n) for n in names if (out / n).is_file()]
    if written:
        print(f"report: {', '.join(written)}")


def _nothing_recovered(recon: Any) -> str | None:
    """A one-line reason when a text attack found no sequence at all (its reconstruction is padding only)."""
    found = recon.details.get("sequences_found") if isinstance(recon.details, dict) else None
    if found != 0:
        return None
    why = recon.details.get("stopped")
    counts = recon.details.get("candidates_per_position") or []
    if not why and counts and max(counts) == 0:
        why = "no token lies inside the layer-1 span at any position"
    rank = recon.details.get("layer1_rank")
    reason = f" ({why})" if why else f" (layer-1 rank {rank})" if rank is not None else ""
    return (f"{recon.attack} found no token sequence in the update{reason}; nothing was written (exit status "
            f"{EXIT_NOTHING_RECOVERED})")


#: demo flags that describe the image victim and its optimisation attack; a text demo refuses them
_IMAGE_ONLY = ("dataset", "indices", "batch_size", "image_size", "model", "model_arg", "num_classes", "model_mode",
               "protocol", "local_steps", "local_lr", "local_batch_size", "leak_labels", "clients", "iterations",
               "restarts", "checkpoint")
#: demo flags of the text victim; an image demo refuses them
_TEXT_ONLY = ("text_model", "records", "pretrain_steps")
#: bundled records a text demo generates unless --allow-large (DAGER's layer-1 span fills a decoder's width,
#: 768 tokens on gpt2-small, at about a dozen records: far more says nothing, and costs memory)
MAX_DEMO_RECORDS = 256


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The flags among ``dests`` the user set (their value differs from the parser's default)."""
    defaults = vars(build_parser().parse_args([args.command]))
    return [_flag(d) for d in dests if getattr(args, d, None) != defaults.get(d)]


def _text_attack(name: str, kwargs: dict[str, Any]) -> Any:
    """Attack ``name`` built with ``kwargs`` after checking that it handles token sequences."""
    from gradleak.attacks import ATTACKS
    from gradleak.config import check_attack_settings

    kinds = getattr(ATTACKS.get(name), "input_kinds", frozenset())
    if "tokens" not in kinds:
        text = [n for n in ATTACKS.names() if "tokens" in getattr(ATTACKS.get(n), "input_kinds", ())]
        raise ConfigError(f"--attack {name!r} does not handle token sequences; text attacks: {', '.join(text)}")
    return check_attack_settings(name, kwargs, "--attack-arg")


def cmd_demo_text(args: argparse.Namespace) -> int:
    """A fine-tuning client's update on bundled private records, attacked (DAGER by default) and scored."""
    from gradleak.defenses import build_defense
    from gradleak.text.metrics import text_baselines
    from gradleak.text.victim import text_victim

    wrong = _given(args, _IMAGE_ONLY)
    if wrong:
        raise ConfigError(f"{wrong[0]} does not apply to demo --text (text attacks take their settings from "
                          "--attack-arg, e.g. steps=100 for tag)")
    attack_name = args.attack or "dager"
    attack = _text_attack(attack_name, parse_assignments(args.attack_arg, "--attack-arg"))
    if args.records < 1:
        raise ConfigError(f"--records must be >= 1, got {args.records}")
    if args.records > MAX_DEMO_RECORDS and not args.allow_large:
        raise ConfigError(f"--records {args.records} is above the limit of {MAX_DEMO_RECORDS} bundled records; pass "
                          "--allow-large if this is real large work")
    if args.pretrain_steps < 0:
        raise ConfigError(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}")
    defense = build_defense(args.defense, **parse_assignments(args.defense_arg, "--defense-arg")) \
        if args.defense else None
    case = text_victim(args.text_model, args.records, seed=args.seed, pretrain_steps=args.pretrain_steps,
                       defense=defense)
    recon = attack.reconstruct(case.observation, device=args.device, seed=args.seed, progress=not args.quiet)
    nothing = _nothing_recovered(recon)
    if nothing:
        print(f"gradleak: {nothing}", file=sys.stderr)
        return EXIT_NOTHING_RECOVERED
    tok = case.tokenizer
    _text_report(Path(args.out), case.observation, recon, case.truth.inputs, tok,
                 text_baselines(case.observation, case.truth.inputs, tok, seed=args.seed), records=case.records,
                 seed=args.seed, device=args.device, title=f"{attack_name} on {args.text_model}, {args.records} "
                 "private records", text_info={"tokenizer": tok.name, "model": args.text_model})
    return 0


def _text_report(out: Path, obs: Any, recon: Any, truth_ids: Any, tok: Any, baselines: dict[str, Any], *,
                 records: list[Any] | None = None, seed: int | None, device: str, title: str,
                 text_info: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Score a text reconstruction against the true token ids beside the attacker's ``baselines`` (the guesses
    from the leaked token bag), write ``metrics.json`` (its ``text`` key) and ``sentences.html``, and print each
    record's truth and recovery, the means and the verdict. ``demo --text`` and ``attack`` both end here.
    ``records`` carry the secrets to look for (a capture's truth file has none: its decoded text stands in)."""
    from gradleak.baselines import Margins
    from gradleak.report.files import write_report
    from gradleak.report.text import write_text_report
    from gradleak.text.corpus import Record
    from gradleak.text.metrics import score_text

    margin = Margins().rouge1
    scores = score_text(recon.inputs, truth_ids, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                        records=records).with_baselines(baselines, margin)
    means = scores.means()
    write_report(out, obs, recon, None, None, seed=seed, device=device,
                 extra={**(extra or {}),
                        "text": {"mean": means, "recovered": scores.recovered_text, "truth": scores.true_text,
                                 "exact": scores.exact, "secrets_found": scores.secrets_found,
                                 "secrets_total": scores.secrets_total, "assignment": scores.assignment,
                                 "baselines": scores.baselines, "baseline_means": scores.baseline_means(),
                                 "leaked": scores.leaked, "margin_rouge1": margin, **(text_info or {})}})
    strip = {tok.pad_id, tok.eos_id}
    truth_rows = [[t for t in row if t not in strip] for row in truth_ids.tolist()]
    rec_rows = recon.inputs.tolist()
    matched = [[t for t in rec_rows[j] if t not in strip] if j >= 0 else [] for j in scores.assignment]
    html = write_text_report(out / "sentences.html", records or [Record(t) for t in scores.true_text], truth_rows,
                             matched, scores, tok, title)
    for i, (truth, got) in enumerate(zip(scores.true_text, scores.recovered_text)):
        mark = "exact" if scores.exact[i] else f"ROUGE-1 {scores.rouge1[i]:.2f}"
        secrets = f", secrets {scores.secrets_found[i]}/{scores.secrets_total[i]}" if records is not None else ""
        print(f"[{i}] truth:     {truth}\n    recovered: {got}\n    ({mark}{secrets})")
    secrets = means["secrets_recovered"]
    print(f"{recon.attack}: ROUGE-1 {means['rouge1']:.3f}  ROUGE-2 {means['rouge2']:.3f}  exact "
          f"{means['exact']:.2f}  secrets recovered {'-' if secrets is None else f'{secrets:.2f}'}  "
          f"({recon.wall_time_s:.1f} s)")
    best = max(scores.baseline_means().items(), key=lambda kv: kv[1]["rouge1"])
    leaked = sum(scores.leaked or [])
    print(f"verdict: {f'{leaked}/{len(scores.exact)} records leaked' if leaked else 'no leak'} (best guess: "
          f"{best[0]}, ROUGE-1 {best[1]['rouge1']:.3f}, ROUGE-2 {best[1]['rouge2']:.3f}; margin "
          f"{margin:g} ROUGE-1)")
    print(f"report: {html}, {out / 'metrics.json'}")


def _check_experiment_memory(config: Any) -> None:
    """Refuse, before the victim is built, a run whose batch and model cannot fit in the memory available."""
    from gradleak.config import check_attack_settings
    from gradleak.memory import check_memory, run_bytes
    from gradleak.model_spec import ModelSpec

    batch = len(config.indices) or config.batch_size
    channels = config.channels or 3
    attack = check_attack_settings(config.attack, config.attack_kwargs, "attack_kwargs")
    restarts = max(1, int(getattr(attack, "restarts", 1) or 1))
    elements = restarts * batch * channels * config.image_size ** 2
    spec = ModelSpec(config.model, {"in_channels": channels, "num_classes": config.num_classes or 100,
                                    "image_size": config.image_size, **config.model_kwargs})
    try:
        params = spec.count_parameters() or 0
    except GradleakError:
        params = 0  # a bad model setting is reported where the model is built, with its own message
    check_memory(run_bytes(elements, params),
                 f"a batch of {batch} {channels}x{config.image_size}x{config.image_size} images ({restarts} "
                 f"restarts) and a {params}-parameter model")


def cmd_demo(args: argparse.Namespace) -> int:
    from gradleak.experiment import run_experiment

    if args.text:
        return cmd_demo_text(args)
    wrong = _given(args, _TEXT_ONLY)
    if wrong:
        raise ConfigError(f"{wrong[0]} applies only with --text")

    if args.indices is None and args.batch_size == 1:
        args.indices = "0"  # the first bundled image (a face by default), so the demo is the same everywhere

    config = _experiment_config(args)
    _check_experiment_memory(config)
    result = run_experiment(config, out=args.out, progress=not args.quiet)
    _print_summary(result.metrics, Path(args.out))
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from gradleak.capture import save_capture, save_truth
    from gradleak.experiment import make_victim
    from gradleak.outputs import check_distinct, check_new_file

    path = check_new_file(args.out, "--out", force=args.force)
    truth_path = Path(args.truth) if args.truth else path.with_name(path.stem + ".truth.safetensors")
    check_new_file(truth_path, "--truth", force=args.force)
    check_distinct({"--out": path, "--truth": truth_path})
    config = _experiment_config(args)
    _check_experiment_memory(config)
    obs, truth = make_victim(config)
    path = save_capture(obs, path, force=True)
    save_truth(truth, truth_path, capture=obs)
    print(f"capture: {path} ({obs.update_kind}, batch {obs.batch_size}, model {obs.model_spec.name})")
    print(f"ground truth (keep it away from the attacker): {truth_path}")
    return 0


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


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _model_spec_from_args(args: argparse.Namespace) -> Any:
    from gradleak.limits import read_json_file
    from gradleak.model_spec import ModelSpec, trust_model

    source, kwargs = args.model, parse_assignments(args.model_arg, "--model-arg")
    if source.startswith("hf:"):
        if not args.model_config:
            raise ConfigError("hf: models need --model-config (the model's config.json)")
        config = read_json_file(args.model_config, error=ConfigError)  # depth-bounded: the file is a stranger's
        if not isinstance(config, dict):
            raise ConfigError(f"{args.model_config}: a config must be a JSON object")
        config.pop("model_type", None)
        return ModelSpec(source[3:], {"config": {**config, **kwargs}, "head": args.hf_head}, source="huggingface")
    if ":" in source:
        trust_model(source.rsplit(":", 1)[0])  # named on the command line: the user trusts it
        return ModelSpec(source, kwargs, source="import", trusted=True)
    return ModelSpec(source, kwargs)


def _observation_from_args(args: argparse.Namespace) -> Any:
    """A capture, or an Observation from the user's own model source, weights and update files."""
    from gradleak.capture import load_capture
    from gradleak.inputs import FeatureInput, ImageInput, TokenInput
    from gradleak.observation import LocalTraining
    from gradleak.tasks import Task
    from gradleak.tensor_files import observation_from_files

    own = [f for f in ("model", "weights", "update") if getattr(args, f) is not None]
    if args.capture is not None:
        if own:
            raise ConfigError(f"give a capture file or --model/--weights/--update, not both (got --{own[0]})")
        return load_capture(args.capture, trust=args.trust_model)
    if len(own) != 3:
        raise ConfigError("without a capture file, give --model, --weights and --update (and the input description)")
    spec = _model_spec_from_args(args)
    if args.input_kind == "image":
        if not args.input_shape:
            raise ConfigError("image inputs need --input-shape C,H,W")
        try:
            shape = tuple(int(t) for t in args.input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape expects C,H,W integers, got {args.input_shape!r}") from None
        if len(shape) != 3:
            raise ConfigError(f"--input-shape expects C,H,W, got {args.input_shape!r}")
        c = shape[0]
        inputs: Any = ImageInput(shape, _floats(args.mean, "--mean") or (0.0,) * c,  # type: ignore[arg-type]
                                 _floats(args.std, "--std") or (1.0,) * c)
    elif args.input_kind == "features":
        if args.num_features is None:
            raise ConfigError("feature inputs need --num-features")
        inputs = FeatureInput(args.num_features, _floats(args.mean, "--mean"), _floats(args.std, "--std"))
    else:
        if args.seq_len is None or args.vocab_size is None:
            raise ConfigError("token inputs need --seq-len and --vocab-size")
        inputs = TokenInput(args.seq_len, args.vocab_size, args.pad_token_id)
    kind = args.task or ("causal_lm" if spec.source == "huggingface" and args.hf_head == "causal_lm" else
                         "masked_lm" if spec.source == "huggingface" and args.hf_head == "masked_lm" else
                         "classification")
    if kind == "classification" and args.num_classes is None:
        raise ConfigError("a classification task needs --num-classes")
    task = Task(kind, args.num_classes if kind == "classification" else None)  # type: ignore[arg-type]
    local = None
    if args.update_kind == "weight_delta":
        if args.local_lr is None:
            raise ConfigError("a weight delta needs --local-lr (and --local-steps, --local-batch-size)")
        local = LocalTraining(args.local_steps, args.local_lr, args.local_batch_size or args.batch_size)
    return observation_from_files(spec, args.weights, args.update, inputs=inputs, task=task,
                                  batch_size=args.batch_size, update_kind=args.update_kind, local_training=local,
                                  model_mode=args.model_mode)


def cmd_inspect(args: argparse.Namespace) -> int:
    from gradleak.inspection import describe_file

    summary = describe_file(args.file)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if isinstance(value, list):
                print(f"{key}:")
                for item in value:
                    print(f"  {item}")
            else:
                print(f"{key}: {value}")
    return 0


def _check_token_labels(obs: Any) -> None:
    """Leaked labels of a language-modelling capture are token ids shaped like the batch: each in the vocabulary,
    or -100 (no target). The Observation checks classification labels only; a causal-LM capture's labels reach
    the attack's loss (an index out of range there is a traceback from inside PyTorch)."""
    labels, inputs = obs.labels, obs.inputs
    if labels is None or obs.task.kind == "classification" or getattr(inputs, "kind", None) != "tokens":
        return
    shape = (obs.batch_size, inputs.seq_len)
    if tuple(labels.shape) != shape:
        raise ConfigError(f"the capture's labels have shape {tuple(labels.shape)}; {obs.task.kind} labels are token "
                          f"ids shaped {shape}")
    ids = labels[labels != -100]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= inputs.vocab_size):
        worst = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ConfigError(f"the capture's labels hold token id {worst}; {obs.task.kind} labels must lie in "
                          f"[0, {inputs.vocab_size}) or be -100")


def _check_observation_memory(obs: Any, attack: Any, device: str) -> None:
    """Refuse, before the attack starts, an observation whose batch and model cannot fit in the memory available
    (with --allow-large the size bounds no longer do)."""
    import math

    from gradleak.memory import check_memory, run_bytes

    if not str(device).startswith("cpu"):
        return  # the accelerator's memory: its allocator's error is caught and named at the top level
    restarts = max(1, int(getattr(attack, "restarts", 1) or 1))
    elements = restarts * obs.batch_size * math.prod(obs.input_shape)
    params = sum(int(v.numel()) for v in obs.weights.values())
    check_memory(run_bytes(elements, params), f"attacking a batch of {obs.batch_size} inputs of shape "
                 f"{tuple(obs.input_shape)} ({restarts} restarts) on a {params}-parameter model")


def _margins(args: argparse.Namespace) -> Any:
    import math

    from gradleak.baselines import Margins

    for flag, value in (("--margin-psnr", args.margin_psnr), ("--margin-ssim", args.margin_ssim)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{flag} must be a finite number >= 0, got {value}")
    return Margins(psnr_db=args.margin_psnr, ssim=args.margin_ssim)


def _attacker_guesses(args: argparse.Namespace, obs: Any) -> tuple[Any, Any]:
    """What the attacker could produce without the update, for images: mid-gray, the capture's mean image and,
    with ``--public``, the images of a public set (the user's promise: none of them is in the private batch)."""
    from gradleak.baselines import ImageGuesses
    from gradleak.data import load_dataset

    if obs.inputs.kind != "image":
        return None, None
    if not args.public:
        return ImageGuesses.of(obs.inputs), None
    c, h, w = obs.inputs.shape
    if h != w:
        raise ConfigError(f"--public: the capture's images are {h}x{w}; public sets are loaded square")
    ds = load_dataset(args.public, size=h, channels=c)
    return ImageGuesses.of(obs.inputs, ds.images, seed=args.seed), ds.labels


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public", default=None, metavar="DATASET",
                   help="the attacker's public images, disjoint from the private batch (bundled name or FORMAT:PATH): "
                   "their best match is a baseline, and they make the re-identification line-up")
    p.add_argument("--margin-psnr", type=float, default=3.0, metavar="DB",
                   help="a sample is leaked when it beats the best guess by this PSNR (default 3 dB) ...")
    p.add_argument("--margin-ssim", type=float, default=0.1,
                   help="... and by this SSIM (default 0.1)")


def cmd_attack(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from gradleak.capture import load_truth
    from gradleak.config import check_attack_settings
    from gradleak.limits import allow_large
    from gradleak.metrics import score
    from gradleak.report.files import write_report

    attack = check_attack_settings(args.attack, _attack_kwargs(args), "--attack-arg")  # before reading files
    with allow_large() if args.allow_large else nullcontext():
        obs = _observation_from_args(args)
        truth = load_truth(args.truth, capture=obs) if args.truth else None
    _check_token_labels(obs)
    if obs.inputs.kind == "tokens":
        attack = _text_attack(args.attack, _attack_kwargs(args))
        wrong = [f for f in ("iterations", "restarts", "checkpoint") if getattr(args, f) is not None]
        if wrong:
            raise ConfigError(f"{_flag(wrong[0])} does not apply to text attacks (give their settings with "
                              "--attack-arg)")
    _check_observation_memory(obs, attack, args.device)
    recon = attack.reconstruct(obs, device=args.device, seed=args.seed, progress=not args.quiet)
    nothing = _nothing_recovered(recon)
    if nothing:
        print(f"gradleak: {nothing}", file=sys.stderr)
        return EXIT_NOTHING_RECOVERED
    out = Path(args.out)
    source = {"capture": str(args.capture)} if args.capture else \
        {"weights": str(args.weights), "update": str(args.update), "model": args.model}
    if obs.inputs.kind == "tokens":
        _attack_text_result(args, out, obs, recon, truth, source)
        return 0
    scores = None
    if truth is not None:
        guesses, public_labels = _attacker_guesses(args, obs)
        scores = score(recon.inputs, recon.labels, truth, guesses=guesses, public_labels=public_labels,
                       margins=_margins(args))
    metrics = write_report(out, obs, recon, scores, truth, seed=args.seed, device=args.device, extra=source)
    _print_summary(metrics, out)
    return 0


class _TokenIds:
    """Stands in for a tokenizer the attacker cannot rebuild: a record "decodes" to its token ids, so that it is
    shown, and ROUGE counts ids (the bag baselines are scored the same way)."""

    def decode(self, ids: list[int]) -> str:
        return "ids " + " ".join(str(i) for i in ids)


def capture_tokenizer(obs: Any) -> tuple[Any, str | None]:
    """The tokenizer a text capture names, rebuilt by name (``text.tokenizer.tokenizer_named``) and kept only when
    its vocabulary fits the model's; otherwise ``(None, why)``: the caller shows token ids."""
    from gradleak.text.tokenizer import tokenizer_named

    tok, why = tokenizer_named(getattr(obs.inputs, "tokenizer", None))
    if tok is not None and tok.vocab_size > obs.inputs.vocab_size:
        return None, (f"tokenizer {tok.name!r} has {tok.vocab_size} tokens, more than the model's vocabulary "
                      f"({obs.inputs.vocab_size})")
    return tok, why


def _attack_text_result(args: argparse.Namespace, out: Path, obs: Any, recon: Any, truth: Any,
                        source: dict[str, Any]) -> None:
    """``attack`` on token sequences: decode the records recovered with the capture's tokenizer (token ids when
    it is unknown), and with ``--truth`` score them as ``demo --text`` does."""
    from gradleak.outputs import clear_stale
    from gradleak.report.files import write_report
    from gradleak.text.metrics import text_baselines
    from gradleak.text.tokenizer import Tokenizer

    tok, unknown = capture_tokenizer(obs)
    if tok is None:
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else -1
        config = obs.model_spec.kwargs.get("config") if obs.model_spec.source == "huggingface" else None
        eos = config.get("eos_token_id") if isinstance(config, dict) else None  # where records end: public
        tok = Tokenizer("unknown (token ids)", _TokenIds(), obs.inputs.vocab_size, pad,
                        eos if isinstance(eos, int) and not isinstance(eos, bool) else pad)
        print(f"gradleak: tokenizer unknown: {unknown}; records are shown{' and scored' if truth else ''} as token "
              "ids")
    info = {"tokenizer": getattr(obs.inputs, "tokenizer", None), "tokenizer_known": unknown is None}
    found = recon.details.get("sequences_found") if isinstance(recon.details, dict) else None
    if found is not None:
        print(f"{recon.attack}: {found} sequences found for a batch of {obs.batch_size} ({recon.wall_time_s:.1f} s)")
    if truth is not None:
        baselines = text_baselines(obs, truth.inputs, tok, seed=args.seed, public_text=unknown is None)
        _text_report(out, obs, recon, truth.inputs, tok, baselines, seed=args.seed, device=args.device,
                     title=f"{recon.attack} on {source.get('capture') or source.get('update')}",
                     text_info=info, extra=source)
        return
    strip = {tok.pad_id, tok.eos_id}
    rows = [[t for t in row if t not in strip] for row in recon.inputs.tolist()]
    decoded = [tok.decode(r) for r in rows]
    write_report(out, obs, recon, None, None, seed=args.seed, device=args.device,
                 extra={**source, "text": {"recovered": decoded, **info}})
    clear_stale(out, ("sentences.html",))  # written with --truth only: an earlier run's must not stand beside
    for i, text in enumerate(decoded):
        print(f"[{i}] recovered: {text}")
    print("no --truth: records not scored (give the truth file to score them and write sentences.html)")
    _print_written(out, ("metrics.json", "reconstruction.safetensors"))


def cmd_list(args: argparse.Namespace) -> int:
    from gradleak.attacks import ATTACKS, LABEL_RULES
    from gradleak.attacks.objectives import OBJECTIVES
    from gradleak.attacks.priors import PRIORS
    from gradleak.data import DATASETS, FORMATS
    from gradleak.defenses import DEFENSES
    from gradleak.models import MODELS

    listing = {
        "models": MODELS.names(), "datasets": DATASETS.names(), "data formats": sorted(FORMATS),
        "attacks": ATTACKS.names(), "label rules": LABEL_RULES.names(), "objectives": OBJECTIVES.names(),
        "priors": PRIORS.names(), "defenses": DEFENSES.names(),
    }
    support = {name: {"inputs": sorted(getattr(ATTACKS.get(name), "input_kinds", ())),
                      "tasks": sorted(getattr(ATTACKS.get(name), "tasks", ()))} for name in ATTACKS.names()}
    if args.json:
        print(json.dumps({**listing, "attack support": support}, indent=2))
    else:
        for key, names in listing.items():
            print(f"{key:>12}: {', '.join(names)}")
        from gradleak.inputs import INPUT_KINDS
        from gradleak.tasks import TASK_KINDS

        columns = [*INPUT_KINDS, *TASK_KINDS]
        print("\nwhich attack handles what (x = yes):")
        print(f"{'attack':>16}  " + "  ".join(f"{c:>14}" for c in columns))
        for name, s in support.items():
            marks = ["x" if c in s["inputs"] or c in s["tasks"] else "-" for c in columns]
            print(f"{name:>16}  " + "  ".join(f"{m:>14}" for m in marks))
    return 0


def cmd_fl_audit(args: argparse.Namespace) -> int:
    import dataclasses

    from gradleak.config import load_audit_config
    from gradleak.fl.audit import audit
    from gradleak.fl.simulation import AuditSettings, FederationConfig, run_federation

    fed, settings = load_audit_config(args.config) if args.config else (FederationConfig(), AuditSettings())
    from gradleak.model_spec import trust_model

    trust_model(*args.trust_model)
    if args.model and ":" in args.model:
        trust_model(args.model)  # named on the command line: the user trusts that factory
    fed_over = {k: v for k, v in {"num_clients": args.clients, "rounds": args.rounds, "protocol": args.protocol,
                                  "dataset": args.dataset, "model": args.model,
                                  "filter_threshold": args.filter_threshold,
                                  "filter_action": args.filter_action}.items() if v is not None}
    if args.secure_aggregation:
        fed_over["secure_aggregation"] = True
    fed = dataclasses.replace(fed, **fed_over)
    over: dict[str, Any] = {k: v for k, v in {"attack": args.attack, "out": args.out,
                                              "aggregate_as": args.aggregate_as}.items() if v is not None}
    if args.iterations is not None:
        over["attack_kwargs"] = {**settings.attack_kwargs, "iterations": args.iterations}
    settings = dataclasses.replace(settings, **over)
    from gradleak.config import check_attack_settings
    from gradleak.devices import check_device
    from gradleak.outputs import check_out_dir

    # every audit setting is checked before the federation runs (minutes of Flower for nothing otherwise)
    check_attack_settings(settings.attack, settings.attack_kwargs, "[audit] attack_kwargs")
    check_device(settings.device, "[audit] device")
    check_out_dir(settings.out, "[audit] out")
    print(f"federation: {fed.num_clients} {fed.protocol} clients on {fed.dataset}, {fed.rounds} rounds, "
          f"secure aggregation {'on (SecAgg+)' if fed.secure_aggregation else 'off'}")
    run = run_federation(fed, verbose=not args.quiet and args.verbose)
    for r in run.filter_rounds:
        shown = ", ".join(f"node {node}: {score:.1f} dB {action}" for node, (score, action) in r.decisions.items())
        print(f"round {r.round} filter (threshold {fed.filter_threshold:g} dB): {shown}")
    report = audit(run.updates, run.target, settings.attack, settings.attack_kwargs, truth=run.truth,
                   public=run.public_images(), aggregate_as=settings.aggregate_as,
                   leak_threshold_db=settings.leak_threshold_db,
                   rounds=settings.rounds or None, device=settings.device, seed=settings.seed, out=settings.out,
                   progress=False)
    for row in report.rows:
        best = "n/a" if row["psnr_best"] is None else f"{row['psnr_best']:.1f} dB"
        guess = "" if row.get("best_baseline_psnr") is None else f" (best guess {row['best_baseline_psnr']:.1f} dB)"
        verdict = "" if row["leaked"] is None else (f": leaked {row['leaked']:.0%} of its samples" if row["leaked"]
                                                     else ": no leak")
        print(f"round {row['round']} {row['source']}: best PSNR {best}{guess}{verdict}"
              f"{'  error: ' + row['error'] if row['error'] else ''}")
    _print_written(Path(settings.out), ("report.html", "audit.csv"))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from gradleak.config import load_sweep_config
    from gradleak.report.html import write_html
    from gradleak.sweep import run_sweep

    config = load_sweep_config(args.config, max_experiments=args.max_experiments)
    if args.out:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, out=args.out))

    def show(row: dict[str, Any]) -> None:
        if not args.quiet:
            psnr = row.get("psnr")
            print(f"  {row['key']} {row['status']}: " + (f"{psnr:.2f} dB" if psnr is not None else row["error"]))

    summary = run_sweep(config, address=args.address, retry_errors=args.retry_errors or None, on_result=show,
                        force=args.force)
    dupes = f" ({summary.duplicates} repeated grid points run once)" if summary.duplicates else ""
    print(f"sweep: {summary.total} experiments{dupes}, {summary.skipped} already done, {summary.ran} run "
          f"({summary.failed} failed) in {summary.wall_time_s:.1f} s; table: {summary.table}")
    if not args.no_report and summary.table.exists():
        print(f"report: {write_html(summary.table, config=_read_text(args.config, 'sweep config'))}")
    if summary.errors:
        print(f"gradleak: error: {summary.errors} of {summary.total} experiments failed (see the table's error "
              "column; --retry-errors runs them again)", file=sys.stderr)
        return 1
    return 0


def _read_text(path: str, flag: str) -> str:
    """A small UTF-8 text file the user named (a config shown in a report); every failure is one line."""
    from gradleak.config import MAX_CONFIG_BYTES

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{flag} {path}: no such file" if not file.exists() else f"{flag} {path}: not a file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{flag} {path}: above the {MAX_CONFIG_BYTES}-byte limit of a config file")
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{flag} {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None


def cmd_report(args: argparse.Namespace) -> int:
    from gradleak.report.html import write_html

    config = _read_text(args.config, "--config") if args.config else None
    print(f"report: {write_html(args.source, args.out, config=config)}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from gradleak.split.defenses import SplitDefense
    from gradleak.split.run import check_split_settings, run_split

    check_split_settings(args.image_size, args.cut, args.steps, args.observe)  # before the defense's checks too
    defense = SplitDefense(args.smashed_noise, args.nopeek, args.gradient_noise)
    metrics = run_split(args.out, args.dataset, args.image_size, args.cut, args.steps, args.observe,
                        args.positive_class, defense, args.seed)
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradleak", description="Gradient inversion: attacks, defenses, audits.",
        epilog="exit status: 0 done; 1 some sweep experiments failed (see the table); 2 bad input, or a run the "
        "machine's memory cannot hold (one line on stderr, nothing run); 3 the attack ran and recovered nothing "
        "(DAGER found no token sequence: one line on stderr, no report written, so that a script never takes an "
        "empty reconstruction for a result)")
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
    demo.set_defaults(func=cmd_demo)

    cap = sub.add_parser("capture", help="simulate a victim and write a capture file",
                         description="Simulate a client's update and save what the server sees (safetensors).")
    _victim_args(cap, dataset="faces", num_classes=None)
    _defense_args(cap)
    _common(cap)
    cap.add_argument("--out", default="capture.safetensors", help="capture file to write")
    cap.add_argument("--truth", default=None, help="ground-truth file (default: beside --out, .truth.safetensors)")
    cap.add_argument("--force", action="store_true", help="overwrite an existing capture and truth file")
    cap.set_defaults(func=cmd_capture)

    att = sub.add_parser("attack", help="attack a capture (or your own model, weights and update files)",
                         description="Reconstruct inputs and labels from a capture, or from your own files "
                         "(--model, --weights, --update and the input description); score them if --truth is given.")
    att.add_argument("capture", nargs="?", default=None,
                     help="capture file (.safetensors) written by `gradleak capture` or `gradleak.record`")
    att.add_argument("--truth", default=None, help="ground-truth file, to score the reconstruction")
    _baseline_args(att)
    _own_files_args(att)
    _attack_args(att, attack="idlg")
    _common(att, out_default="out/attack")
    att.set_defaults(func=cmd_attack)

    dfd = sub.add_parser("defend", help="measure a defense's price: test accuracy when trained with it, epsilon",
                         description="Train a model with a defense on a bundled dataset (short fixed schedule) and "
                         "report its test accuracy beside the undefended baseline, and epsilon where it has one.")
    dfd.add_argument("--defense", required=True, help="defense name (see `gradleak list`)")
    dfd.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="defense setting, repeatable")
    dfd.add_argument("--dataset", default="digits", help="bundled dataset to train on (default digits)")
    dfd.add_argument("--image-size", type=int, default=32)
    dfd.add_argument("--allow-large", action="store_true", help="lift the bounds on image and dataset size")
    dfd.add_argument("--model", default="lenet")
    dfd.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model setting, repeatable")
    _utility_args(dfd)
    _common(dfd)
    dfd.add_argument("--out", default=None, help="folder for utility.json (optional)")
    dfd.set_defaults(func=cmd_defend)

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
    trd.set_defaults(func=cmd_tradeoff)

    ins = sub.add_parser("inspect", help="show what a capture, truth or tensor file holds, without attacking",
                         description="Print the model, input description, task, update and what leaked in a "
                         "capture; the tensors of a weights or gradient file. Runs no model code.")
    ins.add_argument("file", help="capture, truth, safetensors or PyTorch (weights_only) file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=cmd_inspect)

    lst = sub.add_parser("list", help="list registered models, datasets, attacks, objectives and priors")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

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
    fla.set_defaults(func=cmd_fl_audit)

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
    swp.set_defaults(func=cmd_sweep)

    rep = sub.add_parser("report", help="write a self-contained HTML report",
                         description="From a sweep results table (.csv/.parquet), a run folder (metrics.json) or an "
                         "audit folder (audit.json), write one HTML file with every image embedded.")
    rep.add_argument("source", help="results table, run folder or audit folder")
    rep.add_argument("--out", default=None, help="HTML file (default: report.html beside the source)")
    rep.add_argument("--config", default=None, help="config file to include in the report")
    rep.set_defaults(func=cmd_report)

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
    spl.set_defaults(func=cmd_split)
    return parser


#: commands whose --out is a folder (capture writes a file, report an HTML file)
_FOLDER_OUT = ("demo", "attack", "tradeoff", "defend", "fl-audit", "audit", "sweep", "split")


def _check_paths_and_device(args: argparse.Namespace) -> None:
    """One-line errors before any work: a device this machine lacks, an --out folder that is a file."""
    from gradleak.devices import check_device
    from gradleak.outputs import check_out_dir

    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if args.command in _FOLDER_OUT and getattr(args, "out", None):
        check_out_dir(args.out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_paths_and_device(args)
        if getattr(args, "allow_large", False):  # lifts the bounds for the whole command
            from gradleak.limits import allow_large

            with allow_large():
                return int(args.func(args))
        return int(args.func(args))
    except GradleakError as exc:
        print(f"gradleak: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        from gradleak.memory import out_of_memory_message

        message = out_of_memory_message(exc)
        if message is None:
            raise
        print(f"gradleak: error: {message}", file=sys.stderr)
        return 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
