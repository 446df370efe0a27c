"""Text a fine-tuning set holds: private records generated with Faker, and the user's own text files.

``private_records(n, seed)`` makes short customer records (name, email, phone, date of birth, address, account
number, a free-text note) in several locales, the kind of PII that sits in a support-ticket or CRM fine-tuning
set. Each ``Record`` keeps where its secrets are (kind, start, end in characters), so a reconstruction can be
scored by the secrets it recovers verbatim, and a label (its locale) for sequence classification. Same ``n`` and
``seed``, same records.

User text: ``txt:FILE`` (one example a line) and ``jsonl:FILE`` (an object a line with a ``text`` string and an
optional integer ``label``); malformed files are one ``DataError`` naming the file and line.
"""

from __future__ import annotations

import ast
import json
import random
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from gradleak.errors import DataError

#: locales of the records; a record's label is its locale's index
LOCALES: tuple[str, ...] = ("en_US", "en_GB", "de_DE", "fr_FR")
SECRET_KINDS: tuple[str, ...] = ("name", "email", "phone", "dob", "address", "account")
MAX_TEXT_BYTES = 64 * 1024 * 1024
MAX_LINE_CHARS = 100_000


@dataclass(frozen=True)
class Record:
    """One example: its ``text``, the character spans of its secrets ``(kind, start, end)`` and a ``label``."""

    text: str
    secrets: tuple[tuple[str, int, int], ...] = field(default=())
    label: int = 0

    def secret_values(self) -> list[tuple[str, str]]:
        return [(kind, self.text[a:b]) for kind, a, b in self.secrets]


_TEMPLATES: tuple[tuple[tuple[str, str | None], ...], ...] = (
    (("Customer ", None), ("{name}", "name"), (", email ", None), ("{email}", "email"), (", phone ", None),
     ("{phone}", "phone"), (". Note: ", None), ("{note}", None)),
    (("Patient ", None), ("{name}", "name"), (" born ", None), ("{dob}", "dob"), (" lives at ", None),
     ("{address}", "address"), (".", None)),
    (("Refund to ", None), ("{name}", "name"), (", account ", None), ("{account}", "account"), (". ", None),
     ("{note}", None)),
    (("Contact ", None), ("{email}", "email"), (" or call ", None), ("{phone}", "phone"), (" about ", None),
     ("{note}", None)),
)


def private_records(n: int, seed: int = 0) -> list[Record]:
    """``n`` Faker records (seeded), cycling through the templates, one locale each."""
    from faker import Faker

    if not isinstance(n, int) or n < 0 or n > 1_000_000:
        raise DataError(f"record count must be an integer in [0, 1000000], got {n!r}")
    rng = random.Random(seed)
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed * 1009 + i)
    out = []
    for k in range(n):
        label = rng.randrange(len(LOCALES))
        fake = fakers[LOCALES[label]]
        values = {
            "name": fake.name(), "email": fake.email(), "phone": fake.phone_number(),
            "dob": fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
            "address": fake.address().replace("\n", ", "), "account": fake.iban(),
            "note": fake.sentence(nb_words=6).rstrip("."),
        }
        text, secrets = "", []
        for piece, kind in _TEMPLATES[k % len(_TEMPLATES)]:
            value = piece.format(**values)
            if kind is not None:
                secrets.append((kind, len(text), len(text) + len(value)))
            text += value
        out.append(Record(text, tuple(secrets), label))
    return out


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise DataError(f"{path}: larger than {MAX_TEXT_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            raise DataError(f"{path}:{i}: a line of {len(line)} characters (limit {MAX_LINE_CHARS})")
    return lines


def load_text(source: str) -> list[Record]:
    """Records from ``records`` (1,000 bundled Faker records, seed 0), ``txt:FILE`` or ``jsonl:FILE``."""
    if source == "records":
        return private_records(1000, seed=0)
    kind, sep, name = source.partition(":")
    if not sep or kind not in ("txt", "jsonl"):
        raise DataError(f"text source must be 'records', 'txt:FILE' or 'jsonl:FILE', got {source!r}")
    path = Path(name)
    lines = _read_lines(path)
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if kind == "txt":
            out.append(Record(line))
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: not a JSON object ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DataError(f"{path}:{i}: expected an object with a 'text' string")
        label = item.get("label", 0)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 1_000_000:
            raise DataError(f"{path}:{i}: 'label' must be an integer in [0, 1000000), got {label!r}")
        out.append(Record(item["text"], (), label))
    if not out:
        raise DataError(f"{path}: holds no text")
    return out


#: license texts Debian ships (``/usr/share/common-licenses``): held out from pre-training, the realistic batches'
#: sentences come from them; the others are pre-training text
LICENSE_DIR = Path("/usr/share/common-licenses")
HELD_OUT_LICENSES: tuple[str, ...] = ("Apache-2.0", "Artistic", "CC0-1.0", "MPL-2.0")
#: standard-library modules whose documentation strings (read with ``ast``, nothing imported) are pre-training text
DOC_MODULES: tuple[str, ...] = ("argparse", "calendar", "collections/__init__", "csv", "datetime", "difflib",
                                "email/message", "fractions", "functools", "gettext", "heapq", "http/client",
                                "inspect", "json/__init__", "logging/__init__", "pathlib", "random", "shutil",
                                "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
                                "typing", "unittest/case", "urllib/parse", "zipfile")


#: longest piece of a sentence kept as one text (characters): the BPE trained on the records spends about 2.4
#: characters a token on license prose, so pieces hold about 15-40 tokens
MAX_PIECE_CHARS = 100


def _sentences(text: str) -> list[str]:
    """Sentences of running text: whitespace collapsed, split after ``.``, ``;`` or ``:``; a longer sentence is cut
    after commas into pieces of at most ``MAX_PIECE_CHARS``; pieces of 30 characters or more are kept."""
    flat = re.sub(r"\s+", " ", text)
    out = []
    for sentence in re.split(r"(?<=[.;:])\s+", flat):
        piece = ""
        for part in re.split(r"(?<=,)\s+", sentence.strip()):
            if piece and len(piece) + 1 + len(part) > MAX_PIECE_CHARS:
                out.append(piece)
                piece = part
            else:
                piece = f"{piece} {part}" if piece else part
        out.append(piece)
    return [s for s in out if 30 <= len(s) <= MAX_PIECE_CHARS + 40]


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    return "\n\n".join(d for d in (ast.get_docstring(n) for n in nodes) if d)


def public_sentences(split: str) -> list[str]:
    """Public English sentences that ship with the system, for pre-training and attacking language models without
    a download: ``"pretrain"``: the license texts not held out and the documentation strings of ``DOC_MODULES``;
    ``"heldout"``: the ``HELD_OUT_LICENSES``' sentences (none of which is in the pre-training split). Sorted order
    of files, sentences in reading order, duplicates dropped; a missing file contributes nothing (the counts depend
    on the Debian and Python versions)."""
    if split not in ("pretrain", "heldout"):
        raise DataError(f"public text split must be 'pretrain' or 'heldout', got {split!r}")
    held: list[str] = []
    for name in HELD_OUT_LICENSES:
        path = LICENSE_DIR / name
        held += _sentences(path.read_text(encoding="utf-8")) if path.is_file() else []
    held = list(dict.fromkeys(held))
    if split == "heldout":
        return held
    texts = [p.read_text(encoding="utf-8") for p in sorted(LICENSE_DIR.glob("*"))
             if p.is_file() and not p.is_symlink() and p.name not in HELD_OUT_LICENSES]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts += [_docstrings(stdlib / f"{m}.py") for m in DOC_MODULES]
    seen = set(held)
    return [s for s in dict.fromkeys(s for t in texts for s in _sentences(t)) if s not in seen]
