"""lab_utils.adaptation: the PEFT chapter's bench (batches, fit, clocks, the one test report)."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from lab_utils import adaptation
from lab_utils.classification import wilson_interval


@pytest.fixture(scope="module")
def data():
    return adaptation.load_sentiment(batch_size=8, n_train=40, n_val=24, n_test=20, seed=0)


@pytest.fixture(scope="module")
def minilm():
    return adaptation.new_classifier(seed=0)


def test_batches_are_padded_to_their_longest_tweet_and_counted(data):
    assert data.sizes == {"train": 40, "validation": 24, "test": 20}
    assert [len(b["labels"]) for b in data.test] == [8, 8, 4]
    for batch in data.train + data.validation + data.test:
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[1] <= data.max_length
        assert mask.sum(1).max() == ids.shape[1]  # the longest row has no padding
        assert (ids[mask == 0] == 0).all()  # [PAD] is id 0 in MiniLM's vocabulary
        assert (ids[:, 0] == 101).all()  # every row starts with [CLS]
    assert len(data.train_labels) == 40 and set(np.unique(data.train_labels)) <= {0, 1}
    assert data.label_names == ["negative", "positive"]
    assert "40 train" in data.describe()


def test_the_seed_draws_the_sample_and_the_order(data):
    again = adaptation.load_sentiment(batch_size=8, n_train=40, n_val=24, n_test=20, seed=0)
    other = adaptation.load_sentiment(batch_size=8, n_train=40, n_val=24, n_test=20, seed=1)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(data.train, again.train, strict=True))
    assert not torch.equal(data.train[0]["input_ids"], other.train[0]["input_ids"])


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 8, "n_train": 0},
                                    {"batch_size": 8, "n_val": -3}, {"batch_size": 8, "max_length": 2}])
def test_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError):
        adaptation.load_sentiment(**kwargs)


def test_new_classifier_is_seeded_and_fully_trainable():
    a, b = adaptation.new_classifier(seed=0), adaptation.new_classifier(seed=0)
    c = adaptation.new_classifier(seed=1)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.equal(a.bert.pooler.dense.weight, c.bert.pooler.dense.weight)  # pretrained, not drawn
    summary = adaptation.trainable_summary(a)
    assert summary["trainable"] == summary["total"] == 22_713_986 and summary["percent"] == 100


def test_trainable_summary_agrees_with_peft(minilm):
    peft_model = get_peft_model(adaptation.new_classifier(seed=0),
                                LoraConfig(r=4, lora_alpha=4, target_modules=["query", "value"],
                                           modules_to_save=["classifier"]))
    trainable, total = peft_model.get_nb_trainable_parameters()
    summary = adaptation.trainable_summary(peft_model)
    assert (summary["trainable"], summary["total"]) == (trainable, total)
    assert adaptation.format_trainable(peft_model).startswith(f"trainable params: {trainable:,} || all params")


def test_fit_updates_only_trainable_parameters_and_reports(data):
    model = adaptation.new_classifier(seed=0)
    for p in model.bert.parameters():
        p.requires_grad_(False)
    frozen = model.bert.encoder.layer[0].attention.self.query.weight.clone()
    head = model.classifier.weight.clone()
    result = adaptation.fit(model, data, steps=3, lr=1e-2, device="cpu", progress=False)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, frozen)
    assert not torch.equal(model.classifier.weight, head)
    assert result.trainable == 384 * 2 + 2 and result.total == 22_713_986
    assert 0 <= result.val_accuracy <= 1 and result.seconds_per_step > 0
    assert result.peak_mib is None  # no allocator statistics on the CPU
    assert result.history.steps == [1, 2, 3]
    assert set(result.row()) == {"trainable", "total", "val_accuracy", "seconds_per_step", "peak_mib"}
    assert not model.training  # back in the mode it started in (eval, as loaded)
    with pytest.raises(ValueError, match="warmup"):
        adaptation.fit(model, data, steps=3, lr=1e-3, warmup=1.5, progress=False)


def test_predict_and_test_report_agree(minilm, data):
    y_true, y_pred = adaptation.predict(minilm, data.test, device="cpu")
    assert y_true.shape == y_pred.shape == (20,)
    with torch.no_grad():
        logits = torch.cat([minilm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                            for b in data.test])
    np.testing.assert_array_equal(y_pred, logits.argmax(-1).numpy())
    minilm.train()
    got = adaptation.logits(minilm, data.test, device="cpu")  # eval mode inside: no dropout
    assert minilm.training, "logits() must give the model back in the mode it came in"
    minilm.eval()
    assert got.dtype == torch.float32 and got.shape == (20, 2)
    torch.testing.assert_close(got, logits, rtol=0, atol=1e-6)
    report = adaptation.test_report(minilm, data, device="cpu")
    k = int(np.sum(y_true == y_pred))
    assert report["accuracy"] == k / 20 and report["n"] == 20
    assert (report["ci_low"], report["ci_high"]) == wilson_interval(k, 20)
    majority = int(np.bincount(data.train_labels).argmax())
    assert report["majority_accuracy"] == np.mean(y_true == majority)
    assert adaptation.accuracy_on(minilm, data.test, device="cpu") == report["accuracy"]
    with pytest.raises(ValueError, match="empty"):
        adaptation.predict(minilm, [], device="cpu")
    with pytest.raises(ValueError, match="empty"):
        adaptation.logits(minilm, [], device="cpu")


def test_inference_latency_is_positive_and_keeps_the_mode(minilm, data):
    minilm.train()
    seconds = adaptation.inference_latency(minilm, data.validation[0], repeats=2, warmup=1, device="cpu")
    assert seconds > 0 and minilm.training
    minilm.eval()
    with pytest.raises(ValueError):
        adaptation.inference_latency(minilm, data.validation[0], repeats=0)


def test_setup_hides_peft_deprecation_noise_only():
    import warnings

    from lab_utils.profile import quiet_library_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
