"""Tests for lab_utils.lab: unbatching load_sentiment's batches for Trainer, and the lecture's evaluation table."""

import math

import pytest
import torch
from transformers import DataCollatorWithPadding

from lab_utils.assets import load_minilm_tokenizer
from lab_utils.lab import evaluation_table, examples_from_batches


def padded_batches():
    ids = [[101, 7, 8, 102], [101, 9, 102], [101, 102], [101, 5, 6, 7, 102]]
    labels = [1, 0, 1, 0]
    batches = []
    for rows in ((0, 1, 2), (3,)):
        width = max(len(ids[i]) for i in rows)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        m = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        batches.append({"input_ids": x, "attention_mask": m, "labels": torch.tensor([labels[i] for i in rows])})
    return batches, ids, labels


def test_examples_are_unpadded_in_order():
    batches, ids, labels = padded_batches()
    split = examples_from_batches(batches)
    assert len(split) == 4
    assert [split[i]["input_ids"] for i in range(4)] == ids
    assert [split[i]["attention_mask"] for i in range(4)] == [[1] * len(s) for s in ids]
    assert [split[i]["labels"] for i in range(4)] == labels


def test_collator_pads_them_back_to_the_batches():
    batches, _, _ = padded_batches()
    split = examples_from_batches(batches)
    collate = DataCollatorWithPadding(load_minilm_tokenizer())  # MiniLM's pad id is 0, as in padded_batches
    again = collate([split[i] for i in range(3)])
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(again[key], batches[0][key])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "non-empty list"),
        ({"input_ids": torch.zeros(1, 2)}, "non-empty list"),
        ([{"input_ids": torch.zeros(1, 2, dtype=torch.long)}], "has no attention_mask, labels"),
        ([{"input_ids": torch.zeros(2, 3), "attention_mask": torch.ones(2, 2), "labels": torch.zeros(2)}],
         "must be the same"),
        ([{"input_ids": torch.zeros(1, 3), "attention_mask": torch.tensor([[0, 1, 1]]), "labels": torch.zeros(1)}],
         "not right padding"),
    ],
)
def test_examples_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        examples_from_batches(bad)


LOG = [
    {"eval_loss": 0.70, "eval_accuracy": 0.55, "step": 10, "epoch": 0.5},
    {"loss": 0.66, "step": 15, "epoch": 0.75},
    {"eval_loss": 0.60, "eval_accuracy": 0.70, "step": 20, "epoch": 1.0},
    {"loss": 0.50, "step": 30, "epoch": 1.5},
    {"eval_loss": 0.55, "eval_accuracy": 0.75, "step": 30, "epoch": 1.5},
    {"train_runtime": 3.0, "step": 30},
]


def test_evaluation_table_matches_trainer_layout():
    table = evaluation_table(LOG)
    assert list(table.index) == [10, 20, 30] and table.index.name == "Step"
    assert list(table.columns) == ["Training Loss", "Validation Loss", "Accuracy"]
    assert math.isnan(table.loc[10, "Training Loss"])  # Trainer prints "No log"
    assert table.loc[20, "Training Loss"] == 0.66 and table.loc[30, "Training Loss"] == 0.50
    assert table["Accuracy"].tolist() == [0.55, 0.70, 0.75]


def test_evaluation_table_bad_inputs():
    with pytest.raises(ValueError, match="no evaluation"):
        evaluation_table([{"loss": 0.5, "step": 1}])
    with pytest.raises(ValueError, match="have no 'eval_f1'"):
        evaluation_table(LOG, metric="f1")


def test_round_trip_on_load_sentiment_batches():
    # The lab's path: load_sentiment's batches -> examples -> Trainer's collator gives the same batches back.
    from lab_utils.adaptation import load_sentiment

    data = load_sentiment(batch_size=4, n_train=12, n_val=4, n_test=4, max_length=16)
    split = examples_from_batches(data.train)
    assert len(split) == data.sizes["train"] == 12
    collate = DataCollatorWithPadding(load_minilm_tokenizer())
    for b, batch in enumerate(data.train):
        again = collate([split[4 * b + i] for i in range(len(batch["labels"]))])
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(again[key], batch[key])
