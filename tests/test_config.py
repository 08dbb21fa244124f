"""Config system: typed overrides, unknown keys rejected, YAML round trip."""

from __future__ import annotations

import pytest

from reelrec.config import ConfigError, apply_overrides
from reelrec.tasks.config import (
    config_dict,
    load_config_file,
    load_saved_config,
    save_config,
)
from reelrec.tasks.registry import MODELS, ExperimentConfig, resolve_config


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
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config_file(tmp_path / "c.yaml") == cfg
    assert load_saved_config(tmp_path / "c.yaml") == cfg


def test_yaml_unknown_key_names_file(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*epochz"):
        load_config_file(tmp_path / "c.yaml")


@pytest.mark.parametrize("model", list(MODELS))
def test_saved_config_holds_only_the_models_sections(tmp_path, model):
    """config.yaml = data, train, eval + the model's own sections (issue 20, point 3)."""
    cfg = ExperimentConfig(model=model)
    save_config(cfg, tmp_path / "c.yaml")
    import yaml

    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert list(saved) == ["model", "name", "data", "train", "eval", *MODELS[model].sections]
    assert list(config_dict(cfg)) == list(saved)


def test_another_models_section_is_an_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'can.orders' for model 'sasrec'"):
        resolve_config("sasrec", ["--can.orders=2"])
    with pytest.raises(ConfigError, match=r"unknown config key 'sasrec.hidden' for model 'can'"):
        resolve_config("can", ["--sasrec.hidden=8"])
    (tmp_path / "c.yaml").write_text("model: sasrec\nelastic:\n  hidden: 8\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'elastic'"):
        resolve_config(str(tmp_path / "c.yaml"), [])
    assert resolve_config("can", ["--can.orders=3"]).can.orders == 3  # its own section is fine


def test_old_saved_configs_with_every_section_still_load(tmp_path):
    """Run folders written before per-model sections held all 14 sections: they load, and the
    sections the model does not read are dropped."""
    import yaml

    from reelrec.config import to_dict

    full = to_dict(ExperimentConfig(model="din"))
    full["can"]["orders"] = 5  # another model's value: ignored, not an error
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(full))
    cfg = load_saved_config(tmp_path / "config.yaml")
    assert cfg.model == "din" and cfg.can == ExperimentConfig().can
    (tmp_path / "config.yaml").write_text("model: frobnicator\n")
    with pytest.raises(ConfigError, match="retrain it with `reelrec train"):
        load_saved_config(tmp_path / "config.yaml")


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
