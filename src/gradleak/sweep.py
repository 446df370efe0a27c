"""Sweeps: a grid of experiments run as Ray tasks, results streamed into one table, resumable.

A sweep file has three tables::

    [sweep]                      # SweepSettings
    out = "out/sweep"            # results folder: the table, and runs/<key>/ with each run's grid and metrics
    table = "results.csv"        # or results.parquet

    [base]                       # ExperimentConfig fields shared by every run
    dataset = "digits"
    attack_kwargs = { iterations = 100 }

    [grid]                       # one axis per key; the sweep is their product
    attack = ["idlg", "dlg"]     # an ExperimentConfig field: each value is checked against its type
    pretrain_steps = [0, 50]     # training stage
    seed = [0, 1, 2]
    defenses = [{}, { defense = "gaussian", defense_kwargs = { std = 0.01 } }]   # any other name: each value
                                 # is a table of ExperimentConfig fields set together

Table-valued fields (``attack_kwargs``, ``model_kwargs``, ``defense_kwargs``) given on an axis are merged over
``[base]``. Every experiment is identified by a hash of its full config (``key``); grid points with the same key
run once. A failing experiment becomes a row with ``status = "error"`` and its message, and the others go on
(rerun them with ``retry_errors``, which replaces their rows). A grid larger than ``max_experiments`` (10,000 by
default) is refused before anything runs, and so is any attack setting the attack would reject.

Nothing is lost to a kill: each finished experiment first writes ``runs/<key>/result.json`` atomically (a
temporary file, fsync, rename), and that file is the truth; the table is a view of those files. A run starts by
rebuilding the table from them (dropping a half-written row, adding a row a kill kept out), then skips every key
already done, so a stopped sweep resumes with exactly one complete row per experiment.

Ray: a local Ray is started for the run (``num_cpus`` cores, no dashboard) and shut down after, unless Ray is
already initialised in the process; ``address`` connects to an existing cluster instead (gradleak must be
installed on its workers). Each experiment is one task of ``cpus_per_task`` CPUs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradleak.config import build, check_tables, coerce, describe, field_names, field_type, read_file
from gradleak.errors import ConfigError, DataError
from gradleak.experiment import ExperimentConfig, run_experiment
from gradleak.outputs import clear_stale

#: every mean beside the best guess's (``best_baseline_*``: the mean over the run's samples of the best guess an
#: attacker makes without the update) and ``leaked``, the share of samples beating that guess by the margins
SCORE_COLUMNS = ("psnr", "best_baseline_psnr", "ssim", "best_baseline_ssim", "leaked", "mse", "label_accuracy")
METRIC_COLUMNS = (*SCORE_COLUMNS, "iterations", "wall_time_s", "run_dir", "worker", "finished_at")
RUN_FILES = ("grid.png", "trace.png", "metrics.json")
RESULT_FILE = "result.json"
#: a table's sidecar: it says gradleak wrote the table, for which sweep
MARKER_SUFFIX = ".gradleak.json"
#: files of a sweep folder that a sweep writes (besides its table and sidecar)
SWEEP_FILES = ("sweep_config.json", "report.html")
STATUSES = ("ok", "error")


@dataclass(frozen=True)
class SweepSettings:
    """Where results go and how the work is spread. ``num_cpus`` sizes a local Ray (default: all cores)."""

    name: str = "sweep"
    out: str = "out/sweep"
    table: str = "results.csv"
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    num_cpus: int | None = None
    retry_errors: bool = False
    max_experiments: int = 10_000

    def __post_init__(self) -> None:
        if self.max_experiments < 1:
            raise ConfigError(f"max_experiments must be >= 1, got {self.max_experiments}")
        if Path(self.table).suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"table must end in .csv or .parquet, got {self.table!r}")
        if not self.cpus_per_task > 0:
            raise ConfigError(f"cpus_per_task must be positive, got {self.cpus_per_task}")

    @property
    def table_path(self) -> Path:
        return Path(self.out) / self.table

    @property
    def marker_path(self) -> Path:
        """The table's sidecar, ``<table>.gradleak.json``: which sweep wrote the table (see ``claim_output``)."""
        return Path(self.out) / (self.table + MARKER_SUFFIX)


@dataclass(frozen=True)
class SweepConfig:
    """Settings, the base experiment and the grid axes (validated), with the file they came from."""

    settings: SweepSettings = field(default_factory=SweepSettings)
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    source: str = "<sweep>"

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str = "<sweep>", max_experiments: int | None = None
    ) -> SweepConfig:
        """Check the tables and expand the grid; ``max_experiments`` overrides ``[sweep] max_experiments``.
        The grid's size is checked from the axis lengths before it is expanded."""
        check_tables(data, ("sweep", "base", "grid"), source)
        settings = build(SweepSettings, data.get("sweep", {}), source, "sweep")
        if max_experiments is not None:
            settings = dataclasses.replace(settings, max_experiments=max_experiments)
        base = _fields(data.get("base", {}), source, "base")
        raw_grid = data.get("grid", {})
        if not isinstance(raw_grid, Mapping):
            raise ConfigError(f"{source} [grid]: expected a table of axes, got {type(raw_grid).__name__}")
        grid: dict[str, list[Any]] = {}
        names = set(field_names(ExperimentConfig))
        for axis, values in raw_grid.items():
            where = f"{source} [grid] key {axis!r}"
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: an axis must be a non-empty list of values")
            if axis in names:
                tp = field_type(ExperimentConfig, axis)
                checked = []
                for i, v in enumerate(values):
                    try:
                        checked.append(coerce(v, tp))
                    except Exception:
                        got = f"{type(v).__name__} {v!r}"
                        raise ConfigError(f"{where}[{i}]: must be {describe(tp)}, got {got}") from None
                grid[axis] = checked
            else:
                grid[axis] = [_fields(v, source, f"grid.{axis}[{i}]") for i, v in enumerate(values)]
        size = math.prod(len(v) for v in grid.values())
        if size > settings.max_experiments:
            raise ConfigError(f"{source}: the grid has {size} experiments, above max_experiments = "
                              f"{settings.max_experiments}; raise it with --max-experiments or [sweep] max_experiments")
        config = cls(settings, base, grid, source)
        config.experiments()  # every combination must be a valid ExperimentConfig (its attack settings included)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as the tables of its file (``sweep``, ``base``, ``grid``), plus where it came from."""
        return {"source": self.source, "sweep": dataclasses.asdict(self.settings), "base": self.base, "grid": self.grid}

    def digest(self) -> str:
        """What makes this sweep this sweep: its name, its base experiment and its grid's axes (SHA-256 of them as
        sorted JSON). The axes' values are left out on purpose: growing an axis (more seeds) resumes the same
        sweep; another base, other axes or another name is another sweep."""
        return _identity(self.settings.name, self.base, self.grid)

    def combinations(self) -> Iterator[dict[str, Any]]:
        """The axis values of each experiment, in grid order (axes in file order, last varies fastest)."""
        axes = list(self.grid)
        for values in itertools.product(*(self.grid[a] for a in axes)):
            yield dict(zip(axes, values))

    def experiments(self) -> list[ExperimentConfig]:
        out = []
        names = set(field_names(ExperimentConfig))
        for combo in self.combinations():
            merged = dict(self.base)
            for axis, value in combo.items():
                assignments = {axis: value} if axis in names else value
                for k, v in assignments.items():
                    merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
            try:
                out.append(ExperimentConfig(**merged))
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(f"{self.source}: grid point {combo} is not a valid experiment: {exc}") from exc
        return out


def load_sweep_config(path: str | Path, max_experiments: int | None = None) -> SweepConfig:
    """A ``SweepConfig`` from a file with ``[sweep]``, ``[base]`` and ``[grid]`` tables; ``max_experiments``
    overrides the file's bound on the grid size."""
    return SweepConfig.from_dict(read_file(path), str(path), max_experiments=max_experiments)


def _identity(name: Any, base: Any, grid: Any) -> str:
    """SHA-256 of a sweep's name, base experiment and axis names, as sorted JSON (``SweepConfig.digest``)."""
    identity = {"name": name, "base": base, "axes": sorted(grid)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _fields(data: Any, source: str, table: str) -> dict[str, Any]:
    """ExperimentConfig field assignments, type-checked (an unknown key or a wrong type names the file)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} [{table}]: expected a table of experiment settings, got {type(data).__name__}")
    names = set(field_names(ExperimentConfig))
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{source} [{table}]: unknown key {key!r} (known keys: {', '.join(sorted(names))})")
        tp = field_type(ExperimentConfig, key)
        try:
            out[key] = coerce(value, tp)
        except Exception:
            got = f"{type(value).__name__} {value!r}"
            raise ConfigError(f"{source} [{table}]: key {key!r} must be {describe(tp)}, got {got}") from None
    return out


def experiment_key(config: ExperimentConfig) -> str:
    """A stable id of an experiment: the first 16 hex digits of the SHA-256 of its config as sorted JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


class ResultsTable:
    """The sweep's results, one row per experiment key, in CSV or Parquet.

    A new row is appended to a CSV as one write of one whole line, then fsynced; any other change (a replaced
    row, new columns, Parquet) rewrites the file atomically (temporary file, fsync, rename). Reading keeps only
    complete rows (a row cut by a kill mid-write has empty trailing cells and no ``finished_at``) and the last
    row of each key. Reading gives strings for CSV cells; ``typed_rows`` parses numbers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parquet = self.path.suffix.lower() == ".parquet"

    def raw_rows(self) -> list[dict[str, Any]]:
        """Every row as stored, torn ones included; a file that cannot be read is a ``DataError``."""
        if not self.path.exists():
            return []
        try:
            if self.parquet:
                import pyarrow.parquet as pq  # only for a Parquet table

                return pq.read_table(self.path).to_pylist()
            with self.path.open(newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        except Exception as exc:  # noqa: BLE001 - a damaged table is named, not a traceback
            raise DataError(f"{self.path}: not a readable results table ({type(exc).__name__}: {exc})") from None

    def read(self) -> list[dict[str, Any]]:
        """The complete rows, one per key (the last one written wins), in first-written order."""
        rows: dict[str, dict[str, Any]] = {}
        for row in self.raw_rows():
            if is_complete(row, from_csv=not self.parquet):
                rows.pop(str(row["key"]), None)
                rows[str(row["key"])] = row
        return list(rows.values())

    def write_all(self, rows: list[dict[str, Any]]) -> None:
        """Replace the table with ``rows``, atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{k: _cell(v) for k, v in r.items()} for r in rows]
        columns = _union([list(r) for r in rows])
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.parquet:
            import pyarrow as pa  # only for a Parquet table
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), tmp)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        else:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        """Add the row of a key not yet in the table (a key already there: use ``write_all``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cells = {k: _cell(v) for k, v in row.items()}
        if self.parquet or not self.path.exists():
            self.write_all([*self.read(), cells])
            return
        with self.path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            whole_lines = fh.read(1) == b"\n"
        if header != list(cells) or not whole_lines:  # new columns, or a line left unfinished: rewrite
            self.write_all([*self.read(), cells])
            return
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=header).writerow(cells)
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            fh.write(line.getvalue())  # one write of one whole line
            fh.flush()
            os.fsync(fh.fileno())

    def typed_rows(self) -> list[dict[str, Any]]:
        return [{k: parse_cell(v) for k, v in r.items()} for r in self.read()]


def is_complete(row: Mapping[str, Any], from_csv: bool = True) -> bool:
    """A row a run finished writing: a key and a known status; a CSV row must also have every cell (a line cut
    short gets ``None`` for the missing ones, and surplus cells of a damaged line land under the key ``None``).
    A line cut inside its last cell looks whole here; ``rebuild_table`` replaces it from its ``result.json``."""
    if not row.get("key") or row.get("status") not in STATUSES:
        return False
    return not from_csv or (None not in row and all(v is not None for v in row.values()))


def _union(column_lists: list[list[str]]) -> list[str]:
    out: list[str] = []
    for cols in column_lists:
        out.extend(c for c in cols if c not in out)
    return out


def parse_cell(value: Any) -> Any:
    """A CSV cell back to a number, bool, None or JSON value where it is one."""
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def run_one(config_dict: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Run one experiment (in a Ray worker); return its metrics and report files, or its error."""
    torch.set_num_threads(max(1, threads))
    start = time.perf_counter()
    try:
        config = ExperimentConfig(**config_dict)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_experiment(config, out=tmp)
            files = {n: (Path(tmp) / n).read_bytes() for n in RUN_FILES if (Path(tmp) / n).exists()}
        mean = result.metrics["mean"]
        return {
            "status": "ok", "error": "", **{k: mean.get(k) for k in SCORE_COLUMNS},
            "iterations": result.metrics.get("iterations"), "wall_time_s": round(time.perf_counter() - start, 3),
            "worker": socket.gethostname(), "files": files,
        }
    except Exception as exc:  # noqa: BLE001 - the sweep records the failure and goes on
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}{where}",
                "wall_time_s": round(time.perf_counter() - start, 3), "worker": socket.gethostname(), "files": {}}


@dataclass
class SweepSummary:
    """``total`` distinct experiments of the grid (``duplicates`` grid points shared a key with an earlier one
    and run once); ``failed`` of the ``ran`` this call; ``errors``: experiments of the grid whose row is an error
    now (this call's and earlier ones not retried)."""

    total: int
    skipped: int
    ran: int
    failed: int
    table: Path
    wall_time_s: float
    duplicates: int = 0
    errors: int = 0


def _write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or all of ``data``, whenever the process is killed."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def record_result(out: Path, key: str, row: dict[str, Any], files: Mapping[str, bytes]) -> Path:
    """Write one finished experiment under ``out/runs/<key>/``: its report files, then ``result.json`` (its
    table row) atomically, last, so that the result file exists only when everything before it does."""
    folder = out / "runs" / key
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale(folder, (*RUN_FILES, RESULT_FILE))  # a retried run must not keep a file of the failed one
    for name, data in files.items():
        _write_atomic(folder / name, data)
    path = folder / RESULT_FILE
    _write_atomic(path, json.dumps(row, default=str).encode())
    return path


def _stored_results(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/runs/*/result.json`` that are whole and belong to their folder, oldest first; a
    damaged one is ignored (its experiment is not done and runs again)."""
    rows = []
    for path in sorted((out / "runs").glob(f"*/{RESULT_FILE}")):
        try:
            row = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict) and row.get("key") == path.parent.name and is_complete(row, from_csv=False):
            rows.append(row)
    return sorted(rows, key=lambda r: str(r["finished_at"]))


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def norm(row: Mapping[str, Any]) -> dict[str, str]:
        return {str(k): str(_cell(v)) for k, v in row.items() if v is not None and v != ""}

    return norm(a) == norm(b)


def rebuild_table(table: ResultsTable, out: Path) -> dict[str, dict[str, Any]]:
    """The table's rows by key, repaired: torn and duplicate rows dropped, every stored ``result.json`` in (it
    wins over the table). The file is rewritten atomically only when the repair changed something."""
    try:
        raw = table.raw_rows()
        damaged = False
    except DataError:
        raw, damaged = [], True
    rows: dict[str, dict[str, Any]] = {}
    for row in raw:
        if is_complete(row, from_csv=not table.parquet):
            rows.pop(str(row["key"]), None)
            rows[str(row["key"])] = row
    changed = damaged or len(rows) != len(raw)
    for row in _stored_results(out):
        key = str(row["key"])
        if key not in rows or not _same_row(rows[key], row):
            rows[key] = row
            changed = True
    if changed and rows:
        table.write_all(list(rows.values()))
    return rows


def _marker(path: Path) -> dict[str, Any] | None:
    """A sidecar's content, or ``None`` when it is not one gradleak wrote."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "gradleak sweep" else None


def _legacy_digest(out: Path) -> str | None:
    """The digest of the sweep whose ``sweep_config.json`` lies in ``out`` (written by every run, before sidecars
    existed too), or ``None``."""
    try:
        data = json.loads((out / "sweep_config.json").read_bytes().decode("utf-8"))
        return _identity(data["sweep"]["name"], data["base"], data["grid"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None


def claim_output(config: SweepConfig, force: bool = False) -> None:
    """Refuse, before anything is written, a table or folder this sweep did not write; then mark the table as its.

    A sweep rewrites its table and the ``report.html`` beside it, and folds every ``runs/*/result.json`` of its
    folder into the table. So it writes only where (a) the table's sidecar ``<table>.gradleak.json`` names this
    sweep (same ``SweepConfig.digest``), or (b) nothing of a sweep is there yet: no table, no other sweep's
    sidecar, no ``runs/``, ``sweep_config.json`` or ``report.html``, or (c) the folder's ``sweep_config.json``
    is this sweep's (a folder from before sidecars existed). Anything else (an unrelated CSV named as the table,
    another sweep's folder) is a ``ConfigError`` unless ``force``, which takes the folder over for this sweep."""
    settings = config.settings
    out, table, marker = Path(settings.out), settings.table_path, settings.marker_path
    digest = config.digest()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"sweep out {str(out)!r} is an existing file, not a folder")
    if not force:
        hint = "choose another out or table, or pass --force to write there anyway"
        others = sorted(out.glob(f"*{MARKER_SUFFIX}")) if out.is_dir() else []
        for path in others:
            other = _marker(path)
            if other is not None and other.get("digest") != digest:
                raise ConfigError(f"{out} holds the results of another sweep ({other.get('name')!r} from "
                                  f"{other.get('source')}, per {path.name}); {hint}")
        adopted = _legacy_digest(out) == digest  # this sweep's folder from before sidecars existed
        if table.exists() and _marker(marker) is None and not adopted:
            raise ConfigError(f"{table} exists and was not written by gradleak for this sweep (no {marker.name} "
                              f"beside it); {hint}")
        if not others and not adopted:
            leftovers = [n for n in ("runs", *SWEEP_FILES) if (out / n).exists()]
            if leftovers:
                raise ConfigError(f"{out} already holds {leftovers[0]} but no sidecar (*{MARKER_SUFFIX}) naming this "
                                  f"sweep; {hint}")
    out.mkdir(parents=True, exist_ok=True)
    mark = {"written_by": "gradleak sweep", "name": settings.name, "digest": digest, "source": config.source,
            "table": settings.table}
    if _marker(marker) != mark:
        _write_atomic(marker, json.dumps(mark, indent=2).encode())


def run_sweep(
    config: SweepConfig,
    address: str | None = None,
    retry_errors: bool | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    force: bool = False,
) -> SweepSummary:
    """Run every experiment of ``config`` not yet done as a Ray task; stream rows in as they finish.

    The table is first rebuilt from the stored per-run results (see the module docstring), so a sweep killed
    at any point, even mid-write, resumes with one complete row per experiment. A table or folder another sweep
    (or anything but gradleak) wrote is refused first, unless ``force`` (see ``claim_output``)."""
    import ray  # heavy (seconds): only a sweep that runs needs it

    start = time.perf_counter()
    settings = config.settings
    retry = settings.retry_errors if retry_errors is None else retry_errors
    table = ResultsTable(settings.table_path)
    out = Path(settings.out)
    claim_output(config, force)
    rows = rebuild_table(table, out)
    unique: dict[str, tuple[ExperimentConfig, dict[str, Any]]] = {}
    experiments = config.experiments()
    for cfg, combo in zip(experiments, config.combinations()):
        unique.setdefault(experiment_key(cfg), (cfg, combo))  # a repeated grid point runs once
    todo = []
    for key, (cfg, combo) in unique.items():
        status = rows.get(key, {}).get("status")
        if status == "ok" or (status == "error" and not retry):
            continue
        todo.append((key, cfg, combo))
    summary = SweepSummary(len(unique), len(unique) - len(todo), 0, 0, table.path, 0.0,
                           duplicates=len(experiments) - len(unique))
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "sweep_config.json", json.dumps(config.to_dict(), indent=2, default=str).encode())

    def finish() -> SweepSummary:
        summary.errors = sum(rows.get(k, {}).get("status") == "error" for k in unique)
        summary.wall_time_s = time.perf_counter() - start
        return summary

    if not todo:
        return finish()
    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=settings.num_cpus, include_dashboard=False, log_to_driver=False)
        started_here = True
    task = ray.remote(num_cpus=settings.cpus_per_task, num_gpus=settings.gpus_per_task, max_retries=0)(run_one)
    threads = max(1, int(settings.cpus_per_task))
    fields = set(field_names(ExperimentConfig))
    pending = {task.remote(cfg.to_dict(), threads): (key, cfg, combo) for key, cfg, combo in todo}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                key, cfg, combo = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a crashed worker, not an experiment error
                    result = {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "files": {}}
                files = result.pop("files", {})
                row = {"key": key, "status": result["status"], "error": result.get("error", ""),
                       **{k: v for k, v in combo.items() if k not in fields}, **cfg.to_dict()}
                row.update({c: result.get(c) for c in METRIC_COLUMNS})
                row["run_dir"] = str(Path("runs") / key) if files else ""
                row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                record_result(out, key, row, files)  # the truth, written before the table
                replaces = key in rows
                rows[key] = row
                if replaces:  # --retry-errors: the new row takes the old one's place
                    table.write_all(list(rows.values()))
                else:
                    table.append(row)
                summary.ran += 1
                summary.failed += result["status"] != "ok"
                if on_result is not None:
                    on_result(row)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return finish()


__all__ = [
    "ResultsTable", "SweepConfig", "SweepSettings", "SweepSummary", "claim_output", "experiment_key", "rebuild_table",
    "record_result", "run_sweep",
]
