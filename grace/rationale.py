"""Sample rationales from the policy, in batches, and keep what pooling and rewards need.

A rollout is a prompt (left-padded) followed by its completion (right-padded after EOS).
Besides the text, the reward needs to know which completions ran into the token cap without
an EOS (they are penalised), and the encoder can take the last-layer hidden states straight
from generation instead of paying for a second forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class SamplingConfig:
    """How rationales are sampled. ``temperature=0`` means greedy decoding.

    Defaults are the paper's evaluation settings (temperature 1, top-p 1, up to 2048 tokens).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int | None = None


@dataclass
class Rollouts:
    """A batch of prompt + completion token ids, with masks and (optionally) hidden states."""

    prompt_ids: torch.Tensor  # (B, P), left-padded
    prompt_mask: torch.Tensor  # (B, P)
    completion_ids: torch.Tensor  # (B, C), right-padded
    completion_mask: torch.Tensor  # (B, C), true up to and including the first EOS
    texts: list[str]
    hit_cap: torch.Tensor  # (B,), ran to max_new_tokens without EOS
    hidden: torch.Tensor | None = None  # (B, P + C, H) last-layer states, if kept

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask)], dim=1)


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask for rendered prompts (the template carries special tokens)."""
    batch = tokenizer(
        prompts,
        padding=True,
        add_special_tokens=tokenizer.chat_template is None,
        return_tensors="pt",
    )
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion (generation configs may list several)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """True for every token up to and including the first EOS of each row."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()
    return eos_before == 0


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with a fixed torch RNG seed without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def sampling_kwargs(sampling: SamplingConfig) -> dict:
    """``generate`` arguments for a sampling config; top-k is switched off as in the paper."""
    if sampling.temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": 0,
    }


@torch.no_grad()
def generate_rationales(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    sampling: SamplingConfig,
    keep_hidden: bool = False,
) -> Rollouts:
    """Sample one completion per rendered prompt (see ``prompts.build_prompts``).

    With ``keep_hidden`` the last-layer state of every prompt and completion token is kept.
    ``generate`` reports the states of the tokens it feeds in, so the final sampled token,
    never fed back, has none; one extra cached decode step supplies it. This equals a full
    second forward pass over the same tokens at a fraction of its cost.
    """
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, model.device)
    with seeded(sampling.seed):
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            output_hidden_states=keep_hidden,
            return_dict_in_generate=True,
            **sampling_kwargs(sampling),
        )
    completion_ids = out.sequences[:, prompt_ids.shape[1] :]
    eos_ids = eos_token_ids(model, tokenizer)
    mask = completion_mask(completion_ids, eos_ids)
    has_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    hit_cap = ~has_eos.any(dim=1) & (completion_ids.shape[1] >= sampling.max_new_tokens)
    completion_ids = completion_ids.masked_fill(~mask, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    rollouts = Rollouts(prompt_ids, prompt_mask, completion_ids, mask, texts, hit_cap)
    if keep_hidden:
        rollouts.hidden = _states_from_generation(model, out, rollouts)
    return rollouts


def _states_from_generation(model: PreTrainedModel, out, rollouts: Rollouts) -> torch.Tensor:
    """Last-layer states for all P + C positions: those ``generate`` reported, plus one step."""
    states = [step[-1] for step in out.hidden_states]  # (B, P, H), then (B, 1, H) per step
    if rollouts.completion_ids.shape[1] > 0:
        # ``generate`` attends to every generated position (pads after EOS included), so the
        # extra step must too for its state to match a full forward pass.
        full_mask = torch.cat(
            [rollouts.prompt_mask, torch.ones_like(rollouts.completion_ids)], dim=1
        )
        position_ids = full_mask.long().cumsum(dim=1)[:, -1:] - 1
        extra = model(
            input_ids=out.sequences[:, -1:],
            attention_mask=full_mask,
            position_ids=position_ids,
            cache=out.cache,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        states.append(extra.hidden_states[-1])
    return torch.cat(states, dim=1)
