"""Averaging the weights of models fine-tuned from one base (model soups)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ptalign import models
from ptalign.cli import app
from ptalign.testing import make_tiny_model


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    return [make_tiny_model(root / f"m{seed}", seed=seed) for seed in range(3)]


def _params(folder):
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())


def test_weighted_mean_of_every_parameter(three_models, tmp_path):
    a, b, _ = three_models
    out = models.average_models([str(a), str(b)], tmp_path / "soup", weights=[1, 3])
    pa, pb, soup = _params(a), _params(b), _params(out)
    assert soup.keys() == pa.keys()
    for name, value in soup.items():
        torch.testing.assert_close(value, 0.25 * pa[name] + 0.75 * pb[name], rtol=0, atol=1e-6)
    # tied: the output layer is the averaged embedding, not averaged twice
    assert not torch.equal(pa["model.embed_tokens.weight"], pb["model.embed_tokens.weight"])
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(merged.lm_head.weight, merged.model.embed_tokens.weight)
    assert (out / "tokenizer.json").is_file()


def test_uniform_default_and_identity(three_models, tmp_path):
    a, b, c = three_models
    out = models.average_models([str(a), str(b), str(c)], tmp_path / "soup")
    pa, pb, pc, soup = _params(a), _params(b), _params(c), _params(out)
    name = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(soup[name], (pa[name] + pb[name] + pc[name]) / 3, rtol=0, atol=1e-6)
    same = models.average_models([str(a), str(a)], tmp_path / "same")
    for key, value in _params(same).items():
        torch.testing.assert_close(value, pa[key], rtol=0, atol=1e-6)


def test_bad_input_is_refused(three_models, tmp_path):
    a, b, _ = three_models
    with pytest.raises(ValueError, match="at least two"):
        models.average_models([str(a)], tmp_path / "x")
    with pytest.raises(ValueError, match="one weight per model"):
        models.average_models([str(a), str(b)], tmp_path / "x", weights=[1.0])
    with pytest.raises(ValueError, match="positive"):
        models.average_models([str(a), str(b)], tmp_path / "x", weights=[1.0, -1.0])
    wide = make_tiny_model(tmp_path / "wide")
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(wide)
    config.intermediate_size = 96
    LlamaForCausalLM(config).save_pretrained(wide)
    with pytest.raises(ValueError, match="shape .* not the same architecture"):
        models.average_models([str(a), str(wide)], tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        models.average_models([str(a), str(b)], tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_cli_carries_the_evaluation_split_mark(three_models, tmp_path):
    import shutil

    a, b, _ = three_models
    marked = tmp_path / "marked"
    shutil.copytree(b, marked)
    mark = {"eval_split": "eval", "why": "aligned on the alignment halves"}
    (marked / "ptalign_eval_split.json").write_text(json.dumps(mark))
    result = CliRunner().invoke(app, ["average", str(a), str(marked), "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "soup" / "ptalign_eval_split.json").read_text()) == mark
    from ptalign.integrity.recipes import required_eval_split

    assert required_eval_split(str(tmp_path / "soup")) == "eval"
    bad = CliRunner().invoke(app, ["average", str(a), "--out", str(tmp_path / "one")])
    assert bad.exit_code == 2 and "at least two" in bad.output
