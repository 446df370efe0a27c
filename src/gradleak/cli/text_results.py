"""Text results shared by ``demo --text`` and ``attack`` on a token capture: the text attack checked to handle
token sequences, the capture's tokenizer (or token ids when it is unknown), and the scored report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradleak.attacks import ATTACKS
from gradleak.baselines import Margins
from gradleak.config import check_attack_settings
from gradleak.errors import ConfigError
from gradleak.report.files import write_report
from gradleak.report.text import write_text_report
from gradleak.text.corpus import Record
from gradleak.text.metrics import score_text
from gradleak.text.tokenizer import load_tokenizer_file, tokenizer_named, vocabulary_digest


def text_attack(name: str, kwargs: dict[str, Any]) -> Any:
    """Attack ``name`` built with ``kwargs`` after checking that it handles token sequences."""
    kinds = getattr(ATTACKS.get(name), "input_kinds", frozenset())
    if "tokens" not in kinds:
        text = [n for n in ATTACKS.names() if "tokens" in getattr(ATTACKS.get(n), "input_kinds", ())]
        raise ConfigError(f"--attack {name!r} does not handle token sequences; text attacks: {', '.join(text)}")
    return check_attack_settings(name, kwargs, "--attack-arg")


class TokenIds:
    """Stands in for a tokenizer the attacker cannot rebuild: a record "decodes" to its token ids, so that it is
    shown, and ROUGE counts ids (the bag baselines are scored the same way)."""

    def decode(self, ids: list[int]) -> str:
        return "ids " + " ".join(str(i) for i in ids)


def capture_tokenizer(obs: Any, path: str | None = None) -> tuple[Any, str | None]:
    """The tokenizer of a text capture: the user's file ``path`` (refused when its vocabulary digest differs
    from the one the capture carries), else the one it names, rebuilt by name (``text.tokenizer.tokenizer_named``);
    kept only when its vocabulary fits the model's; otherwise ``(None, why)``: the caller shows token ids."""
    if path is not None:
        tok, why = load_tokenizer_file(path, name=getattr(obs.inputs, "tokenizer", None)), None
        expected, got = obs.info.get("tokenizer_digest"), vocabulary_digest(tok)
        if isinstance(expected, str) and got != expected:
            raise ConfigError(f"--tokenizer {path}: its vocabulary (sha256 {str(got)[:12]}) is not the one the "
                              f"capture was recorded with (sha256 {expected[:12]})")
    else:
        tok, why = tokenizer_named(getattr(obs.inputs, "tokenizer", None))
    if tok is not None and tok.vocab_size > obs.inputs.vocab_size:
        return None, (f"tokenizer {tok.name!r} has {tok.vocab_size} tokens, more than the model's vocabulary "
                      f"({obs.inputs.vocab_size})")
    return tok, why


def text_report(out: Path, obs: Any, recon: Any, truth_ids: Any, tok: Any, baselines: dict[str, Any], *,
                records: list[Any] | None = None, seed: int | None, device: str, title: str,
                text_info: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Score a text reconstruction against the true token ids beside the attacker's ``baselines`` (the guesses
    from the leaked token bag), write ``metrics.json`` (its ``text`` key) and ``sentences.html``, and print each
    record's truth and recovery, the means and the verdict. ``demo --text`` and ``attack`` both end here.
    ``records`` carry the secrets to look for (a capture's truth file has none: its decoded text stands in)."""
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
