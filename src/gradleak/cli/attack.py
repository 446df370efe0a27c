"""``gradleak attack``: reconstruct inputs and labels from a capture, or from the user's own model, weights and
update files; with ``--truth``, score them beside what the attacker could guess without the update."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from gradleak.baselines import ImageGuesses
from gradleak.capture import load_truth
from gradleak.cli.checks import check_observation_memory, check_token_labels
from gradleak.cli.flags import attack_kwargs, flag_of, margins_from_args
from gradleak.cli.model_source import observation_from_args
from gradleak.cli.printing import nothing_recovered, print_summary, print_written
from gradleak.cli.status import NOTHING_RECOVERED
from gradleak.cli.text_results import TokenIds, capture_tokenizer, text_attack, text_report
from gradleak.config import check_attack_settings
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.limits import allow_large
from gradleak.metrics import score
from gradleak.outputs import clear_stale
from gradleak.report.files import write_report
from gradleak.text.metrics import text_baselines
from gradleak.text.tokenizer import Tokenizer


def run(args: argparse.Namespace) -> int:
    attack = check_attack_settings(args.attack, attack_kwargs(args), "--attack-arg")  # before reading files
    with allow_large() if args.allow_large else nullcontext():
        obs = observation_from_args(args)
        truth = load_truth(args.truth, capture=obs) if args.truth else None
    check_token_labels(obs)
    if args.tokenizer is not None and obs.inputs.kind != "tokens":
        raise ConfigError(f"--tokenizer decodes token sequences; this capture holds {obs.inputs.kind}")
    decoder = None
    if obs.inputs.kind == "tokens":
        decoder = capture_tokenizer(obs, args.tokenizer)  # a bad --tokenizer file is refused before the attack runs
        attack = text_attack(args.attack, attack_kwargs(args))
        wrong = [f for f in ("iterations", "restarts", "checkpoint") if getattr(args, f) is not None]
        if wrong:
            raise ConfigError(f"{flag_of(wrong[0])} does not apply to text attacks (give their settings with "
                              "--attack-arg)")
    check_observation_memory(obs, attack, args.device)
    recon = attack.reconstruct(obs, device=args.device, seed=args.seed, progress=not args.quiet)
    nothing = nothing_recovered(recon)
    if nothing:
        print(f"gradleak: {nothing}", file=sys.stderr)
        return NOTHING_RECOVERED
    out = Path(args.out)
    source = {"capture": str(args.capture)} if args.capture else \
        {"weights": str(args.weights), "update": str(args.update), "model": args.model}
    if obs.inputs.kind == "tokens":
        assert decoder is not None
        _attack_text_result(args, out, obs, recon, truth, source, decoder)
        return 0
    scores = None
    if truth is not None:
        guesses, public_labels = _attacker_guesses(args, obs)
        scores = score(recon.inputs, recon.labels, truth, guesses=guesses, public_labels=public_labels,
                       margins=margins_from_args(args))
    metrics = write_report(out, obs, recon, scores, truth, seed=args.seed, device=args.device, extra=source)
    print_summary(metrics, out)
    return 0


def _attacker_guesses(args: argparse.Namespace, obs: Any) -> tuple[Any, Any]:
    """What the attacker could produce without the update, for images: mid-gray, the capture's mean image and,
    with ``--public``, the images of a public set (the user's promise: none of them is in the private batch)."""
    if obs.inputs.kind != "image":
        return None, None
    if not args.public:
        return ImageGuesses.of(obs.inputs), None
    c, h, w = obs.inputs.shape
    if h != w:
        raise ConfigError(f"--public: the capture's images are {h}x{w}; public sets are loaded square")
    ds = load_dataset(args.public, size=h, channels=c)
    return ImageGuesses.of(obs.inputs, ds.images, seed=args.seed), ds.labels


def _attack_text_result(args: argparse.Namespace, out: Path, obs: Any, recon: Any, truth: Any,
                        source: dict[str, Any], decoder: tuple[Any, str | None]) -> None:
    """``attack`` on token sequences: decode the records recovered with the capture's tokenizer (``decoder``:
    it, or ``None`` and why; then token ids), and with ``--truth`` score them as ``demo --text`` does."""
    tok, unknown = decoder
    if tok is None:
        pad = obs.inputs.pad_token_id if obs.inputs.pad_token_id is not None else -1
        config = obs.model_spec.kwargs.get("config") if obs.model_spec.source == "huggingface" else None
        eos = config.get("eos_token_id") if isinstance(config, dict) else None  # where records end: public
        tok = Tokenizer("unknown (token ids)", TokenIds(), obs.inputs.vocab_size, pad,
                        eos if isinstance(eos, int) and not isinstance(eos, bool) else pad)
        print(f"gradleak: tokenizer unknown: {unknown}; records are shown{' and scored' if truth else ''} as token "
              "ids")
    info = {"tokenizer": getattr(obs.inputs, "tokenizer", None), "tokenizer_known": unknown is None}
    found = recon.details.get("sequences_found") if isinstance(recon.details, dict) else None
    if found is not None:
        print(f"{recon.attack}: {found} sequences found for a batch of {obs.batch_size} ({recon.wall_time_s:.1f} s)")
    if truth is not None:
        baselines = text_baselines(obs, truth.inputs, tok, seed=args.seed, public_text=unknown is None)
        text_report(out, obs, recon, truth.inputs, tok, baselines, seed=args.seed, device=args.device,
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
    print_written(out, ("metrics.json", "reconstruction.safetensors"))
