"""Tests for lab_utils.classification: metrics against hand-computed values, the Wilson interval against known
values and its defining property, the majority baseline, compute_metrics inside a real Trainer, tokenize_split."""

import math
import tempfile
from statistics import NormalDist

import numpy as np
import pytest
import torch

from lab_utils.classification import (
    TokenizedSplit,
    accuracy,
    compute_metrics,
    confusion_matrix,
    f1_scores,
    majority_baseline,
    tokenize_split,
    wilson_interval,
)

# A 3-class example worked by hand. Pairs (true, predicted):
# (0,0) (0,0) (0,1) (1,1) (1,0) (2,1) (2,1) (0,0) -> class 2 is never predicted.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 0]
Y_PRED = [0, 0, 1, 1, 0, 1, 1, 0]
# class 0: TP 3, FP 1 (the (1,0)), FN 1 (the (0,1)) -> F1 = 6 / (6 + 1 + 1) = 0.75
# class 1: TP 1, FP 3 ((0,1), (2,1), (2,1)), FN 1 ((1,0)) -> F1 = 2 / (2 + 3 + 1) = 1/3
# class 2: TP 0, FP 0, FN 2 -> F1 = 0
HAND_F1 = {0: 0.75, 1: 1 / 3, 2: 0.0}


def test_accuracy_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 8)
    assert accuracy(np.array([1, 1]), torch.tensor([1, 1])) == 1.0
    assert accuracy([0, 1], [1, 0]) == 0.0


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    expected = np.array([[3, 1, 0],   # true 0: three right, one predicted as 1
                         [1, 1, 0],   # true 1
                         [0, 2, 0]])  # true 2: both predicted as 1, none as 2
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(Y_TRUE) and np.trace(cm) == 4
    # orientation: a single true-0-predicted-2 example lands in row 0, column 2, not the reverse
    one = confusion_matrix([0], [2], 3)
    assert one[0, 2] == 1 and one.sum() == 1


def test_confusion_matrix_keeps_absent_classes():
    cm = confusion_matrix([1, 1], [1, 1], 4)
    assert cm.shape == (4, 4) and cm[1, 1] == 2 and cm.sum() == 2


def test_f1_by_hand_including_a_class_never_predicted():
    scores = f1_scores(Y_TRUE, Y_PRED, 3)
    for c, value in HAND_F1.items():
        assert scores[c] == pytest.approx(value)
    assert scores["macro"] == pytest.approx((0.75 + 1 / 3 + 0.0) / 3)


def test_f1_equals_precision_recall_formula():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    scores = f1_scores(t, p, 4)
    for c in range(4):
        precision = np.mean(t[p == c] == c)
        recall = np.mean(p[t == c] == c)
        assert scores[c] == pytest.approx(2 * precision * recall / (precision + recall))


def test_f1_perfect_and_absent_class():
    assert f1_scores([0, 1, 1], [0, 1, 1], 2) == {0: 1.0, 1: 1.0, "macro": 1.0}
    # class 2 neither present nor predicted: 0, and it still counts in the macro mean
    scores = f1_scores([0, 1], [0, 1], 3)
    assert scores[2] == 0.0 and scores["macro"] == pytest.approx(2 / 3)


def test_majority_baseline_on_a_binary_task_has_macro_f1_below_half():
    # always "negative" on 70% negatives: accuracy 0.7 but the positive class gets F1 0
    y = [0] * 7 + [1] * 3
    scores = f1_scores(y, [0] * 10, 2)
    assert scores[1] == 0.0 and scores[0] == pytest.approx(14 / 17) and scores["macro"] < 0.5


@pytest.mark.parametrize(("k", "n", "expected"), [
    (50, 100, (0.4038, 0.5962)),  # the textbook example
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
    (81, 100, (0.7222, 0.8749)),
])
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=1e-4) and high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_edges_are_exact():
    assert wilson_interval(0, 25)[0] == 0.0
    assert wilson_interval(25, 25)[1] == 1.0
    low, high = wilson_interval(1, 1)
    assert 0 < low < high == 1.0


@pytest.mark.parametrize(("k", "n"), [(1, 10), (37, 50), (1815, 2116), (3, 3000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_ends_are_where_the_score_test_is_on_the_edge(k, n, confidence):
    # Wilson's interval is {p0 : |k/n - p0| <= z sqrt(p0 (1 - p0) / n)}: at each end the equality holds
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    low, high = wilson_interval(k, n, confidence)
    for p0 in (low, high):
        assert abs(k / n - p0) == pytest.approx(z * math.sqrt(p0 * (1 - p0) / n), rel=1e-9)
    assert low < k / n < high


def test_wilson_narrows_with_n_and_widens_with_confidence():
    widths = [np.subtract(*wilson_interval(n // 2, n)[::-1]) for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    assert np.subtract(*wilson_interval(50, 100, 0.99)[::-1]) > np.subtract(*wilson_interval(50, 100)[::-1])


@pytest.mark.parametrize(("args", "match"), [
    ((5, 0), "n must be >= 1"),
    ((11, 10), r"k must be in 0\.\.n"),
    ((-1, 10), r"k must be in 0\.\.n"),
    ((0.5, 10), "k must be an int"),
    ((True, 10), "k must be an int"),
    ((5, 10, 1.0), "confidence must be in"),
    ((5, 10, 95), "confidence must be in"),
])
def test_wilson_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(*args)


def test_wilson_accepts_numpy_counts():
    assert wilson_interval(np.int64(50), np.int64(100)) == wilson_interval(50, 100)


def test_majority_baseline_uses_train_labels_and_scores_test():
    label, acc = majority_baseline([0, 1, 1, 1, 2], [1, 0, 0, 1])
    assert label == 1 and acc == 0.5
    # ties go to the smallest label
    assert majority_baseline([2, 2, 0, 0], [0, 2]) == (0, 0.5)
    # the majority of train, not of test
    assert majority_baseline([1, 1, 1, 0], [0, 0, 0, 1]) == (1, 0.25)


def test_compute_metrics_from_logits():
    from transformers import EvalPrediction

    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])  # argmax 0, 1, 1, 0
    labels = np.array([0, 1, 2, 1])
    expected_f1 = f1_scores(labels, [0, 1, 1, 0], 3)["macro"]
    got = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert got == {"accuracy": 0.5, "f1": pytest.approx(expected_f1)}
    assert compute_metrics((logits, labels)) == got  # a plain pair
    assert compute_metrics(((logits, np.zeros((4, 2, 8))), labels)) == got  # extra outputs after the logits
    assert compute_metrics((torch.tensor(logits, dtype=torch.bfloat16), torch.tensor(labels))) == got


def test_compute_metrics_rejects_labels_instead_of_logits():
    with pytest.raises(ValueError, match=r"logits of shape \(N, n_classes\)"):
        compute_metrics((np.array([0, 1]), np.array([0, 1])))


def test_compute_metrics_in_a_real_trainer():
    """Trainer.evaluate calls compute_metrics and logs eval_accuracy / eval_f1 equal to ours on its predictions."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (24, 6), generator=gen).tolist()
    data = TokenizedSplit(ids, [[1] * 6] * 24, torch.randint(0, 3, (24,), generator=gen).tolist())
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_eval_batch_size=8, report_to="none", use_cpu=True,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, eval_dataset=data, compute_metrics=compute_metrics)
        metrics = trainer.evaluate()
        predicted = trainer.predict(data).predictions.argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy(data.labels, predicted))
    assert metrics["eval_f1"] == pytest.approx(f1_scores(data.labels, predicted, 3)["macro"])


@pytest.mark.parametrize(("fn", "args", "error", "match"), [
    (accuracy, ([0, 1], [0]), ValueError, "same length"),
    (accuracy, ([], []), ValueError, "empty"),
    (accuracy, ([[0, 1]], [[0, 1]]), ValueError, "must be 1-D"),
    (accuracy, ([0, -100], [0, 1]), ValueError, "labels >= 0"),
    (accuracy, ([0.5, 1], [0, 1]), TypeError, "integer class labels"),
    (confusion_matrix, ([0, 3], [0, 1], 3), ValueError, r"a label is 3 but n_classes is 3"),
    (confusion_matrix, ([0, 1], [0, 1], 0), ValueError, "n_classes must be an int >= 1"),
    (f1_scores, ([0, 1], [0, 2], 2), ValueError, "labels must be in 0..1"),
    (majority_baseline, ([], [0]), ValueError, "non-empty"),
])
def test_bad_inputs(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


def test_float_labels_that_are_whole_numbers_are_accepted():
    assert accuracy(np.array([0.0, 1.0]), [0, 1]) == 1.0


@pytest.fixture(scope="module")
def minilm_tok():
    from lab_utils import assets

    return assets.load_minilm_tokenizer()


def test_tokenize_split_items(minilm_tok):
    from datasets import Dataset

    split = Dataset.from_dict({"text": ["I love this airline", "delayed " * 40], "label": [1, 0]})
    tokenized = tokenize_split(split, minilm_tok, max_length=16)
    assert isinstance(tokenized, torch.utils.data.Dataset) and len(tokenized) == 2
    first, second = tokenized[0], tokenized[1]
    assert set(first) == {"input_ids", "attention_mask", "labels"}
    assert first["input_ids"] == minilm_tok("I love this airline")["input_ids"]  # [CLS] ... [SEP], unpadded
    assert first["input_ids"][0] == minilm_tok.cls_token_id and first["input_ids"][-1] == minilm_tok.sep_token_id
    assert first["attention_mask"] == [1] * len(first["input_ids"]) and first["labels"] == 1
    assert len(second["input_ids"]) == 16 and second["input_ids"][-1] == minilm_tok.sep_token_id  # truncated
    assert second["labels"] == 0


def test_tokenize_split_pads_with_the_library_collator(minilm_tok):
    from transformers import DataCollatorWithPadding

    tokenized = tokenize_split({"text": ["a b c d e f", "hi"], "label": [0, 1]}, minilm_tok, max_length=32)
    batch = DataCollatorWithPadding(minilm_tok)([tokenized[0], tokenized[1]])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 8)  # padded to the longer: 6 + 2
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert torch.equal(batch["labels"], torch.tensor([0, 1]))


@pytest.mark.parametrize(("dataset", "max_length", "match"), [
    ({"text": ["a"], "label": [0]}, 1, "max_length must be an int >= 2"),
    ({"text": ["a"], "label": [0]}, 8.0, "max_length must be an int >= 2"),
    ({"sentence": ["a"], "label": [0]}, 8, "'text' and a 'label' column"),
    ({"text": [], "label": []}, 8, "empty"),
    ({"text": [1], "label": [0]}, 8, "must hold strings"),
    ({"text": ["a", "b"], "label": [0]}, 8, "differ in length"),
])
def test_tokenize_split_bad_inputs(minilm_tok, dataset, max_length, match):
    with pytest.raises(ValueError, match=match):
        tokenize_split(dataset, minilm_tok, max_length=max_length)
