"""Tests for lab_utils.prompt_tuning: PromptTuning computes what PEFT's PromptTuningConfig computes (same prompt
weights -> same logits, on a tiny BERT and on the real MiniLM), only the prompt and the head train, the mask and
per-token labels are extended, LabelWordClassifier reads the label words at the last real token, text
initialisation copies the embeddings, nearest_tokens finds them back, and bad inputs raise messages that say what
to change.

Tolerance: both paths run the same float32 operations on the same tensors (concatenate, then the model), so they
agree to rounding: ATOL = 1e-6 on logits of order 1 (RTOL 1e-5).
"""

import copy

import pytest
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from lab_utils import assets
from lab_utils.objectives import IGNORE_INDEX
from lab_utils.prompt_tuning import LabelWordClassifier, PromptTuning, nearest_tokens, prepend_prompt

ATOL, RTOL = 1e-6, 1e-5
B, T, H, V, N = 3, 7, 16, 50, 4


def tiny_bert(num_labels=2):
    config = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()  # eval: dropout off, so forwards are deterministic


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # one padded row: the extended mask must keep its zeros
    return {"input_ids": ids, "attention_mask": mask}


def peft_and_ours(base, n):
    """PEFT's prompt tuning and ours on two copies of ``base``, with the same (random, non-token) prompt."""
    peft_model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type=TaskType.SEQ_CLS,
                                                                       num_virtual_tokens=n)).eval()
    ours = PromptTuning(copy.deepcopy(base), n).eval()
    with torch.no_grad():
        ours.prompt.copy_(peft_model.prompt_encoder["default"].embedding.weight)
    return peft_model, ours


# ---------------------------------------------------------------- equivalence with PEFT


def test_logits_match_peft_on_a_tiny_bert():
    peft_model, ours = peft_and_ours(tiny_bert(), N)
    inputs, labels = batch(), torch.tensor([0, 1, 1])
    with torch.no_grad():
        want, got = peft_model(**inputs, labels=labels), ours(**inputs, labels=labels)
        plain = ours.model(**inputs).logits
    assert got.logits.shape == (B, 2)
    torch.testing.assert_close(got.logits, want.logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(got.loss, want.loss, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(got.logits, plain, atol=1e-3)  # non-vacuity: the prompt changes the output


def test_a_different_prompt_no_longer_matches_peft():
    peft_model, ours = peft_and_ours(tiny_bert(), N)
    with torch.no_grad():
        # the first virtual token, the one BERT's pooler reads; not a constant shift (LayerNorm removes the mean)
        ours.prompt[0] += torch.linspace(-1, 1, H)
        diff = (ours(**batch()).logits - peft_model(**batch()).logits).abs().max()
    assert diff > 1e-3


def test_logits_match_peft_on_minilm():
    minilm_classifier = assets.load_minilm(AutoModelForSequenceClassification, num_labels=2).eval()
    peft_model, ours = peft_and_ours(minilm_classifier, 5)
    tokenizer = assets.load_minilm_tokenizer()
    inputs = tokenizer(["what a lovely day", "the bus was late again and nobody said sorry"], padding=True,
                       return_tensors="pt")
    inputs.pop("token_type_ids", None)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, peft_model(**inputs).logits, atol=ATOL, rtol=RTOL)
    hidden = minilm_classifier.config.hidden_size
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == 5 * hidden + hidden * 2 + 2


def test_token_type_ids_are_extended_like_peft():
    peft_model, ours = peft_and_ours(tiny_bert(), N)
    inputs = batch()
    inputs["token_type_ids"] = torch.zeros(B, T, dtype=torch.long)
    inputs["token_type_ids"][:, 3:] = 1  # a second segment, so the type embeddings matter
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, peft_model(**inputs).logits, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- shapes, freezing, gradients


def test_prompt_shape_and_trainable_count():
    model = PromptTuning(tiny_bert(), N)
    assert isinstance(model.prompt, torch.nn.Parameter) and model.prompt.shape == (N, H)
    assert model.n_virtual_tokens == N and model.config is model.model.config
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt", "model.classifier.weight", "model.classifier.bias"}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == N * H + (H * 2 + 2)


def test_trainable_empty_freezes_the_head_too():
    model = PromptTuning(tiny_bert(), N, trainable=())
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["prompt"]


def test_gradient_reaches_only_prompt_and_head():
    model = PromptTuning(tiny_bert(), N)
    model(**batch(), labels=torch.tensor([0, 1, 1])).loss.backward()
    for name, p in model.named_parameters():
        if name in ("prompt", "model.classifier.weight", "model.classifier.bias"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_random_init_has_the_embeddings_scale():
    model = PromptTuning(tiny_bert(), 200)  # 200 x 16 draws: the std is estimated to a few percent
    want = model.model.get_input_embeddings().weight.std().item()
    assert abs(model.prompt.std().item() / want - 1) < 0.1


# ---------------------------------------------------------------- the mask and the prepend step


def test_prepend_prompt_puts_the_prompt_first_and_extends_the_mask():
    g = torch.Generator().manual_seed(2)
    prompt, embeds = torch.randn(N, H, generator=g), torch.randn(B, T, H, generator=g)
    mask = batch()["attention_mask"]
    out, out_mask = prepend_prompt(prompt, embeds, mask)
    assert out.shape == (B, N + T, H) and out_mask.shape == (B, N + T) and out_mask.dtype == mask.dtype
    for b in range(B):
        assert torch.equal(out[b, :N], prompt) and torch.equal(out[b, N:], embeds[b])
    assert torch.equal(out_mask[:, :N], torch.ones(B, N, dtype=torch.long)) and torch.equal(out_mask[:, N:], mask)
    _, all_ones = prepend_prompt(prompt, embeds)
    assert torch.equal(all_ones, torch.ones(B, N + T, dtype=torch.long))


def test_forward_passes_the_extended_mask_and_embeddings():
    model = PromptTuning(tiny_bert(), N)
    seen = {}
    model.model.forward = lambda **kw: seen.update(kw)  # record what the wrapped model receives
    inputs = batch()
    model(**inputs)
    assert set(seen) == {"inputs_embeds", "attention_mask", "labels"}
    assert seen["inputs_embeds"].shape == (B, N + T, H) and seen["labels"] is None
    assert torch.equal(seen["attention_mask"], torch.cat([torch.ones(B, N, dtype=torch.long),
                                                          inputs["attention_mask"]], dim=1))
    assert torch.equal(seen["inputs_embeds"][0, :N], model.prompt.detach())


def test_padding_is_still_ignored():
    # Property: with the extended mask, changing a padded token's id does not change that row's logits.
    model, inputs = PromptTuning(tiny_bert(), N), batch()
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["input_ids"][1, 6] = 7
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, model(**changed).logits, atol=ATOL, rtol=RTOL)


def test_per_token_labels_get_ignored_positions(tiny_llama):
    model = PromptTuning(tiny_llama, 3, trainable=())
    ids = torch.randint(3, 64, (2, 5), generator=torch.Generator().manual_seed(3))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 3 + 5, 64)
    # labels become (-100, -100, -100, ids): the last virtual token predicts the first real one (as PEFT's)
    by_hand = torch.nn.functional.cross_entropy(out.logits[:, 2:-1].reshape(-1, 64), ids.reshape(-1))
    torch.testing.assert_close(out.loss, by_hand, atol=ATOL, rtol=RTOL)
    assert IGNORE_INDEX == -100


# ---------------------------------------------------------------- text initialisation and nearest tokens


def test_init_from_token_ids_copies_their_embeddings():
    ids = [11, 12, 13, 11]
    model = PromptTuning(tiny_bert(), 4, init_token_ids=ids)
    weight = model.model.get_input_embeddings().weight
    assert torch.equal(model.prompt.detach(), weight[ids].detach())
    assert model.prompt.data_ptr() != weight.data_ptr()  # a copy: training the prompt leaves the vocabulary alone
    PromptTuning(tiny_bert(), 2, init_token_ids=torch.tensor([3, 4]))  # a tensor works too


class IdTokenizer:
    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def test_nearest_tokens_of_an_untrained_text_prompt_are_its_tokens():
    ids = [21, 5, 40, 9, 33]
    model = PromptTuning(tiny_bert(), 5, init_token_ids=ids)
    nearest = nearest_tokens(model.prompt, model.model.get_input_embeddings().weight, IdTokenizer(), k=3)
    assert [row[0] for row in nearest] == [f"t{i}" for i in ids]
    assert all(len(row) == 3 and len(set(row)) == 3 for row in nearest)


def test_nearest_tokens_uses_cosine_not_distance():
    emb = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0]])
    # (3, 0.4) is nearest to row 0 in Euclidean distance, but points almost along row 1
    assert nearest_tokens(torch.tensor([[3.0, 0.4]]), emb, IdTokenizer(), k=1) == [["t1"]]


def test_nearest_tokens_on_minilm_finds_words():
    tokenizer = assets.load_minilm_tokenizer()
    weight = assets.load_minilm().get_input_embeddings().weight
    ids = tokenizer("positive or negative", add_special_tokens=False)["input_ids"]
    assert [row[0] for row in nearest_tokens(weight[ids], weight, tokenizer, k=2)] == ["positive", "or", "negative"]


# ---------------------------------------------------------------- LabelWordClassifier (a causal LM as a classifier)

LABEL_IDS = [5, 9]


def right_padded():
    ids = torch.randint(3, 64, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # row 1 has 4 real tokens
    ids[1, 4:] = 0  # pad id
    return ids, mask


def test_label_words_are_read_at_the_last_real_token(tiny_llama):
    ids, mask = right_padded()
    clf = LabelWordClassifier(tiny_llama, LABEL_IDS)
    labels = torch.tensor([1, 0])
    with torch.no_grad():
        out = clf(ids, mask, labels=labels)
        lm = tiny_llama(input_ids=ids, attention_mask=mask).logits  # (2, 6, 64)
    want = torch.stack([lm[0, 5, LABEL_IDS], lm[1, 3, LABEL_IDS]])
    assert out.logits.shape == (2, 2)
    torch.testing.assert_close(out.logits, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(want, labels), atol=ATOL, rtol=RTOL)
    assert not torch.allclose(out.logits[1], lm[1, 5, LABEL_IDS])  # non-vacuity: a padded position differs


def test_label_words_skip_the_virtual_tokens(tiny_llama):
    ids, mask = right_padded()
    prompted = PromptTuning(tiny_llama, 3, trainable=())
    with torch.no_grad():
        out = LabelWordClassifier(prompted, LABEL_IDS)(ids, mask)
        lm = prompted(input_ids=ids, attention_mask=mask).logits  # (2, 3 + 6, 64)
    want = torch.stack([lm[0, 3 + 5, LABEL_IDS], lm[1, 3 + 3, LABEL_IDS]])
    torch.testing.assert_close(out.logits, want, atol=ATOL, rtol=RTOL)


def test_label_word_classifier_trains_only_the_prompt(tiny_llama):
    clf = LabelWordClassifier(PromptTuning(tiny_llama, 2, trainable=()), LABEL_IDS)
    ids, mask = right_padded()
    clf(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    assert [name for name, p in clf.named_parameters() if p.grad is not None] == ["lm.prompt"]


def test_label_word_classifier_bad_inputs(tiny_llama):
    with pytest.raises(ValueError, match="distinct token ids"):
        LabelWordClassifier(tiny_llama, [5, 5])
    with pytest.raises(ValueError, match="distinct token ids"):
        LabelWordClassifier(tiny_llama, [5])
    ids, mask = right_padded()
    with pytest.raises(ValueError, match="right padding"):
        LabelWordClassifier(tiny_llama, LABEL_IDS)(ids, mask.flip(1))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_bad_n_virtual_tokens(n):
    with pytest.raises(ValueError, match="n_virtual_tokens must be an int >= 1"):
        PromptTuning(tiny_bert(), n)


def test_wrong_number_of_init_ids():
    with pytest.raises(ValueError, match="init_token_ids has 3 ids but n_virtual_tokens=4"):
        PromptTuning(tiny_bert(), 4, init_token_ids=[1, 2, 3])


def test_init_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"must lie in \[0, 50\)"):
        PromptTuning(tiny_bert(), 2, init_token_ids=[1, 50])


def test_unknown_trainable_module_lists_the_modules():
    with pytest.raises(ValueError, match=r"\['score'\] match no module .*\['bert', 'classifier', 'dropout'\]"):
        PromptTuning(tiny_bert(), 2, trainable=("score",))


def test_not_a_hugging_face_model():
    with pytest.raises(TypeError, match="no get_input_embeddings"):
        PromptTuning(torch.nn.Linear(3, 3), 2, trainable=())


def test_forward_refuses_position_ids_and_inputs_embeds():
    model = PromptTuning(tiny_bert(), 2)
    for key in ("position_ids", "inputs_embeds"):
        with pytest.raises(ValueError, match=f"do not pass {key}"):
            model(**batch(), **{key: torch.zeros(1)})


def test_prepend_prompt_shape_errors():
    with pytest.raises(ValueError, match="prompt must be"):
        prepend_prompt(torch.zeros(H), torch.zeros(B, T, H))
    with pytest.raises(ValueError, match="hidden size"):
        prepend_prompt(torch.zeros(N, H), torch.zeros(B, T, H + 1))
    with pytest.raises(ValueError, match="attention_mask must be"):
        prepend_prompt(torch.zeros(N, H), torch.zeros(B, T, H), torch.ones(B, T + 1))


def test_nearest_tokens_bad_inputs():
    emb = torch.zeros(10, 4)
    with pytest.raises(ValueError, match="same h"):
        nearest_tokens(torch.zeros(2, 3), emb, IdTokenizer())
    with pytest.raises(ValueError, match="k must be an int in"):
        nearest_tokens(torch.zeros(2, 4), emb, IdTokenizer(), k=11)
