"""Tests for lab_utils.checks.kv_cache (the KV-cache size of a model from its config): the reference passes, each
typical mistake fails with a message naming it, the stub says "not written yet"."""

import pytest

from lab_utils.checks import check_cache_bytes


def stub(config, *, tokens, batch=1, bytes_per_value=2):
    raise NotImplementedError  # your code here


def reference(config, *, tokens, batch=1, bytes_per_value=2):
    c = config
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * tokens * batch * bytes_per_value


def test_stub_says_not_written(capsys):
    assert check_cache_bytes(stub) is False
    assert "✗ stub is not written yet" in capsys.readouterr().out


def test_reference_passes(capsys):
    assert check_cache_bytes(reference) is True
    out = capsys.readouterr().out
    assert "✓ KV-cache sizes right" in out and "17.18 GB" in out and "4.29 GB" in out


def test_another_correct_form_passes():
    def per_token_then_total(config, *, tokens, batch=1, bytes_per_value=2):
        per_token = 2 * config.num_key_value_heads * config.head_dim * bytes_per_value * config.num_hidden_layers
        return float(per_token * tokens * batch)  # a float is fine

    assert check_cache_bytes(per_token_then_total) is True


def wrong(**change):
    def fn(config, *, tokens, batch=1, bytes_per_value=2):
        c = config
        kv = change.get("kv", lambda c: c.num_key_value_heads)(c)
        hd = change.get("hd", lambda c: c.head_dim)(c)
        total = (change.get("two", 2) * change.get("layers", lambda c: c.num_hidden_layers)(c) * kv * hd * tokens
                 * change.get("batch", lambda b: b)(batch) * change.get("bytes", lambda b: b)(bytes_per_value))
        return change.get("unit", lambda x: x)(total)
    return fn


@pytest.mark.parametrize(
    ("student", "match"),
    [
        (wrong(two=1), "keys AND values"),
        (wrong(kv=lambda c: c.num_attention_heads), "count the KV heads"),
        (wrong(kv=lambda c: c.num_attention_heads // c.num_key_value_heads), "is the group size"),
        (wrong(kv=lambda c: 1, hd=lambda c: c.hidden_size), "hidden_size = num_attention_heads \\* head_dim"),
        (wrong(hd=lambda c: c.hidden_size // c.num_attention_heads), "read config.head_dim"),
        (wrong(bytes=lambda b: 1), "multiply by bytes_per_value"),
        (wrong(unit=lambda x: x * 8), "that is bits"),
        (wrong(layers=lambda c: 1), "multiply by num_hidden_layers"),
        (wrong(unit=lambda x: x / 1e9), "not GB"),
        (wrong(unit=lambda x: x / 2**30), "not GiB"),
        (wrong(batch=lambda b: 1), "multiply by batch"),
    ],
)
def test_typical_mistakes_are_named(student, match):
    with pytest.raises(AssertionError, match=match):
        check_cache_bytes(student)


def test_an_unrecognised_answer_gets_the_rule():
    with pytest.raises(AssertionError, match="expected .* bytes: 2 \\* num_hidden_layers \\* num_key_value_heads"):
        check_cache_bytes(lambda config, **kw: 12345)


def test_a_non_number_is_refused():
    with pytest.raises(AssertionError, match="return one number"):
        check_cache_bytes(lambda config, **kw: [1, 2])
