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
``[base]``. Every experiment is identified by a hash of its full config (``key``); a run skips keys already in
the table, so a stopped sweep resumes and a finished one does no work. A failing experiment becomes a row
with ``status = "error"`` and its message, and the others go on (rerun them with ``retry_errors``).

Ray: a local Ray is started for the run (``num_cpus`` cores, no dashboard) and shut down after, unless Ray is
already initialised in the process; ``address`` connects to an existing cluster instead (gradleak must be
installed on its workers). Each experiment is one task of ``cpus_per_task`` CPUs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak.config import build, check_tables, coerce, describe, field_names, field_type
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig

METRIC_COLUMNS = (
    "psnr", "ssim", "mse", "label_accuracy", "iterations", "wall_time_s", "run_dir", "worker", "finished_at",
)
RUN_FILES = ("grid.png", "trace.png", "metrics.json")


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

    def __post_init__(self) -> None:
        if Path(self.table).suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"table must end in .csv or .parquet, got {self.table!r}")
        if not self.cpus_per_task > 0:
            raise ConfigError(f"cpus_per_task must be positive, got {self.cpus_per_task}")

    @property
    def table_path(self) -> Path:
        return Path(self.out) / self.table


@dataclass(frozen=True)
class SweepConfig:
    """Settings, the base experiment and the grid axes (validated), with the file they came from."""

    settings: SweepSettings = field(default_factory=SweepSettings)
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    source: str = "<sweep>"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<sweep>") -> SweepConfig:
        check_tables(data, ("sweep", "base", "grid"), source)
        settings = build(SweepSettings, data.get("sweep", {}), source, "sweep")
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
        config = cls(settings, base, grid, source)
        config.experiments()  # every combination must be a valid ExperimentConfig
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as the tables of its file (``sweep``, ``base``, ``grid``), plus where it came from."""
        return {"source": self.source, "sweep": dataclasses.asdict(self.settings), "base": self.base, "grid": self.grid}

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
    """The sweep's results, one row per experiment, in CSV (appended row by row) or Parquet (rewritten
    atomically after each row). Reading gives strings for CSV cells; ``typed_rows`` parses numbers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parquet = self.path.suffix.lower() == ".parquet"

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        if self.parquet:
            import pyarrow.parquet as pq

            return pq.read_table(self.path).to_pylist()
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def _write_all(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), tmp)
        else:
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {k: _cell(v) for k, v in row.items()}
        columns = list(row)
        if self.parquet or not self.path.exists():
            rows = self.read() + [row]
            self._write_all(rows, _union([list(r) for r in rows]))
            return
        with self.path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if header == columns:
            with self.path.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=columns).writerow(row)
        else:  # the config gained a field: rewrite with the union of columns
            rows = self.read() + [row]
            self._write_all(rows, _union([header, columns]))

    def typed_rows(self) -> list[dict[str, Any]]:
        return [{k: parse_cell(v) for k, v in r.items()} for r in self.read()]


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
    import tempfile
    import traceback

    import torch

    from gradleak.experiment import run_experiment

    torch.set_num_threads(max(1, threads))
    start = time.perf_counter()
    try:
        config = ExperimentConfig(**config_dict)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_experiment(config, out=tmp)
            files = {n: (Path(tmp) / n).read_bytes() for n in RUN_FILES if (Path(tmp) / n).exists()}
        mean = result.metrics["mean"]
        return {
            "status": "ok", "error": "", **{k: mean.get(k) for k in ("psnr", "ssim", "mse", "label_accuracy")},
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
    total: int
    skipped: int
    ran: int
    failed: int
    table: Path
    wall_time_s: float


def run_sweep(
    config: SweepConfig,
    address: str | None = None,
    retry_errors: bool | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> SweepSummary:
    """Run every experiment of ``config`` not yet in its table as a Ray task; stream rows in as they finish."""
    import ray

    start = time.perf_counter()
    settings = config.settings
    retry = settings.retry_errors if retry_errors is None else retry_errors
    table = ResultsTable(settings.table_path)
    out = Path(settings.out)
    existing = {r.get("key"): r.get("status") for r in table.read()}
    experiments = config.experiments()
    combos = list(config.combinations())
    todo = []
    for cfg, combo in zip(experiments, combos):
        key = experiment_key(cfg)
        status = existing.get(key)
        if status == "ok" or (status == "error" and not retry):
            continue
        todo.append((key, cfg, combo))
    summary = SweepSummary(len(experiments), len(experiments) - len(todo), 0, 0, table.path, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
    if not todo:
        summary.wall_time_s = time.perf_counter() - start
        return summary
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
                run_dir = ""
                if files:
                    folder = out / "runs" / key
                    folder.mkdir(parents=True, exist_ok=True)
                    for name, data in files.items():
                        (folder / name).write_bytes(data)
                    run_dir = str(Path("runs") / key)
                row = {"key": key, "status": result["status"], "error": result.get("error", ""),
                       **{k: v for k, v in combo.items() if k not in fields}, **cfg.to_dict()}
                row.update({c: result.get(c) for c in METRIC_COLUMNS})
                row["run_dir"] = run_dir
                row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
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
    summary.wall_time_s = time.perf_counter() - start
    return summary


__all__ = ["ResultsTable", "SweepConfig", "SweepSettings", "SweepSummary", "experiment_key", "run_sweep"]
