"""Where a command writes, checked before it does any work: nothing is overwritten by surprise, a path of the
wrong kind is a one-line error rather than a traceback after minutes of attack, and a reused report folder
never shows a file left by an earlier run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from gradleak.errors import ConfigError


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` is a folder or does not exist yet (an existing file there is refused)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: an existing file, not a folder; name a folder for the output")
    return path


def check_new_file(path: str | Path, flag: str, force: bool = False) -> Path:
    """``path`` may be written as a file: not a folder, and not an existing file unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: an existing folder, not a file")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {path} already exists; pass --force to overwrite it")
    return path


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_distinct(paths: Mapping[str, str | Path | None]) -> None:
    """No two of the named paths are the same file (e.g. ``--truth`` and ``--out`` of a capture)."""
    named = [(flag, Path(p)) for flag, p in paths.items() if p is not None]
    for i, (flag_a, a) in enumerate(named):
        for flag_b, b in named[i + 1 :]:
            if _same(a, b):
                raise ConfigError(f"{flag_a} and {flag_b} are the same file ({a}); the second would overwrite "
                                  "the first")


def check_not_input(out: str | Path, inputs: Iterable[str | Path], flag: str = "--out") -> None:
    """``out`` is none of the files a command reads (a report written over its own results table)."""
    out = Path(out)
    for source in inputs:
        source = Path(source)
        if source.exists() and _same(out, source):
            raise ConfigError(f"{flag} {out} is the input {source}; writing there would destroy it")


def clear_stale(folder: str | Path, names: Iterable[str] = (), patterns: Iterable[str] = ()) -> list[Path]:
    """Delete the files a writer owns by name (``names``, glob ``patterns``) from a reused ``folder`` before it
    writes, so that a report never shows one left by an earlier run. Only regular files are touched."""
    folder = Path(folder)
    removed = []
    candidates = [folder / n for n in names] + [p for pat in patterns for p in sorted(folder.glob(pat))]
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


__all__ = ["check_distinct", "check_new_file", "check_not_input", "check_out_dir", "clear_stale"]
