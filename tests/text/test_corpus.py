"""Bundled private records and user text files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.errors import DataError
from gradleak.text.corpus import LOCALES, load_text, private_records


def test_records_are_seeded_and_keep_their_secrets() -> None:
    a, b = private_records(12, seed=3), private_records(12, seed=3)
    assert a == b and a != private_records(12, seed=4)
    for record in a:
        assert record.secrets and 0 <= record.label < len(LOCALES)
        for kind, value in record.secret_values():
            assert value and value in record.text and kind in ("name", "email", "phone", "dob", "address", "account")
    emails = [v for r in a for k, v in r.secret_values() if k == "email"]
    assert emails and all("@" in e for e in emails)


def test_txt_and_jsonl_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert [r.text for r in load_text(f"txt:{tmp_path / 'a.txt'}")] == ["first line", "second line"]
    (tmp_path / "b.jsonl").write_text('{"text": "hello", "label": 2}\n{"text": "bye"}\n', encoding="utf-8")
    records = load_text(f"jsonl:{tmp_path / 'b.jsonl'}")
    assert [(r.text, r.label) for r in records] == [("hello", 2), ("bye", 0)]


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe broken", "not UTF-8"),
    (b'{"text": 3}\n', r"b\.jsonl:1: expected an object with a 'text' string"),
    (b'{"text": "x", "label": true}\n', r"b\.jsonl:1: 'label' must be an integer"),
    (b"not json\n", r"b\.jsonl:1: not a JSON object"),
    (b"\n\n", "holds no text"),
])
def test_bad_jsonl_is_one_line_naming_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "b.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text(f"jsonl:{tmp_path / 'b.jsonl'}")


def test_public_sentences_hold_out_their_licenses() -> None:
    """The realistic text benchmark attacks held-out license sentences on models pre-trained on the rest."""
    from gradleak.text.corpus import LICENSE_DIR, public_sentences

    if not (LICENSE_DIR / "Apache-2.0").is_file():
        pytest.skip("no Debian license texts on this system")
    held, train = public_sentences("heldout"), public_sentences("pretrain")
    assert len(held) >= 64 and len(train) > len(held)
    assert not set(held) & set(train)
    assert public_sentences("heldout") == held
    with pytest.raises(DataError, match="split must be"):
        public_sentences("test")
