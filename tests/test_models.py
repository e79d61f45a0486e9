import pytest
import torch

from grace.models import (
    ModelLoadError,
    build_tiny_random,
    build_tiny_tokenizer,
    load_model,
    model_fingerprint,
    prepare_tokenizer,
)


def test_tiny_random_is_deterministic_and_ready_for_batched_generation(tiny):
    model, tokenizer = tiny
    again, _ = build_tiny_random()
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False
    )
    assert model_fingerprint(model) == model_fingerprint(again)


def test_tiny_tokenizer_round_trips_any_text():
    tokenizer = build_tiny_tokenizer()
    text = "Ünïcode, emoji 🙂 and newlines\n fine"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_fingerprint_changes_when_weights_change():
    model, _ = build_tiny_random()
    before = model_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).flatten()[0] += 1.0
    assert model_fingerprint(model) != before
    changed = model_fingerprint(model)
    with torch.no_grad():  # far past any sample of the first elements
        next(model.parameters()).flatten()[-1] += 1e-6
    assert model_fingerprint(model) != changed


def test_fingerprint_stays_when_the_model_is_saved_or_moved(tmp_path):
    model, tokenizer = build_tiny_random()
    before = model_fingerprint(model)
    for folder in (tmp_path / "a", tmp_path / "b"):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        loaded, _ = load_model(str(folder), device="cpu")
        assert model_fingerprint(loaded) == before
    assert model_fingerprint(model) == before  # save_pretrained wrote into model.config


def test_saved_model_folder_loads_back(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(str(tmp_path), device="cpu")
    ids = tokenizer("hello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)
    assert loaded_tokenizer.padding_side == "left"


def test_unknown_name_raises_one_clear_error():
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    message = str(info.value)
    assert "no-such-org/no-such-model-xyz" in message
    assert "tiny-random" in message and "smollm2-135m-instruct" in message
    assert "HF_HUB_OFFLINE" in message


def test_folder_without_model_raises_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no loadable model"):
        load_model(str(tmp_path), device="cpu")


def test_pad_token_is_moved_off_eos():
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"


@pytest.mark.smollm2
def test_smollm2_loads_offline_from_the_wheel(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert model.dtype == torch.float32


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_bf16_only_where_the_gpu_has_it_in_hardware(monkeypatch, capability, expected):
    """A T4 (7.5) emulates bf16, and torch.cuda.is_bf16_supported() says True there: it
    gets fp16, which its tensor cores compute."""
    from grace.models import default_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert default_dtype(torch.device("cuda")) == expected
    assert default_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), False), ((8, 0), True)])
def test_tf32_only_on_ampere_or_newer(monkeypatch, capability, expected):
    from grace.models import allow_tf32

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    before = torch.get_float32_matmul_precision()
    try:
        assert allow_tf32(torch.device("cpu")) is False
        assert torch.get_float32_matmul_precision() == before
        assert allow_tf32(torch.device("cuda")) is expected
        assert (torch.get_float32_matmul_precision() == "high") is expected
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_folder_saved_in_fp32_stays_fp32_on_a_bf16_gpu(tmp_path, monkeypatch):
    from grace.models import saved_in_float32

    # A model of its own: the round trip through bf16 below rounds its weights.
    model, _ = build_tiny_random()
    model.save_pretrained(tmp_path)  # the tiny model is fp32
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert saved_in_float32(str(tmp_path), cuda) == torch.float32
    assert saved_in_float32("Qwen/Qwen2.5-1.5B-Instruct", cuda) is None  # not a folder
    assert saved_in_float32(str(tmp_path), torch.device("cpu")) is None  # fp32 anyway
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert saved_in_float32(str(tmp_path / "bf16"), cuda) is None
    # A T4 loads in fp16: an fp32 folder stays fp32 there too.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert saved_in_float32(str(tmp_path), cuda) == torch.float32
