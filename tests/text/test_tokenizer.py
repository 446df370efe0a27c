"""The BPE tokenizer trained here: deterministic, cached, round-trips text; the byte fallback."""

from __future__ import annotations

import os
from pathlib import Path

from gradleak.text.corpus import private_records
from gradleak.text.tokenizer import load_tokenizer


def test_bpe_is_deterministic_cached_and_round_trips(tmp_path: Path) -> None:
    texts = [r.text for r in private_records(300, seed=0)]
    first = load_tokenizer("bpe", 600, texts)
    cached = Path(os.environ["GRADLEAK_CACHE"]) / "tokenizers" / f"{first.name}.json"
    assert cached.is_file()
    cached.unlink()  # trained again from scratch: the same merges
    again = load_tokenizer("bpe", 600, texts)
    assert again.name == first.name and again.backend.to_str() == first.backend.to_str()
    text = private_records(1, seed=9)[0].text
    ids = first.encode(text)
    assert first.decode(ids) == text and len(ids) < len(text.encode())  # merges shorten the bytes
    assert first.vocab_size == 600 and first.pad_id != first.eos_id


def test_byte_fallback_round_trips_any_text() -> None:
    tok = load_tokenizer("byte")
    text = "Zoë owes €12 to ДЕ"
    assert tok.decode(tok.encode(text)) == text
    batch = tok.batch(["ab", "abcd"])
    assert batch.tolist() == [[97, 98, tok.pad_id, tok.pad_id], [97, 98, 99, 100]]
