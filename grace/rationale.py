"""Sample rationales from the policy, in batches, and keep what pooling and rewards need.

A rollout is a prompt (left-padded) followed by its completion (right-padded after EOS).
Besides the text, the reward needs to know which completions ran into the token cap without
an EOS (they are penalised), and the encoder can take the last-layer hidden states straight
from generation instead of paying for a second forward pass.

Each row samples from its own random stream (``RowSampler``), seeded from its prompt, the
seed and its draw number, so a rationale never depends on the rows batched beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.generation.logits_process import TopPLogitsWarper

from grace.pooling import pool

#: The paper's longest rationale (and policy completion), in tokens.
MAX_NEW_TOKENS = 2048


@dataclass
class SamplingConfig:
    """How rationales are sampled. ``temperature=0`` means greedy decoding.

    Defaults are the paper's evaluation settings (temperature 1, top-p 1, up to 2048 tokens).
    With a ``seed`` each row's rationale depends only on the seed, its prompt and its draw
    number (see ``row_seeds``); without one, row seeds come from torch's global RNG.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = MAX_NEW_TOKENS
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(
                f"temperature must be a number >= 0 (0 = greedy), got {self.temperature}."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")


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


def row_seeds(prompts: list[str], seed: int | None, draws: list[int] | None = None) -> list[int]:
    """One sampling seed per row: a hash of (seed, prompt, draw), or random if ``seed`` is None.

    Hashing makes a row's rationale independent of its batch, its position and of which other
    rows were cached. Temperature, top-p and the token cap stay out of the hash on purpose: the
    same noise at every temperature, and a shorter cap gives a prefix of a longer one.
    """
    draws = draws if draws is not None else [0] * len(prompts)
    if seed is None:
        return torch.randint(2**62, (len(prompts),)).tolist()
    hashes = [
        hashlib.sha256(json.dumps([seed, prompt, draw]).encode()).digest()
        for prompt, draw in zip(prompts, draws, strict=True)
    ]
    return [int.from_bytes(digest[:8], "big") >> 1 for digest in hashes]  # < 2**63


class RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's own RNG; greedy decoding then keeps it.

    ``generate``'s own sampling draws every row from one global RNG stream, so a row's tokens
    would change with the rows beside it. Here row i adds Gumbel noise from generator i and
    takes the argmax: argmax(logits / T + Gumbel) is an exact sample of softmax(logits / T)
    (the Gumbel-max trick). The returned scores are -inf except at the chosen token.
    """

    def __init__(self, seeds: list[int], sampling: SamplingConfig) -> None:
        self.seeds = seeds
        self.generators: list[torch.Generator] = []  # made on the logits' device at step 1
        self.temperature = sampling.temperature
        self.top_p = TopPLogitsWarper(sampling.top_p) if sampling.top_p < 1 else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        device = scores.device
        if not self.generators:
            self.generators = [torch.Generator(device).manual_seed(s) for s in self.seeds]
        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        uniform = torch.stack(
            [torch.rand(scores.shape[1], generator=g, device=device) for g in self.generators]
        ).clamp_(min=torch.finfo(torch.float32).tiny)
        chosen = (scores - torch.log(-torch.log(uniform))).argmax(dim=1, keepdim=True)
        return torch.full_like(scores, -math.inf).scatter_(1, chosen, 0.0)


@torch.no_grad()
def generate_rationales(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    sampling: SamplingConfig,
    keep_hidden: bool = False,
    draws: list[int] | None = None,
) -> Rollouts:
    """Sample one completion per rendered prompt (see ``prompts.build_prompts``).

    ``draws`` numbers repeated prompts (draw j of a text gets its own seed, see ``row_seeds``).
    Top-k is switched off, as in the paper.

    With ``keep_hidden`` the last-layer state of every prompt and completion token is kept.
    ``generate`` reports the states of the tokens it feeds in, so the final sampled token,
    never fed back, has none; one extra cached decode step supplies it. This equals a full
    second forward pass over the same tokens at a fraction of its cost.
    """
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, model.device)
    processors = LogitsProcessorList()
    if sampling.temperature > 0:
        seeds = row_seeds(prompts, sampling.seed, draws)
        processors.append(RowSampler(seeds, sampling))
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=sampling.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        output_hidden_states=keep_hidden,
        return_dict_in_generate=True,
        do_sample=False,  # greedy over RowSampler's scores: its sample, or the plain argmax
        temperature=None,
        top_p=None,
        top_k=None,
        logits_processor=processors,
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


# --- embedding rollouts: used by the encoder, the GRACE reward and the baselines ---


def last_hidden_states(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last-layer states of one forward pass; positions count real tokens (left padding).

    Keeps the graph when gradients are on (the contrastive baselines train through it).
    """
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        logits_to_keep=1,
    )
    return out.hidden_states[-1]


@torch.no_grad()
def embed_rollouts(
    model: PreTrainedModel, rollouts: Rollouts, prefix_length: int, pooling: str = "mean"
) -> torch.Tensor:
    """(B, H) unit embeddings of prompt + completion; runs a forward pass unless states are kept."""
    hidden = rollouts.hidden
    if hidden is None:
        hidden = last_hidden_states(model, rollouts.input_ids, rollouts.attention_mask)
    return pool(hidden, rollouts.attention_mask, prefix_length, pooling)


def rollouts_from_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[list[int]],
    device: torch.device,
) -> Rollouts:
    """Rebuild rollouts from stored completion ids (cache hits; direct mode uses none)."""
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, device)
    width = max((len(c) for c in completions), default=0)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, completion in enumerate(completions):
        ids[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        mask[row, : len(completion)] = True
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    no_cap = torch.zeros(len(prompts), dtype=torch.bool)
    return Rollouts(prompt_ids, prompt_mask, ids.to(device), mask.to(device), texts, no_cap)
