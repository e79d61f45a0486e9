"""Device placement, checked on a CPU: tensors on PyTorch's ``meta`` device stand in for a GPU.

A ``meta`` tensor has a shape and a device but no data; mixing it with a CPU tensor raises
the same error a CUDA tensor would. So every tensor the reward, the pooling and the rollout
rebuilding make must follow the device of their inputs.
"""

import os
import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import grace
from grace.config import load_config
from grace.encoder import GraceEncoder, Variant
from grace.pooling import pool
from grace.prompts import SYSTEM_PROMPT, build_prompts
from grace.rationale import rollouts_from_completions
from grace.rewards import RewardConfig, supervised_rewards, unsupervised_rewards
from grace.rollouts import capped_rows
from grace.train import train

META = torch.device("meta")
PACKAGE = str(Path(grace.__file__).parent)


def test_rewards_follow_the_embeddings_device_whatever_the_mask_device():
    query, negative = torch.randn(2, 8, device=META), torch.randn(2, 8, device=META)
    samples = torch.randn(2, 4, 8, device=META)
    hit_cap = torch.tensor([[True, False, False, False]] * 2)  # built from token lists: CPU
    config = RewardConfig(length_penalty=-1.0)
    assert supervised_rewards(query, samples, negative, hit_cap, config).total.device == META
    assert unsupervised_rewards(query, samples, hit_cap, config).total.device == META


def test_the_length_penalty_mask_is_built_on_the_requested_device():
    mask = capped_rows([[5, 6, 7], [5]], [2], 3, META)
    assert mask.device == META and mask.shape == (2,)
    assert capped_rows([[5, 6, 7], [5]], [2], 3, torch.device("cpu")).tolist() == [True, False]
    assert capped_rows([[5, 2, 7]], [2], 3, torch.device("cpu")).tolist() == [False]  # an EOS


def test_pooling_and_rebuilt_rollouts_stay_on_the_model_device(tiny):
    _, tokenizer = tiny
    prompts = build_prompts(tokenizer, ["a text", "another text"], SYSTEM_PROMPT, 64)
    rollouts = rollouts_from_completions(tokenizer, prompts, [[5, 6], [7]], META)
    for tensor in (rollouts.prompt_ids, rollouts.completion_ids, rollouts.attention_mask):
        assert tensor.device == META
    hidden = torch.randn(*rollouts.input_ids.shape, 8, device=META)
    assert pool(hidden, rollouts.attention_mask, prefix_length=3).device == META


FACTORIES = {
    torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty,
    torch.arange, torch.eye, torch.linspace, torch.rand, torch.randn, torch.randint,
}  # fmt: skip


class ImplicitDevices(TorchFunctionMode):
    """Records every tensor that code in ``grace/`` creates without naming its device.

    On a CPU every tensor lands on the CPU, so a missing ``device=`` cannot fail here; on a GPU
    such a tensor meets CUDA tensors and fails. This is the guard for the code that the
    ``meta`` device cannot run (generation needs values): every tensor grace makes says where.
    """

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)  # the caller, past torch's own frames
            while frame and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame and frame.f_code.co_filename.startswith(PACKAGE):
                self.found.add(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        return func(*args, **kwargs)


def test_encoding_and_training_name_the_device_of_every_tensor_they_make(tmp_path):
    encoder = GraceEncoder.from_pretrained(
        "tiny-random", max_new_tokens=6, num_rationales=2, seed=1, device="cpu"
    )
    texts = ["a text", "another, longer text"]
    with ImplicitDevices() as guard:
        encoder.encode(texts)  # sampled draws, the single-pass generation
        encoder.encode_variants(texts, [Variant(0), Variant(4, 0, 0), Variant(6, None, 1)])
        for method in ("grace", "contrastive", "simcse"):  # a GRPO step, the baselines' steps
            settings = ["max_steps=1", "validation.every=0", f"run.method={method}"]
            train(load_config("tiny", [*settings, f"run.output_dir={tmp_path / method}"]))
    assert guard.found == set()  # file:line of each tensor made without a device
