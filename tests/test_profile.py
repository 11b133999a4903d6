import pytest
import torch

from lab_utils import profile


@pytest.mark.parametrize(("cuda", "want"), [(False, "cpu"), (True, "gpu")])
def test_auto_profile_follows_cuda(monkeypatch, cuda, want):
    # Both branches on every machine (the CI runner has no GPU): CUDA's presence is faked.
    monkeypatch.delenv("LAB_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert profile.profile_name() == want
    monkeypatch.setenv("LAB_PROFILE", "cpu")  # the override wins even with a GPU
    assert profile.profile_name() == "cpu"


def test_override_and_pick(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "cpu")
    prof = profile.current()
    assert (prof.name, prof.device.type, prof.dtype) == ("cpu", "cpu", torch.float32)
    assert profile.pick(cpu=8, gpu=512) == 8
    assert prof.pick(cpu="small", gpu="big") == "small"


def test_bad_profile_names(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "tpu")
    with pytest.raises(ValueError, match="LAB_PROFILE must be one of"):
        profile.profile_name()


def test_gpu_profile_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        profile.current()


def test_seeding_repeats_and_validates():
    profile.seed_everything(3)
    a = torch.rand(4)
    profile.seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    with pytest.raises(ValueError, match="non-negative int"):
        profile.seed_everything(-1)


@pytest.mark.parametrize(("bf16", "want"), [(True, torch.bfloat16), (False, torch.float16)])
def test_compute_dtype(monkeypatch, bf16, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)  # a T4 has no bf16: fp16 there
    assert profile.compute_dtype(torch.device("cuda")) == want
    assert profile.compute_dtype(torch.device("cpu")) == torch.float32


def test_report_is_one_line_with_versions(monkeypatch, capsys):
    monkeypatch.setenv("LAB_PROFILE", "cpu")
    prof = profile.setup(seed=0)
    line = capsys.readouterr().out.strip()
    assert prof.name == "cpu" and "\n" not in line
    for word in ("profile=cpu", "bf16=", "torch", "transformers", "peft", "bitsandbytes"):
        assert word in line
    assert "missing" not in line, "a package the course needs is not installed"
