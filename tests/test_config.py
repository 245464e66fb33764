"""Configs: every shipped config loads; overrides, unknown keys and bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptalign.config import ConfigError, build_config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _load_integrity(path):
    from ptalign.integrity.pipeline import load_integrity_config

    return load_integrity_config(path)


def _load_train(path):
    cfg = load_config(path)
    assert cfg.loss.build() is not None
    return cfg


# config files by name prefix: (loader, the command that launches it)
KINDS = {"integrity": (_load_integrity, "ptalign integrity run")}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    load, command = KINDS.get(path.name.split("_")[0], (_load_train, "ptalign train"))
    assert load(path) is not None
    assert command in path.read_text()  # each config names the command that launches it


def test_overrides_are_typed_and_reach_the_loss():
    cfg = build_config({"loss": {"name": "prospect"}}, ["train.learning_rate=3e-4", "loss.loss_aversion=2.25", "data.limit=10"])
    assert cfg.train.learning_rate == 3e-4 and cfg.data.limit == 10
    assert cfg.loss.build().loss_aversion == 2.25


def test_params_block_and_flat_loss_keys_are_equivalent():
    a = build_config({"loss": {"name": "kto", "params": {"beta": 0.3}}})
    b = build_config({"loss": {"name": "kto", "beta": 0.3}})
    assert a.loss == b.loss


@pytest.mark.parametrize(
    "raw,overrides,message",
    [
        ({"trian": {}}, [], "unknown group(s) trian"),
        ({"train": {"lr": 1}}, [], "unknown key(s) train.lr; known:"),
        ({}, ["train.batch_size=0"], "train.batch_size must be a positive integer"),
        ({}, ["train.schedule=exp"], "cosine, linear or constant"),
        ({}, ["loss.name=ktoo"], "known: dpo, ipo, kto, prospect, sft, simpo"),
        ({}, ["loss.betta=1"], "accepted: beta"),
        ({}, ["learning_rate=1"], "group.key=value"),
    ],
)
def test_bad_configs_fail_with_a_useful_message(raw, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        build_config(raw, overrides)
    assert message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
