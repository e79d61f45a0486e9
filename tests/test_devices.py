"""Device placement, checked on a CPU: tensors on PyTorch's ``meta`` device stand in for a GPU.

A ``meta`` tensor has a shape and a device but no data; mixing it with a CPU tensor raises
the same error a CUDA tensor would. So every tensor the reward, the pooling and the rollout
rebuilding make must follow the device of their inputs.
"""

import torch

from grace.config import load_config
from grace.pooling import pool
from grace.prompts import SYSTEM_PROMPT, build_prompts
from grace.rationale import rollouts_from_completions
from grace.rewards import RewardConfig, supervised_rewards, unsupervised_rewards
from grace.train import GraceReward

META = torch.device("meta")


def test_rewards_follow_the_embeddings_device_whatever_the_mask_device():
    query, negative = torch.randn(2, 8, device=META), torch.randn(2, 8, device=META)
    samples = torch.randn(2, 4, 8, device=META)
    hit_cap = torch.tensor([[True, False, False, False]] * 2)  # built from token lists: CPU
    config = RewardConfig(length_penalty=-1.0)
    assert supervised_rewards(query, samples, negative, hit_cap, config).total.device == META
    assert unsupervised_rewards(query, samples, hit_cap, config).total.device == META


def test_the_length_penalty_mask_is_built_on_the_requested_device(tiny):
    model, tokenizer = tiny
    reward = GraceReward(load_config("tiny", ["max_completion_length=3"]), tokenizer)
    mask = reward._hit_cap(model, [[5, 6, 7], [5]], META)
    assert mask.device == META and mask.shape == (2,)
    assert reward._hit_cap(model, [[5, 6, 7], [5]], torch.device("cpu")).tolist() == [True, False]


def test_pooling_and_rebuilt_rollouts_stay_on_the_model_device(tiny):
    _, tokenizer = tiny
    prompts = build_prompts(tokenizer, ["a text", "another text"], SYSTEM_PROMPT, 64)
    rollouts = rollouts_from_completions(tokenizer, prompts, [[5, 6], [7]], META)
    for tensor in (rollouts.prompt_ids, rollouts.completion_ids, rollouts.attention_mask):
        assert tensor.device == META
    hidden = torch.randn(*rollouts.input_ids.shape, 8, device=META)
    assert pool(hidden, rollouts.attention_mask, prefix_length=3).device == META
