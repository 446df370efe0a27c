"""A byte-level BPE tokenizer trained here, with ``tokenizers``, on the bundled records (nothing downloaded).

Training is deterministic for a given corpus and vocabulary size; the result is cached as the library's own
JSON (no pickles) under ``$GRADLEAK_CACHE/tokenizers`` and named ``gradleak-bpe-<vocab>-v<version>-<hash>``, the
hash covering the corpus, so a capture can say which tokenizer its token ids belong to. ``byte`` is the fallback:
one token per UTF-8 byte (vocabulary 256 + padding), no training at all.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from gradleak.cache import cache_dir
from gradleak.errors import ConfigError
from gradleak.text.corpus import private_records

VERSION = 1
PAD = "<pad>"
EOS = "<eos>"




@dataclass
class Tokenizer:
    """Encode text to ids and back; ``pad_id`` pads batches on the right."""

    name: str
    backend: object | None  # tokenizers.Tokenizer, or None for bytes
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        if self.backend is None:
            return list(text.encode("utf-8"))
        return list(self.backend.encode(text).ids)  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        ids = [i for i in ids if i not in (self.pad_id, self.eos_id)]
        if self.backend is None:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self.backend.decode(ids)  # type: ignore[attr-defined]

    def token(self, i: int) -> str:
        """A readable form of one token (for reports)."""
        if self.backend is None:
            return bytes([i]).decode("latin-1") if i < 256 else PAD
        return self.backend.decode([i])  # type: ignore[attr-defined]

    def batch(self, texts: list[str], seq_len: int | None = None) -> "torch.Tensor":  # noqa: F821
        """Ids ``(B, L)``, right-padded with ``pad_id`` (truncated to ``seq_len`` when given)."""
        import torch

        encoded = [self.encode(t) for t in texts]
        length = seq_len or max(len(e) for e in encoded)
        rows = [(e[:length] + [self.pad_id] * length)[:length] for e in encoded]
        return torch.tensor(rows, dtype=torch.long)


def _train(texts: list[str], vocab_size: int) -> object:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(kind: str = "bpe", vocab_size: int = 2048, texts: list[str] | None = None) -> Tokenizer:
    """The ``byte`` tokenizer, or a BPE of ``vocab_size`` trained on ``texts`` (default: the bundled records),
    read from the cache when it was trained before."""
    if kind == "byte":
        return Tokenizer(f"gradleak-byte-v{VERSION}", None, 258, 256, 257)
    if kind != "bpe":
        raise ConfigError(f"tokenizer must be 'bpe' or 'byte', got {kind!r}")
    if not isinstance(vocab_size, int) or not 300 <= vocab_size <= 200_000:
        raise ConfigError(f"BPE vocabulary size must be an integer in [300, 200000], got {vocab_size!r}")
    from tokenizers import Tokenizer as HFTokenizer

    if texts is None:
        texts = [r.text for r in private_records(3000, seed=12345)]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    name = f"gradleak-bpe-{vocab_size}-v{VERSION}-{digest}"
    path = cache_dir() / "tokenizers" / f"{name}.json"
    if path.is_file():
        backend = HFTokenizer.from_file(str(path))
    else:
        backend = _train(texts, vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        backend.save(str(tmp))  # type: ignore[attr-defined]
        os.replace(tmp, path)
    return Tokenizer(name, backend, backend.get_vocab_size(), backend.token_to_id(PAD),  # type: ignore[attr-defined]
                     backend.token_to_id(EOS))  # type: ignore[attr-defined]


#: a BPE tokenizer of gradleak's own, by name: vocabulary, version, hash of its training text
_GRADLEAK_BPE = re.compile(r"gradleak-bpe-(\d{3,6})-v(\d+)-([0-9a-f]{12})")


def tokenizer_named(name: str | None) -> tuple[Tokenizer | None, str | None]:
    """The tokenizer a capture names, rebuilt from its name alone when it is one of gradleak's: the byte tokenizer,
    or a BPE read from the tokenizer cache (the library's own JSON, never code) or trained again on the bundled
    records, kept only when the rebuilt name (it hashes the training text) is the one named. Otherwise
    ``(None, why)`` in one line."""
    if not name:
        return None, "the capture names no tokenizer (record with tokenizer=...)"
    if name == f"gradleak-byte-v{VERSION}":
        return load_tokenizer("byte"), None
    match = _GRADLEAK_BPE.fullmatch(name)
    if match is None or int(match[2]) != VERSION:
        return None, f"the capture names tokenizer {name!r}, not one gradleak can rebuild"
    path = cache_dir() / "tokenizers" / f"{name}.json"
    try:
        if path.is_file():
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(str(path))
            tok = Tokenizer(name, backend, backend.get_vocab_size(), backend.token_to_id(PAD),
                            backend.token_to_id(EOS))
        else:
            tok = load_tokenizer("bpe", int(match[1]))
    except Exception as exc:  # noqa: BLE001 - a damaged cache file or a bad size: decode without it, say why
        return None, f"tokenizer {name!r} could not be rebuilt ({' '.join(str(exc).split())})"
    if tok.name != name:
        return None, (f"tokenizer {name!r} was trained on other text than the bundled records and is not in the "
                      f"tokenizer cache ({path.parent})")
    return tok, None


class _UserTokenizer(Tokenizer):
    """A user's own tokenizer object behind gradleak's ``Tokenizer`` interface (see ``user_tokenizer``)."""

    def encode(self, text: str) -> list[int]:
        out = self.backend.encode(text, add_special_tokens=False) if _is_transformers(self.backend) \
            else self.backend.encode(text)  # type: ignore[attr-defined]
        return list(getattr(out, "ids", out))

    def decode(self, ids: list[int]) -> str:
        return str(self.backend.decode([i for i in ids if i not in (self.pad_id, self.eos_id)]))  # type: ignore

    def token(self, i: int) -> str:
        return str(self.backend.decode([i]))  # type: ignore[attr-defined]


def _is_transformers(obj: object) -> bool:
    return hasattr(obj, "pad_token_id") and hasattr(obj, "convert_ids_to_tokens")


#: the usual special tokens of each role, looked up in a ``tokenizers.Tokenizer`` (which has no role attributes)
_SPECIAL_TOKENS = {"pad": ("<pad>", "[PAD]"), "eos": ("<eos>", "</s>", "[SEP]", "<|endoftext|>")}


def _special_id(obj: object, role: str, *names: str) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int):
            return value
    token_to_id = getattr(obj, "token_to_id", None)
    if callable(token_to_id):
        for token in _SPECIAL_TOKENS[role]:
            i = token_to_id(token)
            if isinstance(i, int):
                return i
    return None


def user_tokenizer(obj: object, vocab_size: int | None = None, name: str | None = None) -> Tokenizer:
    """A user's own tokenizer (gradleak's, a ``transformers`` tokenizer, or a ``tokenizers.Tokenizer``) as a
    gradleak ``Tokenizer``, so that attacks needing text (LAMP's prior, the bag's public-frequency guess) work with
    a tokenizer gradleak did not train. Padding and end-of-sequence ids are read from it (``pad_token_id``,
    ``eos_token_id``, or the usual special tokens); ``vocab_size``: the model's vocabulary when larger."""
    if isinstance(obj, Tokenizer):
        return obj
    if not callable(getattr(obj, "encode", None)) or not callable(getattr(obj, "decode", None)):
        raise ConfigError(f"a tokenizer needs encode(text) and decode(ids); got {type(obj).__name__}")
    size = getattr(obj, "vocab_size", None) if _is_transformers(obj) else None
    if not isinstance(size, int):
        get = getattr(obj, "get_vocab_size", None)
        size = get() if callable(get) else len(obj)  # type: ignore[arg-type]
    if _is_transformers(obj):
        size = max(size, len(obj))  # type: ignore[arg-type]  # added special tokens
    size = max(int(size), int(vocab_size or 0))
    pad = _special_id(obj, "pad", "pad_token_id", "pad_id")
    eos = _special_id(obj, "eos", "eos_token_id", "sep_token_id", "eos_id")
    pad = pad if pad is not None else (eos if eos is not None else 0)
    eos = eos if eos is not None else pad
    label = name or getattr(obj, "name_or_path", None) or getattr(obj, "name", None) or type(obj).__name__
    return _UserTokenizer(f"user-{label}-{size}", obj, size, pad, eos)


#: the largest tokenizer file ``load_tokenizer_file`` reads (GPT-2's tokenizer.json is 1.4 MB)
MAX_TOKENIZER_BYTES = 64 << 20


def vocabulary_digest(obj: object) -> str | None:
    """sha256 of a tokenizer's vocabulary (every ``token -> id`` pair, added tokens included), so that a capture
    says which tokenizer its ids belong to and the attacker's copy can be checked against it; ``None`` when the
    object does not expose its vocabulary. The vocabulary, not the serialised file: ``transformers`` changes the
    file's padding and truncation settings on load, which do not change what an id decodes to."""
    backend = obj.backend if isinstance(obj, Tokenizer) else obj
    if backend is None:
        return None
    get_vocab = getattr(backend, "get_vocab", None)
    if not callable(get_vocab):
        return None
    try:
        vocab = get_vocab(with_added_tokens=True)
    except TypeError:  # transformers' get_vocab takes no argument and includes the added tokens
        vocab = get_vocab()
    if not isinstance(vocab, dict) or not vocab:
        return None
    pairs = sorted((int(i), str(t)) for t, i in vocab.items())
    return hashlib.sha256("\n".join(f"{i}\t{t}" for i, t in pairs).encode("utf-8")).hexdigest()


def load_tokenizer_file(path: str, name: str | None = None) -> Tokenizer:
    """A user's tokenizer from a ``tokenizers`` JSON file (``tokenizer.json``, or a folder holding one, as
    ``save_pretrained`` writes it): the library's own JSON, parsed as data (never code); size-bounded."""
    from pathlib import Path

    from tokenizers import Tokenizer as HFTokenizer

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ConfigError(f"--tokenizer {path}: no tokenizer.json there (give a tokenizers JSON file or the "
                          "folder save_pretrained wrote)")
    size = p.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise ConfigError(f"--tokenizer {p}: {size} bytes, over the {MAX_TOKENIZER_BYTES} a tokenizer file may have")
    try:
        backend = HFTokenizer.from_str(p.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - the tokenizers parser's errors, one line for the user
        raise ConfigError(f"--tokenizer {p}: not a tokenizers JSON file ({' '.join(str(exc).split())[:200]})") \
            from None
    return user_tokenizer(backend, name=name or p.parent.name or p.stem)
