"""Text leakage: DAGER and the subspace attack on a GPT-2-small-shaped decoder fine-tuned on bundled private records.

Prints, per case: batch size, model state, update (full / LoRA rank / defense), tokens in the batch against the
dimension the span test works in (model width 768, or the LoRA rank r), ROUGE-1/2, exact sequences, secrets
recovered and wall time. Groups:

- ``batch``: random init, full fine-tuning, batch 8-64. DAGER's test needs fewer tokens in the batch than the
  width; past it the span is the whole space (the same limit DAGER states: its reference code zeroes the score
  of every run with more batch tokens than the embedding dimension).
- ``trained``: the same on a model pre-trained here.
- ``lora``: only a LoRA adapter (rank r on c_attn) is shared; fresh (B = 0: the B test through A) and after
  ``--lora-steps`` adapter steps (B != 0: dL/dA spans the inputs); both need fewer tokens than r.
- ``realistic`` (issue 23): a user's train-mode step on held-out public sentences (license texts Debian ships,
  not in the pre-training text; 10-40 tokens, each ending with the end-of-sequence token), GPT-2-small and
  BERT-base shapes (width 768), random or pre-trained here (``pretrain_public``: 30 AdamW steps of 4 public
  sentences; cached), dropout 0 and 0.1, batch 1-64; the cells to run are chosen with ``--cells`` (the others
  print "not run").
- ``defense``: one table per defense setting (none, Gaussian noise, pruning, fp16, int8, DP-SGD through Opacus
  with epsilon), DAGER and the subspace attack on the same update, and the utility price (perplexity of a
  gpt2-tiny decoder fine-tuned 30 steps with the defense, ``text_defense_cost``).

Measured, ``--only batch`` (2 CPU cores shared with other jobs, load about 4): batch 8 (332 tokens) and 16 (640):
ROUGE-1/2 1.000, all exact, secrets 1.00, 75.9 s and 150.1 s; batch 32 (1289 tokens) and 64 (2568): 0 / 0 / 0,
secrets 0.00, stopped after 46.1 s and 18.4 s (layer-1 numerical rank 619 and 767: every bag token passes, too
many prefixes); records cut to 23 tokens at batch 32 (736 tokens) and to 11 at batch 64 (704): ROUGE-1/2 1.000,
all exact, secrets 0.72 and 0.31 of the whole records' (all of those inside the cut), 69.7 s and 59.3 s.

Measured (issue 23; 2 cores shared with four other jobs, load 6-7):

- ``--only noise``: DAGER with default settings, GPT-2-small, batch 1 (60 tokens) and 4 (170): Gaussian noise 1e-6
  and fp16 each ROUGE-1/2 1.000, exact 1.00, secrets 1.00, 21-35 s (before the largest-gap fallback: rank 768,
  all 0).
- ``--only dropout --batches 1 8`` / ``--batches 8 16 --models gpt2-small``: a recorded train-mode step, dropout
  0.1: GPT-2-small batch 1: 1.000 / 1.000, exact 1.00 (53 s; dropout 0: the same, 21 s); batch 8 (330 tokens):
  ROUGE-1 0.862, ROUGE-2 0.838, exact 0.00, secrets 0.80 (304 s; bag guess 0.155 / 0.000; dropout 0: 1.000, all
  exact, 62 s); bert-base batch 1: 1.000, exact (14 s).

Measured ``--only realistic --threads 1 --time-limit 300 --cells ...`` (issue 23; the whole table is in the README,
"Held-out public text"; one core a job, two or three jobs on 2 cores): GPT-2-small random, batch 8 / 16 (262 / 498
tokens): ROUGE-1/2 1.000, all exact, 23 s / 27 s; pre-trained 30 steps: 1.000 all exact (34 s) / 0.995, exact
0.94 (38 s; 0.240 and 0.12 before the within-prefix ranking); 100 steps: 1.000 (17 s) / 0.950, exact 0.62 (35 s).
Seed 1 (other sentences, another pre-training), batch 16: 1.000, all exact at 30 and 100 steps. Batch 32 of
10-24-token sentences (``--lengths 10 24``, 664 tokens): random exact (42 s), 30 steps 0.820 (exact 0.03), 100 steps
0.395. Dropout 0.1: batch 8 0.860 random, 0.313 trained; batch 16 0.052 / 0.035 (no leak). Past the width (batch 32 /
64 of 10-40 tokens, 949 / 1911 tokens): ``pursuit`` 0.142 / 0.145 random against the bag's 0.095 / 0.084, 0.033 /
0.021 trained (no leak). BERT-base: batch 1 exact (random, trained, dropout or not); batch 8 and above 0-0.19
(no leak), the assembly stopped at the time limit.

    python benchmarks/bench_text.py                      # every group (about 30 minutes on 2 shared cores)
    python benchmarks/bench_text.py --only defense       # one group: batch, trained, lora, defense, dropout, noise
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.defenses import build_defense
from gradleak.recorder import record
from gradleak.training_task import Task
from gradleak.text.corpus import Record, private_records, public_sentences
from gradleak.text.metrics import score_text, text_baselines
from gradleak.text.models import pretrain_public, text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import TextCase, encode_records, text_victim

PUBLISHED = """Published (Petrov et al. 2024, DAGER, NeurIPS): full batches up to 128 recovered with ROUGE-1/2 > 0.99
  (abstract; LLaMa-2 7B, width 4096). Its reference code (github.com/insait-institute/dager-gradient-inversion) runs
  GPT-2 (width 768) on CoLA, SST-2 and Rotten Tomatoes sentences; runs with more batch tokens than the embedding
  dimension get a best-effort rank cut-off, and its ablation scores them 0 without it; LoRA runs at r = 256 on a
  fine-tuned (B != 0) LLaMa-3.1-8B adapter. Per-batch GPT-2 figures (paper, Table 1) are not reproduced here.
  Our records are about 47 tokens: batch 32 (~1500 tokens) and 64 exceed GPT-2's 768, the limit DAGER has too.
Limit: the span test needs fewer batch tokens than the model's width (768 here); past it the layer-1 span is the
  whole space, every token passes, and nothing is recovered (rows 32 and 64); cut to 23 / 11 tokens they fit."""


def score(case, recon) -> dict:
    tok = case.tokenizer
    return score_text(recon.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                      records=case.records).means()


def attack_row(case, attack: str) -> tuple[str, str, float]:
    t1 = time.perf_counter()
    try:
        recon = ATTACKS.build(attack).reconstruct(case.observation)
        s = score(case, recon)
        note = "span is the whole space" if recon.details.get("layer1_full") else ""
        if recon.details.get("stopped"):
            note = f"layer-1 rank {recon.details.get('layer1_rank')}; stopped: {recon.details['stopped']}"
        if recon.details.get("layer1_test", "weight gradient") != "weight gradient":
            note = (note + "; " if note else "") + recon.details["layer1_test"]
        layer2 = recon.details.get("rank_decision", {}).get("layer2")
        if layer2 is not None:  # where DAGER cut layer 2's spectrum, and how clear that drop was
            note = (note + "; " if note else "") + (f"layer-2 rank {layer2['rank']} (drop {layer2['gap']:.3g}"
                                                     f"{', ambiguous' if layer2['ambiguous'] else ''})")
        row = f"{s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | {s['secrets_recovered']:.2f}"
    except Exception as exc:  # a failing case is a row of the table (nothing recovered), not the end of the run
        row, note = "0 | 0 | 0 | 0", f"{type(exc).__name__}: {str(exc)[:70]}"
    return row, note, time.perf_counter() - t1


def run(label: str, group: str, batch: int, *, pretrain: int = 0, lora: int | None = None, lora_steps: int = 0,
        defense=None, attacks: tuple[str, ...] = ("dager",), extra: str = "", max_len: int | None = None) -> None:
    t0 = time.perf_counter()
    case = text_victim("gpt2-small", batch, seed=0, pretrain_steps=pretrain, lora_rank=lora, lora_steps=lora_steps,
                       defense=defense, max_len=max_len)
    setup = time.perf_counter() - t0
    tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
    dim = lora if lora is not None else 768
    for attack in attacks:
        row, note, wall = attack_row(case, attack)
        if max_len is not None:  # secrets past the cut are not in the batch: the share any attack can reach
            tok = case.tokenizer
            ceiling = score_text(case.truth.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id,
                                 ignore_ids=(tok.eos_id,), records=case.records).means()["secrets_recovered"]
            note = (note + "; " if note else "") + f"secrets counted on whole records, {ceiling:.2f} inside the cut"
        print(f"| {group} | {label} | {attack} | {batch} | {tokens} / {dim} | {row} |{extra} {wall:.1f} | "
              f"{setup:.1f} | {note} |", flush=True)


def recorded_case(model: str, batch: int, *, dropout: float, seed: int = 0, max_len: int | None = None) -> TextCase:
    """A user's fine-tuning step recorded with ``gradleak.record``: the named model built from its config with
    every dropout rate at ``dropout`` (0.1: the transformers default), in train mode; GPT-2: causal LM on the
    records; BERT: sequence classification of them."""
    tok = load_tokenizer("bpe", 2048)
    records = private_records(batch, seed=1000 + seed)
    ids = encode_records(tok, records, max_len)
    ids[ids[:, -1] != tok.pad_id, -1] = tok.eos_id  # a cut record ends with its end-of-sequence token
    torch.manual_seed(seed)
    spec = text_model_spec(model, tok.vocab_size, tok.pad_id, eos_id=tok.eos_id, dropout=dropout, num_labels=4)
    net = spec.build().train()
    mask = (ids != tok.pad_id).long()
    encoder = model.startswith("bert")
    labels = torch.tensor([r.label for r in records]) if encoder else None
    task = Task.classification(4) if encoder else Task.causal_lm()
    with record(net, ids if labels is None else (ids, labels), tokenizer=tok) as rec:
        task.loss(net, ids, labels, mask).backward()
    assert rec.observation is not None and rec.truth is not None
    return TextCase(rec.observation, rec.truth, records, tok)


def realistic_case(model: str, batch: int, *, steps: int, dropout: float, seed: int = 0,
                   lengths: tuple[int, int] = (10, 40)) -> TextCase:
    """A user's train-mode step on ``batch`` held-out public sentences of ``lengths`` tokens (``public_sentences``:
    license texts not used in pre-training), each followed by the end-of-sequence token, recorded with
    ``gradleak.record`` on ``model`` built from its config, pre-trained ``steps`` AdamW steps on the public
    pre-training text (``pretrain_public``, cached; 0: random), every dropout rate at ``dropout``."""
    tok = load_tokenizer("bpe", 2048)
    pool = [s for s in public_sentences("heldout") if lengths[0] <= len(tok.encode(s)) <= lengths[1]]
    if len(pool) < batch:
        raise SystemExit(f"--lengths {lengths[0]} {lengths[1]}: only {len(pool)} held-out sentences, batch {batch}")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(pool), generator=g)[:batch].tolist()
    records = [Record(pool[i], (), k % 4) for k, i in enumerate(picks)]
    ids = encode_records(tok, records)
    spec = text_model_spec(model, tok.vocab_size, tok.pad_id, eos_id=tok.eos_id, dropout=dropout, num_labels=4)
    net = spec.build()
    net.load_state_dict(pretrain_public(spec, tok, steps=steps, seed=seed))
    net.train()
    mask = (ids != tok.pad_id).long()
    encoder = model.startswith("bert")
    labels = torch.tensor([r.label for r in records]) if encoder else None
    task = Task.classification(4) if encoder else Task.causal_lm()
    torch.manual_seed(seed)  # the dropout masks
    with record(net, ids if labels is None else (ids, labels), tokenizer=tok) as rec:
        task.loss(net, ids, labels, mask).backward()
    assert rec.observation is not None and rec.truth is not None
    return TextCase(rec.observation, rec.truth, records, tok)


#: the realistic grid: models (width 768), pre-training steps (0: random), dropout rates, batch sizes
REALISTIC = (("gpt2-small", "bert-base"), (0, 30), (0.0, 0.1), (1, 8, 16, 32, 64))
#: both models' width
WIDTH = 768


def realistic_cell(text: str) -> tuple[str, int, float, int]:
    """One ``--cells`` entry, MODEL:STEPS:DROPOUT:BATCH, checked against the grid (a cell outside it would never
    run)."""
    models, _, rates, batches = REALISTIC
    parts = text.split(":")
    try:
        model, steps, rate, batch = parts[0], int(parts[1]), float(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL:STEPS:DROPOUT:BATCH, e.g. gpt2-small:30:0.1:8")
    if len(parts) != 4 or model not in models or steps < 0 or rate not in rates or batch not in batches:
        raise argparse.ArgumentTypeError(f"{text!r}: MODEL one of {', '.join(models)}, STEPS >= 0, DROPOUT one of "
                                         f"{', '.join(f'{r:g}' for r in rates)}, BATCH one of "
                                         f"{', '.join(map(str, batches))}")
    return model, steps, rate, batch


def run_realistic(cells: set[tuple[str, int, float, int]] | None, time_limit: float,
                  lengths: tuple[int, int] = (10, 40), seed: int = 0, diagnosis: bool = False) -> None:
    """One row per cell of ``REALISTIC``; a cell not in ``cells`` prints "not run" (``None``: all)."""
    print(f"\nRealistic (issue 23): held-out public sentences (license texts not pre-trained on), "
          f"{lengths[0]}-{lengths[1]} tokens, a "
          "train-mode step recorded with gradleak.record; trained: pre-trained here on the other public text "
          f"(AdamW, batch 4); DAGER's time limit {time_limit:g} s; public text holds no secrets (column '-')")
    print("| model | pre-training steps | dropout | batch | attack | tokens / width | ROUGE-1 | ROUGE-2 | exact | "
          "secrets | bag R-1 / R-2 | attack s | setup s | note |")
    print("|" + " --- |" * 14)
    models, stages, rates, batches = REALISTIC
    stages = tuple(sorted(set(stages) | {c[1] for c in cells or ()}))  # other pre-training stages, when named
    for model in models:
        for steps in stages:
            for rate in rates:
                for batch in batches:
                    head = f"| {model} | {steps} | {rate:g} | {batch} |"
                    if cells is not None and (model, steps, rate, batch) not in cells:
                        print(f"{head} not run |" + " |" * 9, flush=True)
                        continue
                    t0 = time.perf_counter()
                    case = realistic_case(model, batch, steps=steps, dropout=rate, lengths=lengths, seed=seed)
                    setup = time.perf_counter() - t0
                    tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
                    # DAGER's span test needs fewer batch tokens than the width; past it a decoder's records
                    # come from the output layer (pursuit), an encoder's are out of reach
                    attack = "pursuit" if tokens >= WIDTH and not model.startswith("bert") else "dager"
                    t1 = time.perf_counter()
                    try:
                        recon = ATTACKS.build(attack, time_limit_s=time_limit).reconstruct(case.observation,
                                                                                           progress=True)
                        s = score(case, recon)
                        row = f"{s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | -"
                        d = recon.details
                        note = "; ".join(x for x in (
                            f"stopped: {d['stopped']}" if d.get("stopped") else "",
                            f"certified {d.get('records_certified')}",
                            f"beam cut at {len(d['beam_cut_at'])} positions" if d.get("beam_cut_at") else "",
                            (f"end fit: row left {d['record_ends']['row_left_after']:.2g}, "
                             f"{d['record_ends']['changed']} ends moved") if d.get("record_ends") else "",
                            f"last token: {d['last_token']}" if d.get("last_token") else "") if x)
                    except Exception as exc:  # a failing cell is a row (nothing recovered), not the end of the run
                        row, note = "0 | 0 | 0 | -", f"{type(exc).__name__}: {str(exc)[:70]}"
                    wall = time.perf_counter() - t1
                    try:
                        bag = bag_row(case)
                    except Exception as exc:  # the bag's guesses are a column, not the run
                        bag = type(exc).__name__
                    print(f"{head} {attack} | {tokens} / {WIDTH} | {row} | {bag} | {wall:.1f} | {setup:.1f} | "
                          f"{note[:160]} |",
                          flush=True)
                    if diagnosis and attack == "dager" and not model.startswith("bert"):
                        print(f"  {model} {steps} {rate:g} {batch}: {diagnose(case)}", flush=True)


def diagnose(case) -> str:
    """How DAGER's within-prefix layer-2 ranking (``dager._ranked``) sees the true records, the numbers its
    constants rest on: the share of positions where the true next token is the nearest of the batch's tokens
    given its true prefix (and among the nearest 3), and, for each record's whole prefix (nothing true follows),
    the range of its best ranked distance and of the gap to the second (``END_Z``, ``END_GAP``)."""
    from gradleak.attacks.text.dager import _ranked, architecture

    obs, tok = case.observation, case.tokenizer
    arch = architecture(obs.build_model("cpu").eval(), obs.gradient_estimate())
    span2 = arch.span(1)
    rows = [[int(v) for v in r if int(v) != tok.pad_id] for r in case.truth.inputs]
    bag = sorted({v for r in rows for v in r if v != tok.eos_id})
    first = top3 = n = 0
    ended: list[tuple[float, float]] = []
    true_d: list[float] = []
    wrong_d: list[float] = []
    for r in rows:
        body = r[:-1] if r and r[-1] == tok.eos_id else r
        for p in range(1, len(body) + 1):
            d = span2.distance(arch.second_inputs_extending([body[:p]], bag)).cpu()[0]
            z = _ranked(d[None])[0]
            order = torch.argsort(z).tolist()
            if p < len(body):
                k = order.index(bag.index(body[p]))
                n, first, top3 = n + 1, first + (k == 0), top3 + (k < 3)
                true_d.append(float(d[bag.index(body[p])]))
                wrong_d.append(float(torch.cat([d[:bag.index(body[p])], d[bag.index(body[p]) + 1:]]).min()))
            else:
                ended.append((float(z[order[0]]), float(z[order[1]] - z[order[0]])))
    best = [e[0] for e in ended]
    gap = [e[1] for e in ended]
    return (f"layer-2 distance of true steps {min(true_d):.1e}..{max(true_d):.1e}, of the nearest wrong token "
            f"{min(wrong_d):.1e}..{max(wrong_d):.1e}; within-prefix ranking: true next token nearest at "
            f"{first / max(n, 1):.1%} of {n} positions (nearest 3: {top3 / max(n, 1):.1%}); whole records: best "
            f"{min(best):.2f}..{max(best):.2f}, gap {min(gap):.2f}..{max(gap):.2f}")


def bag_row(case) -> str:
    """The best guess from the leaked token bag (random draws, the bag by public frequency): ROUGE-1/2."""
    tok = case.tokenizer
    guesses = text_baselines(case.observation, case.truth.inputs, tok)
    means = [{k: sum(v) / max(len(v), 1) for k, v in g.items()} for g in guesses.values()]
    best = max(means, key=lambda m: m.get("rouge1", 0.0), default=None)
    return "-" if best is None else f"{best.get('rouge1', 0):.3f} / {best.get('rouge2', 0):.3f}"


def run_recorded(label: str, group: str, model: str, batch: int, *, dropout: float,
                 max_len: int | None = None, attack: str = "dager") -> None:
    t0 = time.perf_counter()
    case = recorded_case(model, batch, dropout=dropout, max_len=max_len)
    setup = time.perf_counter() - t0
    tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
    row, note, wall = attack_row(case, attack)
    try:
        bag = bag_row(case)
    except Exception as exc:  # the bag's guesses are a column, not the run
        bag = f"{type(exc).__name__}"
    width = case.observation.build_model().config.hidden_size
    print(f"| {group} | {model} {label} | {attack} | {batch} | {tokens} / {width} | {row} | {bag} | {wall:.1f} | "
          f"{setup:.1f} | {note} |", flush=True)


DEFENSES = (
    ("none", None, {}),
    ("gaussian", "gaussian", {"std": 1e-7}),
    ("gaussian", "gaussian", {"std": 1e-6}),
    ("gaussian", "gaussian", {"std": 1e-5}),
    ("gaussian", "gaussian", {"std": 1e-4}),
    ("pruning", "pruning", {"ratio": 0.5}),
    ("pruning", "pruning", {"ratio": 0.9}),
    ("fp16", "quantization", {"kind": "fp16"}),
    ("int8", "quantization", {"kind": "int8"}),
    ("dpsgd clip only", "dpsgd", {"noise_multiplier": 0.0, "max_grad_norm": 1.0}),
    ("dpsgd", "dpsgd", {"noise_multiplier": 0.01, "max_grad_norm": 1.0}),
    ("dpsgd", "dpsgd", {"noise_multiplier": 1.0, "max_grad_norm": 1.0}),
)


def utility(name: str | None, kwargs: dict) -> str:
    """Perplexity of gpt2-tiny after 30 defended steps (batch 8 of 256 records) and DP-SGD's epsilon for that run."""
    from gradleak.utility import text_defense_cost

    u = text_defense_cost(build_defense(name, **kwargs), model="gpt2-tiny", steps=30, batch_size=8, seq_len=64)
    eps = "-" if u.epsilon is None else f"{u.epsilon:.3g}"
    return f" {u.value:.1f} | {eps} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("batch", "trained", "lora", "defense", "dropout", "noise", "realistic"),
                        default=None)
    parser.add_argument("--cells", nargs="*", default=None, type=realistic_cell,
                        help="realistic group: the cells to run, MODEL:STEPS:DROPOUT:BATCH (default: all)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="realistic group: DAGER's time_limit_s")
    parser.add_argument("--diagnose", action="store_true",
                        help="realistic group: also print how DAGER's within-prefix ranking sees the true records")
    parser.add_argument("--seed", type=int, default=0,
                        help="realistic group: draws the sentences, the pre-training and the dropout masks")
    parser.add_argument("--lengths", type=int, nargs=2, default=(10, 40), metavar=("MIN", "MAX"),
                        help="realistic group: the sentences' lengths in tokens (default 10 40)")
    parser.add_argument("--batches", type=int, nargs="*", default=None, help="dropout group: the batch sizes")
    parser.add_argument("--models", nargs="*", default=None, help="dropout group: gpt2-small, bert-base")
    parser.add_argument("--pretrain-steps", type=int, default=30, help="steps of the trained model (cached)")
    parser.add_argument("--lora-steps", type=int, default=10, help="adapter steps before the round (B != 0)")
    parser.add_argument("--no-utility", action="store_true", help="defense table without the perplexity column")
    parser.add_argument("--defenses", nargs="*", default=None,
                        help="defense group: only these rows by label (none, gaussian, pruning, fp16, int8, dpsgd)")
    parser.add_argument("--attacks", nargs="*", default=["dager", "subspace"], help="defense group: the attacks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(PUBLISHED)
    head = "| group | case | attack | batch | tokens / dim | ROUGE-1 | ROUGE-2 | exact | secrets |"
    if args.only in (None, "batch", "trained", "lora"):
        print(head + " attack s | setup s | note |")
        print("|" + " --- |" * 12)
    if args.only in (None, "batch"):
        for batch in (8, 16, 32, 64):
            run("random init, full fine-tuning", "batch", batch)
        for batch, cut in ((32, 23), (64, 11)):  # batch x length under the width 768: 736 and 704 tokens
            run(f"random init, full fine-tuning, records cut to {cut} tokens", "batch", batch, max_len=cut)
    if args.only in (None, "trained"):
        run(f"trained {args.pretrain_steps} steps, full fine-tuning", "trained", 8, pretrain=args.pretrain_steps)
    if args.only in (None, "lora"):
        for rank, batch, steps in ((256, 2, 0), (256, 2, args.lora_steps), (256, 4, args.lora_steps),
                                   (256, 8, args.lora_steps), (32, 1, args.lora_steps), (32, 1, 0)):
            state = "fresh adapter (B = 0)" if steps == 0 else f"adapter after {steps} steps (B != 0)"
            run(f"LoRA r={rank} on c_attn, {state}", "lora", batch, lora=rank, lora_steps=steps)
    if args.only in (None, "dropout"):
        print("\nDropout table (issue 23): a user's train-mode step recorded with gradleak.record, dropout 0.1 "
              "(transformers default: embedding, attention, residual) against 0; bag: the leaked bag's best guess")
        print(head + " bag R-1 / R-2 | attack s | setup s | note |")
        print("|" + " --- |" * 13)
        for model in args.models or ("gpt2-small", "bert-base"):
            for batch in args.batches or (1, 8, 16):
                for rate in (0.1, 0.0):
                    run_recorded(f"dropout {rate:g}", "dropout", model, batch, dropout=rate)
    if args.only in (None, "noise"):
        print("\nNoise-aware defaults (issue 23 item 6): DAGER with default settings on GPT-2-small updates with "
              "Gaussian noise 1e-6 and fp16 rounding")
        print(head + " attack s | setup s | note |")
        print("|" + " --- |" * 12)
        for batch in (1, 4):
            for label, name, kwargs in (("gaussian", "gaussian", {"std": 1e-6}), ("fp16", "quantization",
                                                                                 {"kind": "fp16"})):
                run(f"{label} {kwargs}", "noise", batch, defense=build_defense(name, **kwargs))
    if args.only in (None, "realistic"):
        cells = None if args.cells is None else set(args.cells)
        run_realistic(cells, args.time_limit, tuple(args.lengths), args.seed, args.diagnose)
    if args.only in (None, "defense"):
        print("\nDefense table: GPT-2-small shape, batch 8, the same update for both attacks; perplexity: gpt2-tiny "
              "fine-tuned 30 steps with the defense (lower is better); epsilon: DP-SGD's (RDP, delta 1e-5) for "
              "those 30 steps at sample rate 8/256")
        print(head + " perplexity | epsilon | attack s | setup s | note |")
        print("|" + " --- |" * 14)
        for label, name, kwargs in DEFENSES:
            text = label if not kwargs else f"{label} {kwargs}"
            if args.defenses is not None and label not in args.defenses:
                continue
            extra = " - | - |" if args.no_utility else utility(name, kwargs)
            run(text, "defense", 8, defense=build_defense(name, **kwargs), attacks=tuple(args.attacks), extra=extra)


if __name__ == "__main__":
    main()
