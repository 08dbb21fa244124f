"""Config system: typed overrides, unknown keys rejected, YAML round trip."""

from __future__ import annotations

import pytest

from reelrec.cli.registry import ExperimentConfig, resolve_config
from reelrec.config import ConfigError, apply_overrides, from_yaml, to_yaml


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            "--train.epochs=7",
            "--train.lr=0.01",
            "--train.progress=false",
            "--eval.ks=1,5",
            "--sasrec.loss=bce",
        ],
    )
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.01
    assert cfg.train.progress is False
    assert cfg.eval.ks == [1, 5]
    assert cfg.sasrec.loss == "bce"
    assert ExperimentConfig().train.epochs == 200  # the original is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--train.epoch=3", "valid keys"),
        ("--nope.x=1", "valid keys"),
        ("--train.epochs=three", "expected an integer"),
        ("--train.progress=maybe", "boolean"),
        ("--train", "must look like"),
        ("--train=3", "is a section"),
    ],
)
def test_bad_overrides_are_rejected_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), ["--sasrec.hidden=32", "--data.dataset=ml-100k"])
    to_yaml(cfg, tmp_path / "c.yaml")
    assert from_yaml(ExperimentConfig, tmp_path / "c.yaml") == cfg


def test_yaml_unknown_key_names_file(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*epochz"):
        from_yaml(ExperimentConfig, tmp_path / "c.yaml")


def test_resolve_config_presets_and_errors(tmp_path):
    assert resolve_config("sasrec-kuairand", []).train.lr == 5e-3
    with pytest.raises(ConfigError, match="unknown config"):
        resolve_config("no-such-preset", [])
    with pytest.raises(ConfigError, match="unknown 'bert'"):
        resolve_config("sasrec", ["--model=bert"])


def test_frozen_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        cfg = resolve_config(str(f), [])
        assert cfg.model == f.name.split("-")[0]  # configs/<model>-<dataset>[-variant].yaml
        assert cfg.data.dataset in f.name
        text = f.read_text()
        assert "# Command:" in text and "frozen" in text  # STYLE.md: date, table, command
