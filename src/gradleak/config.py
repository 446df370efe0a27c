"""Typed config files (TOML or YAML) for experiments, sweeps and federated audits.

Every table is checked against the dataclass it fills: an unknown key or a value of the wrong type is a
``ConfigError`` that names the file, the key and what was expected. Values are never evaluated as code
(``tomllib`` and ``yaml.safe_load`` only).

- experiment file: the fields of ``ExperimentConfig``, at top level or under ``[experiment]``;
- sweep file: ``[sweep]`` (``SweepSettings``), ``[base]`` (``ExperimentConfig`` fields) and ``[grid]`` (axes;
  see ``gradleak.sweep``);
- audit file: ``[federation]`` (``FederationConfig``) and ``[audit]`` (``AuditSettings``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from gradleak.attacks import ATTACKS
from gradleak.errors import ConfigError

T = TypeVar("T")


#: A config file is a few kilobytes; anything far larger is a mistake or an attack.
MAX_CONFIG_BYTES = 1024 * 1024
#: Values a YAML file may expand to once its aliases are followed (a "billion laughs" file expands to 10^9).
MAX_YAML_NODES = 100_000


def read_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml`` or ``.yml`` file into a dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path}: config files must end in .toml, .yaml or .yml")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes, above the {MAX_CONFIG_BYTES}-byte limit of a config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    else:
        data = _load_yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping, got {type(data).__name__}")
    return data


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` after checking, on the node graph, that aliases do not expand the file past
    ``MAX_YAML_NODES`` values and do not refer to themselves (both cost time or memory only later, when the
    data is walked)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if root is None:
        return {}
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def expanded(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{path}: a YAML alias refers to the node that contains it (recursive data)")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(expanded(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(expanded(k) + expanded(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{path}: YAML aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?)")
        sizes[key] = total
        return total

    # Walk without Python recursion limits mattering for sane files; a deeply nested file is refused.
    try:
        expanded(root)
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None


def describe(tp: Any) -> str:
    """A type as a user reads it in an error message."""
    origin = get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null (omit the key)"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {describe(get_args(tp)[0])}"
    if origin is list:
        return f"a list of {describe(get_args(tp)[0])}" if get_args(tp) else "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return f"a table of {tp.__name__} settings"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


class _Mismatch(Exception):
    pass


def coerce(value: Any, tp: Any) -> Any:
    """``value`` checked against the type hint ``tp`` (ints accepted as floats, lists as tuples)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        item = args[0] if args else Any
        items = [coerce(v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {k: coerce(v, vt) for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def build(cls: type[T], data: Any, source: str, table: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, naming ``source`` (file) and ``table`` in every error."""
    where = f"{source}" + (f" [{table}]" if table else "")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of {cls.__name__} settings, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[key] = build(tp, value, source, f"{table}.{key}" if table else key)  # type: ignore[arg-type]
            continue
        try:
            kwargs[key] = coerce(value, tp)
        except _Mismatch:
            raise ConfigError(
                f"{where}: key {key!r} must be {describe(tp)}, got {type(value).__name__} {value!r}"
            ) from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def check_tables(data: Mapping[str, Any], allowed: tuple[str, ...], source: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown table {key!r} (expected {', '.join(repr(a) for a in allowed)})")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


def field_type(cls: type, name: str) -> Any:
    return get_type_hints(cls)[name]


def check_attack_settings(name: str, kwargs: Mapping[str, Any], where: str = "attack") -> Any:
    """Build attack ``name`` with ``kwargs`` after checking each value against the attack's field types, and
    build its engine settings where it has them, so that a bad setting is a ``ConfigError`` before any work
    (before Ray starts, before a federation runs) rather than a ``TypeError`` deep inside an attack."""
    factory = ATTACKS.get(name)
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: settings of attack {name!r} must be a table, got {type(kwargs).__name__}")
    checked = dict(kwargs)
    if dataclasses.is_dataclass(factory):
        hints = get_type_hints(factory)
        fields = {f.name for f in dataclasses.fields(factory) if f.init}
        for key, value in kwargs.items():
            if key not in fields:
                raise ConfigError(f"{where}: attack {name!r} has no setting {key!r} (settings: "
                                  f"{', '.join(sorted(fields))})")
            try:
                checked[key] = coerce(value, hints[key])
            except _Mismatch:
                raise ConfigError(f"{where}: attack {name!r} setting {key!r} must be {describe(hints[key])}, got "
                                  f"{type(value).__name__} {value!r}") from None
    try:
        attack = ATTACKS.build(name, **checked)
        engine = getattr(attack, "engine", None)
        if callable(engine):
            engine(None)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"{where}: attack {name!r} rejected its settings {dict(kwargs)}: {exc}") from None
    return attack


__all__ = ["build", "check_attack_settings", "coerce", "describe", "read_file"]
