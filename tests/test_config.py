"""Typed config files: valid TOML and YAML load; an unknown key or a wrong type names the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.experiment import load_experiment_config
from gradleak.fl.simulation import load_audit_config
from gradleak.sweep import load_sweep_config
from gradleak.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_experiment_toml_and_yaml_give_the_same_config(tmp_path):
    toml = tmp_path / "e.toml"
    toml.write_text('dataset = "digits"\nbatch_size = 2\nindices = [3, 4]\nlocal_lr = 1\n'
                    'attack_kwargs = { iterations = 50 }\n')
    yaml = tmp_path / "e.yaml"
    yaml.write_text("experiment:\n  dataset: digits\n  batch_size: 2\n  indices: [3, 4]\n  local_lr: 1\n"
                    "  attack_kwargs: {iterations: 50}\n")
    a, b = load_experiment_config(toml), load_experiment_config(yaml)
    assert a == b
    assert a.indices == (3, 4) and a.local_lr == 1.0 and isinstance(a.local_lr, float)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('datset = "digits"\n', ["datset", "unknown key"]),
        ('batch_size = "two"\n', ["batch_size", "an integer", "'two'"]),
        ("leak_labels = 1\n", ["leak_labels", "true or false"]),
        ('protocol = "fedprox"\n', ["protocol", "'fedsgd'"]),
        ('attack = "nope"\n', ["unknown attack", "nope"]),
        ("indices = [1, 2.5]\n", ["indices", "a list of an integer"]),
    ],
)
def test_experiment_errors_name_the_key_and_the_file(tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiment_config(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_sweep_errors_name_table_key_and_file(tmp_path):
    path = tmp_path / "s.yaml"
    cases = {
        "sweep: {outt: x}\n": ["[sweep]", "outt"],
        "grid: {batch_size: [1, two]}\n": ["[grid]", "batch_size", "[1]"],
        "grid: {defenses: [{defence: x}]}\n": ["grid.defenses[0]", "defence"],
        "grid: {seed: 3}\n": ["seed", "non-empty list"],
        "grids: {seed: [1]}\n": ["unknown table", "grids"],
        "sweep: {table: out.xlsx}\n": ["[sweep]", ".parquet"],
    }
    for text, needles in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_sweep_config(path)
        assert str(path) in str(info.value), text
        for needle in needles:
            assert needle in str(info.value), (text, str(info.value))


def test_sweep_grid_expands_and_merges_table_fields(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[base]\nattack_kwargs = { iterations = 10, restarts = 1 }\n'
        '[grid]\nattack_kwargs = [{ iterations = 20 }, { restarts = 2 }]\nseed = [0, 1, 2]\n'
        'stage = [{ pretrain_steps = 0 }, { pretrain_steps = 5, model_mode = "eval" }]\n'
    )
    experiments = load_sweep_config(path).experiments()
    assert len(experiments) == 12
    assert {tuple(sorted(e.attack_kwargs.items())) for e in experiments} == {
        (("iterations", 20), ("restarts", 1)), (("iterations", 10), ("restarts", 2))
    }
    assert {(e.pretrain_steps, e.model_mode) for e in experiments} == {(0, "train"), (5, "eval")}


def test_examples_load():
    assert len(load_sweep_config(EXAMPLES / "sweep_small.toml").experiments()) == 12
    assert len(load_sweep_config(EXAMPLES / "sweep_small.yaml").experiments()) == 6
    pytest.importorskip("flwr")
    fed, settings = load_audit_config(EXAMPLES / "fl_audit.toml")
    assert fed.num_clients == 4 and settings.attack == "idlg"


def test_audit_config_errors(tmp_path):
    pytest.importorskip("flwr")
    path = tmp_path / "a.toml"
    path.write_text("[federation]\nnum_clients = 4.5\n")
    with pytest.raises(ConfigError, match=r"a.toml \[federation\]: key 'num_clients' must be an integer"):
        load_audit_config(path)
    path.write_text("[audit]\naggregate_as = 'everything'\n")
    with pytest.raises(ConfigError, match=r"\[audit\]: key 'aggregate_as'"):
        load_audit_config(path)


# --- hostile config files (issue 11): one-line ConfigErrors naming the file, fast ---


def test_non_utf8_config_names_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('dataset = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text \(byte 14\)"):
        load_experiment_config(path)


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    import time

    # "billion laughs": nine levels of ten aliases each expand to 10^9 strings
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML aliases expand to more than 100000 values"):
        load_sweep_config(path)
    assert time.perf_counter() - start < 2.0


def test_recursive_yaml_and_small_aliases(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("base: &b\n  dataset: digits\n  self: *b\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: a YAML alias refers to the node that contains it"):
        load_sweep_config(path)
    ok = tmp_path / "ok.yaml"  # a modest alias is ordinary YAML and still loads
    ok.write_text("base: &b {dataset: digits, image_size: 16, attack_kwargs: {iterations: 5}}\ngrid:\n"
                  "  runs: [*b, *b]\n")
    assert len(load_sweep_config(ok).experiments()) == 2


def test_huge_config_file_is_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(b"# " + b"x" * (2 * 1024 * 1024) + b"\n")
    with pytest.raises(ConfigError, match=r"big\.toml: \d+ bytes, above the 1048576-byte limit"):
        load_experiment_config(path)


def test_attack_settings_are_checked_when_the_config_loads(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('attack = "idlg"\nattack_kwargs = { iterations = "many" }\n')
    with pytest.raises(ConfigError, match=r"attack 'idlg' setting 'iterations' must be an integer, got str 'many'"):
        load_experiment_config(path)
    path.write_text('attack = "dlg"\nattack_kwargs = { iterations = 0 }\n')
    with pytest.raises(ConfigError, match=r"iterations must lie in \[1, inf\), got 0"):
        load_experiment_config(path)
    path.write_text('attack = "dlg"\nattack_kwargs = { iteratons = 5 }\n')
    with pytest.raises(ConfigError, match=r"attack 'dlg' has no setting 'iteratons'"):
        load_experiment_config(path)
