"""``gradleak attack`` on a text capture from ``gradleak.record``: the decoded records, the text scores beside the
leaked-bag guesses and ``sentences.html`` with ``--truth``; token ids and one line when the tokenizer is unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gradleak
from gradleak.capture import save_capture, save_truth
from gradleak.cli import main
from gradleak.errors import ConfigError
from gradleak.text.corpus import private_records
from gradleak.text.models import text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import encode_records


def _record_text_step(folder: Path, tokenizer_name: bool = True) -> tuple[Path, Path, str]:
    """One causal-LM fine-tuning step of a GPT-2 built from its config, on one bundled record (33 tokens: inside
    gpt2-tiny's width of 64, where DAGER's layer-1 span is exact), recorded as a user would."""
    tok = load_tokenizer("bpe", 2048)
    record = private_records(2, seed=1005)[1:]
    ids = encode_records(tok, record)
    torch.manual_seed(0)
    model = text_model_spec("gpt2-tiny", tok.vocab_size, tok.pad_id, eos_id=tok.eos_id).build()
    with gradleak.record(model, ids, tokenizer=tok if tokenizer_name else None) as rec:
        mask = (ids != tok.pad_id).long()
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    capture = save_capture(rec.observation, folder / "step.capture.safetensors")
    truth = save_truth(rec.truth, folder / "step.truth.safetensors", capture=rec.observation)
    return capture, truth, record[0].text


def test_attack_on_a_recorded_text_step_prints_records_and_writes_the_text_report(tmp_path: Path, capsys) -> None:
    capture, truth, text = _record_text_step(tmp_path)

    out = tmp_path / "scored"
    assert main(["attack", str(capture), "--attack", "dager", "--truth", str(truth), "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"truth:     {text}" in printed and f"recovered: {text}" in printed and "(exact" in printed
    assert "verdict: 1/1 records leaked (best guess: " in printed and "margin 0.2 ROUGE-1" in printed
    assert "PSNR" not in printed and "grid.png" not in printed
    assert (out / "sentences.html").is_file() and text.split(",")[0] in (out / "sentences.html").read_text()
    scores = json.loads((out / "metrics.json").read_text())["text"]
    assert scores["mean"]["rouge1"] == 1.0 and scores["mean"]["exact"] == 1.0 and scores["leaked"] == [True]
    assert scores["recovered"] == [text] and scores["tokenizer"].startswith("gradleak-bpe-2048-v1-")
    assert set(scores["baseline_means"]) == {"random from bag", "bag by public frequency"}
    assert scores["tokenizer_known"] is True

    # without --truth: the decoded record, and only files that exist named (a stale sentences.html removed)
    assert main(["attack", str(capture), "--attack", "dager", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"[0] recovered: {text}" in printed and "verdict" not in printed
    named = [p.strip() for line in printed.splitlines() if line.startswith("report: ")
             for p in line[len("report: "):].split(",")]
    assert named and all(Path(p).is_file() for p in named)
    assert not (out / "sentences.html").exists()
    assert json.loads((out / "metrics.json").read_text())["text"]["recovered"] == [text]


def test_attack_on_a_text_capture_without_its_tokenizer_shows_token_ids(tmp_path: Path, capsys) -> None:
    capture, truth, text = _record_text_step(tmp_path, tokenizer_name=False)
    ids = [i for i in encode_records(load_tokenizer("bpe", 2048), private_records(2, seed=1005)[1:])[0].tolist()]
    out = tmp_path / "ids"
    assert main(["attack", str(capture), "--attack", "dager", "--truth", str(truth), "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("tokenizer unknown: the capture names no tokenizer") == 1
    assert "ids " + " ".join(str(i) for i in ids[:5]) in printed.out and text not in printed.out
    assert "(exact)" in printed.out and (out / "sentences.html").is_file()
    # scored as ids, the bag alone reaches ROUGE-1 near 1: the exact order is what leaks (ROUGE-2 against the bag's)
    assert "verdict: 1/1 records leaked" in printed.out
    scores = json.loads((out / "metrics.json").read_text())["text"]
    assert scores["tokenizer_known"] is False and scores["mean"]["exact"] == 1.0


def test_record_refuses_a_tokenizer_for_image_batches() -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        with gradleak.record(torch.nn.Linear(4, 2), (torch.rand(2, 4), torch.tensor([0, 1])), tokenizer="x"):
            pass


def _users_tokenizer(texts: list[str], vocab: int) -> object:
    """A user's own ``transformers`` tokenizer that gradleak did not train or name: word-level, trained on the
    text it is given, wrapped as ``save_pretrained`` users hold it."""
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = HFTokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab, show_progress=False,
                                                                  special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def test_attack_decodes_with_the_users_own_tokenizer_file_checked_against_the_capture(tmp_path: Path, capsys) -> None:
    records = private_records(40, seed=77)
    tok = _users_tokenizer([r.text for r in records], 600)
    text = records[3].text
    ids = torch.tensor([tok.encode(text) + [tok.eos_token_id]])
    torch.manual_seed(0)
    model = text_model_spec("gpt2-tiny", len(tok), tok.pad_token_id, eos_id=tok.eos_token_id).build()
    with gradleak.record(model, ids, tokenizer=tok) as rec:
        model(input_ids=ids, labels=ids).loss.backward()
    capture = save_capture(rec.observation, tmp_path / "step.capture.safetensors")
    tok.save_pretrained(tmp_path / "users-tokenizer")

    out = tmp_path / "decoded"
    assert main(["attack", str(capture), "--attack", "dager", "--tokenizer", str(tmp_path / "users-tokenizer"),
                 "--out", str(out), "--quiet"]) == 0
    recovered = json.loads((out / "metrics.json").read_text())["text"]["recovered"]
    assert recovered == [tok.decode(tok.encode(text))] and text.split()[0] in recovered[0]

    # another tokenizer's file is refused in one line, naming the digests; without one: token ids
    _users_tokenizer([r.text for r in private_records(40, seed=78)], 600).save_pretrained(tmp_path / "other")
    assert main(["attack", str(capture), "--attack", "dager", "--tokenizer", str(tmp_path / "other"),
                 "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "not the one the capture was recorded with" in capsys.readouterr().err
    assert main(["attack", str(capture), "--attack", "dager", "--out", str(tmp_path / "o3"), "--quiet"]) == 0
    assert "tokenizer unknown" in capsys.readouterr().out


def test_a_hostile_tokenizer_file_is_refused_in_one_line_before_the_attack_runs(tmp_path: Path, capsys) -> None:
    capture, _, _ = _record_text_step(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": [1, 2')
    assert main(["attack", str(capture), "--attack", "dager", "--tokenizer", str(tmp_path / "tokenizer.json"),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a tokenizers JSON file" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()
    assert main(["attack", str(capture), "--attack", "dager", "--tokenizer", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "no tokenizer.json there" in capsys.readouterr().err
