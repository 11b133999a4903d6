"""lab_utils.model_sizes: counts from published configs on the meta device, their breakdown, the lecture's errata."""

import dataclasses
import json

import pytest
import torch

from lab_utils import assets, model_sizes
from lab_utils.memory import MIB, count_parameters

# Counted with transformers 5.24 on the meta device and cross-checked with the model cards (BERT-base 110M,
# GPT-2 medium 355M / large 774M, Llama 2 7B, Mistral 7.24B, Mixtral 46.7B, Llama 3 70.6B, BLOOM 176B).
VERIFIED = {
    "BERT-base": 109_482_240,
    "GPT2-medium": 354_823_168,
    "GPT2-large": 774_030_080,
    "Llama-2-7B": 6_738_415_616,
    "Mistral-7B": 7_241_732_096,
    "Mixtral-8x7B": 46_702_792_704,
    "Llama-3-70B": 70_553_706_496,
    "BLOOM-176B": 176_247_271_424,
    "all-MiniLM-L6-v2": 22_713_216,
    "SmolLM2-135M": 134_515_008,
}


@pytest.mark.parametrize("name", list(VERIFIED))
def test_counts_and_breakdown(name):
    n = model_sizes.count_published(name)
    assert n == VERIFIED[name]
    parts = model_sizes.parameter_breakdown(name)
    assert tuple(parts) == model_sizes.BREAKDOWN_KEYS and sum(parts.values()) == n
    assert parts["other"] == 0 and min(parts["embeddings"], parts["attention"], parts["mlp"], parts["norms"]) > 0


def test_every_published_model_is_verified():
    assert set(model_sizes.PUBLISHED) == set(VERIFIED)
    for model in model_sizes.PUBLISHED.values():
        assert model.source.count("https://huggingface.co/") == 1 and model.source.endswith(("config.json", ")"))


def test_lecture_figures_and_errata():
    n_bert = model_sizes.count_published("BERT-base")
    assert round(4 * n_bert / MIB) == 418  # the lecture's "418 Mo" is 4 bytes x 109.5M in MiB
    assert model_sizes.PUBLISHED["GPT2-large"].lecture_claim == 778e6
    assert round(model_sizes.count_published("GPT2-large") / 1e6) == 774  # erratum: 774M, not 778M
    mixtral, mistral = model_sizes.parameter_breakdown("Mixtral-8x7B"), model_sizes.parameter_breakdown("Mistral-7B")
    # Mixtral = Mistral-7B whose MLP is replaced by 8 experts of the same shape (+ a router); attention, embeddings,
    # norms and the LM head are shared, so it has 46.7B parameters, not 56B (nor 8 x 7.24B = 57.9B).
    for shared in ("embeddings", "attention", "norms", "head"):
        assert mixtral[shared] == mistral[shared] > 0
    assert mixtral["mlp"] == 8 * mistral["mlp"] and mixtral["router"] == 32 * 8 * 4096 and mistral["router"] == 0
    n_mixtral, n_mistral = model_sizes.count_published("Mixtral-8x7B"), model_sizes.count_published("Mistral-7B")
    assert n_mixtral == n_mistral + 7 * mistral["mlp"] + mixtral["router"]
    assert round(n_mixtral / 1e9, 1) == 46.7 and round(8 * n_mistral / 1e9, 1) == 57.9
    assert model_sizes.PUBLISHED["Mixtral-8x7B"].lecture_claim == 56e9


def test_meta_count_equals_the_real_course_models():
    # the meta-device count is the count of the real weights: MiniLM as loaded by the course
    minilm = assets.load_minilm()
    assert count_parameters(minilm) == model_sizes.count_published("all-MiniLM-L6-v2")
    assert all(p.device.type == "meta" for p in model_sizes.build_meta_model("SmolLM2-135M").parameters())


def test_course_configs_come_from_their_files():
    for name, folder in (("all-MiniLM-L6-v2", assets.minilm_dir()), ("SmolLM2-135M", assets.smollm2_dir())):
        model = model_sizes.PUBLISHED[name]
        on_disk = json.loads((folder / "config.json").read_text())
        assert model.config == on_disk and model.family == on_disk["model_type"]
    config = model_sizes.build_config("SmolLM2-135M")
    assert (config.num_hidden_layers, config.num_key_value_heads, config.tie_word_embeddings) == (30, 3, True)


def test_build_config_uses_published_values():
    config = model_sizes.build_config("Mixtral-8x7B")
    assert (config.model_type, config.num_local_experts, config.num_key_value_heads) == ("mixtral", 8, 8)
    assert model_sizes.build_config("GPT2-large").n_embd == 1280


def test_published_table():
    table = model_sizes.published_table(["GPT2-large", "BERT-base"])
    assert list(table.index) == ["BERT-base", "GPT2-large"]  # smallest first
    row = table.loc["BERT-base"]
    assert row["params"] == VERIFIED["BERT-base"] and row["lecture_claim"] == 110e6
    assert row["inference fp32"] == pytest.approx(4 * VERIFIED["BERT-base"] / 2**30)
    assert row["fp32 GB"] == pytest.approx(4 * VERIFIED["BERT-base"] / 1e9)
    assert [row[c] / row["inference fp32"] for c in ("SGD", "momentum", "Adam")] == pytest.approx([2, 3, 4])
    assert len(model_sizes.published_table()) == len(model_sizes.PUBLISHED)


def test_unknown_names_list_the_known_ones():
    for fn in (model_sizes.count_published, model_sizes.parameter_breakdown, model_sizes.build_config):
        with pytest.raises(ValueError, match=r"unknown model 'GPT-5'.*'BERT-base'.*'SmolLM2-135M'"):
            fn("GPT-5")
    with pytest.raises(ValueError, match="unknown model"):
        model_sizes.published_table(["bert"])


def test_meta_models_take_no_memory():
    model = model_sizes.build_meta_model("BLOOM-176B")
    assert next(model.parameters()).device == torch.device("meta")


def test_config_files_are_read_outside_the_meta_device(monkeypatch):
    # On a fresh machine reading SmolLM2's config first builds its cache with from_pretrained, which raises under
    # `with torch.device("meta")`. Whatever config_file does must happen before the meta context is entered.
    published = model_sizes.PUBLISHED["SmolLM2-135M"]
    real_file = published.config_file

    def reading_must_not_be_on_meta():
        assert torch.empty(1).device.type != "meta", "the config file was read inside the meta-device context"
        return real_file()

    monkeypatch.setitem(model_sizes.PUBLISHED, "SmolLM2-135M",
                        dataclasses.replace(published, config_file=reading_must_not_be_on_meta))  # config not cached
    assert model_sizes.build_meta_model("SmolLM2-135M").model.embed_tokens.weight.is_meta
