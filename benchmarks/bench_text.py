"""Text leakage: DAGER on a GPT-2-small-shaped decoder fine-tuned on bundled private records.

Prints, per case: batch size, model state, update (full / LoRA rank / defense), tokens in the batch against the
width of the first layer (the span test needs fewer), ROUGE-1/2, exact sequences, secrets recovered and wall time,
beside DAGER's published figure (Petrov et al. 2024, NeurIPS: full batches of up to 128 sequences recovered from
LLaMa-2 and GPT-2 with ROUGE-1/2 above 0.99).

    python benchmarks/bench_text.py                      # every case below (about 10-15 minutes on 2 cores)
    python benchmarks/bench_text.py --only batch         # one group: batch, trained, lora, noise
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.defenses import build_defense
from gradleak.text.metrics import score_text
from gradleak.text.victim import text_victim

PUBLISHED = "DAGER (Petrov et al. 2024): batches up to 128, ROUGE-1/2 > 0.99 (LLaMa-2 7B, width 4096)"


def run(label: str, group: str, batch: int, *, pretrain: int = 0, lora: int | None = None, defense=None,
        attack: str = "dager") -> None:
    t0 = time.perf_counter()
    case = text_victim("gpt2-small", batch, seed=0, pretrain_steps=pretrain, lora_rank=lora, defense=defense)
    setup = time.perf_counter() - t0
    tok = case.tokenizer
    tokens = int((case.truth.inputs != tok.pad_id).sum())
    t1 = time.perf_counter()
    try:
        recon = ATTACKS.build(attack).reconstruct(case.observation)
        s = score_text(recon.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                       records=case.records).means()
        note = "span covers the whole space" if recon.details.get("layer1_full") else ""
        row = (f"{s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | "
               f"{s['secrets_recovered']:.2f}")
    except Exception as exc:  # a failing case is a row of the table, not the end of the benchmark
        row, note = "- | - | - | -", f"{type(exc).__name__}: {str(exc)[:80]}"
    wall = time.perf_counter() - t1
    print(f"| {group} | {label} | {batch} | {tokens} / 768 | {row} | {wall:.1f} | {setup:.1f} | {note} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("batch", "trained", "lora", "noise"), default=None)
    parser.add_argument("--pretrain-steps", type=int, default=30, help="steps of the trained model (cached)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(PUBLISHED)
    print("| group | case | batch | tokens / width | ROUGE-1 | ROUGE-2 | exact | secrets | attack s | setup s | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if args.only in (None, "batch"):
        for batch in (8, 16, 32, 64):
            run("random init, full fine-tuning", "batch", batch)
    if args.only in (None, "trained"):
        run(f"trained {args.pretrain_steps} steps, full fine-tuning", "trained", 8, pretrain=args.pretrain_steps)
    if args.only in (None, "lora"):
        for rank, batch in ((8, 8), (256, 2), (256, 8)):
            run(f"LoRA r={rank} on c_attn (adapter update only)", "lora", batch, lora=rank)
    if args.only in (None, "noise"):
        for name, kwargs in (("quantization", {"kind": "fp16"}), ("quantization", {"kind": "int8"}),
                             ("gaussian", {"std": 1e-7}), ("gaussian", {"std": 1e-6}), ("gaussian", {"std": 1e-5}),
                             ("pruning", {"ratio": 0.5})):
            label = f"{name} {kwargs}"
            for attack in ("dager", "subspace") if "subspace" in ATTACKS else ("dager",):
                run(f"{label}, {attack}", "noise", 8, defense=build_defense(name, **kwargs), attack=attack)


if __name__ == "__main__":
    main()
