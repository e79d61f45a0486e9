"""Sample rationales from the policy, in batches, and keep what pooling and rewards need.

A rollout is a prompt (left-padded) followed by its completion (right-padded after EOS).
Besides the text, the reward needs to know which completions ran into the token cap without
an EOS (they are penalised), and the encoder can take the last-layer hidden states straight
from generation instead of paying for a second forward pass.

Each row samples from its own random stream (``RowSampler``), seeded from its prompt, the
seed and its draw number, so a rationale never depends on the rows batched beside it. This
module is the package's only token sampler: the GRPO trainer's rollouts (``grace.rollouts``)
draw through ``next_tokens`` with the same streams.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import TopPLogitsWarper

from grace.constants import MAX_NEW_TOKENS
from grace.pooling import POOLERS, l2_normalize, pool, pooling_mask


@dataclass(kw_only=True)
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


def row_seeds(
    prompts: list[str] | list[list[int]],
    seed: int | list[int] | None,
    draws: list[int] | None = None,
) -> list[int]:
    """One sampling seed per row: a hash of (seed, prompt, draw), or random if ``seed`` is None.

    A prompt is its rendered text or its token ids; the trainer's seed is (run seed, step).

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
        if not self.generators:
            self.generators = row_generators(self.seeds, scores.device)
        chosen = gumbel_choice(scores, self.generators, self.temperature, self.top_p)
        return torch.full_like(scores, -math.inf).scatter_(1, chosen[:, None], 0.0)


def row_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(s) for s in seeds]


def gumbel_choice(
    scores: torch.Tensor,
    generators: list[torch.Generator],
    temperature: float | torch.Tensor,
    top_p: TopPLogitsWarper | None = None,
) -> torch.Tensor:
    """(B,) tokens, row i sampled from softmax(scores[i] / T) (top-p cut) with generator i;
    ``temperature`` is one value or one per row (all > 0).

    Each call takes one uniform vector from every generator: a row's k-th token uses the
    k-th draw of its own stream, whatever rows share the batch.
    """
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=scores.device)
    scores = scores.float() / temperature.reshape(-1, 1)
    if top_p is not None:
        scores = top_p(None, scores)
    noise = torch.empty_like(scores)  # log(-log(uniform)), built in place: the same values
    for row, generator in zip(noise, generators, strict=True):
        torch.rand(row.shape, generator=generator, device=scores.device, out=row)
    noise.clamp_(min=torch.finfo(torch.float32).tiny).log_().neg_().log_()
    return scores.sub_(noise).argmax(dim=1)


def next_tokens(
    logits: torch.Tensor,
    generators: list[torch.Generator | None],
    temperatures: torch.Tensor,
    top_p: TopPLogitsWarper | None = None,
) -> torch.Tensor:
    """(B,) next tokens of rows at their own temperatures: the argmax where it is 0, else a
    sample drawn with the row's own generator (``gumbel_choice``)."""
    tokens = logits.argmax(dim=-1)
    sampled = (temperatures > 0).nonzero().squeeze(1)
    if len(sampled):
        streams = [generators[i] for i in sampled.tolist()]
        tokens[sampled] = gumbel_choice(logits[sampled], streams, temperatures[sampled], top_p)
    return tokens


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


# --- shared generation: one prefill per prompt, many continuations, every length at once ---


@dataclass
class Branch:
    """One continuation of every prompt in ``generate_shared``.

    It samples what ``generate_rationales(prompts, sampling, draws=[draw] * B)`` samples (at a
    fixed seed the same tokens: each row has its own random stream) and is pooled after each
    of ``lengths`` tokens; ``sampling.max_new_tokens`` is always one of them, the longest.
    """

    sampling: SamplingConfig
    draw: int = 0
    lengths: tuple[int, ...] = ()

    @property
    def points(self) -> list[int]:
        """The pooling lengths, ascending, ending at the token cap."""
        cap = self.sampling.max_new_tokens
        points = sorted(set(self.lengths) | {cap})
        if points[0] < 1 or points[-1] > cap:
            raise ValueError(f"Branch lengths must lie in 1..{cap}, got {sorted(self.lengths)}.")
        return points


@dataclass
class SharedRollouts:
    """What ``generate_shared`` returns for B prompts; list index b is the branch."""

    prompt_embeddings: torch.Tensor  # (B, H): the prompt alone, pooled (direct mode)
    embeddings: list[torch.Tensor]  # [b]: (B, len(points), H): prompt + the first L tokens
    hit_cap: list[torch.Tensor]  # [b]: (B, len(points)): no EOS within the first L tokens
    completions: list[list[list[int]]]  # [b][i]: ids up to and including the first EOS
    prefill_seconds: torch.Tensor  # (B,): each prompt's share of the prefill's wall time
    decode_seconds: list[torch.Tensor]  # [b]: (B, len(points)): its rows' decoding up to L


@dataclass
class _Pooled:
    """Running pooling statistics of rows: sum and count of the pooled states, the last one."""

    total: torch.Tensor  # (R, H) fp32
    count: torch.Tensor  # (R,)
    last: torch.Tensor  # (R, H) fp32

    def take(self, index: torch.Tensor) -> _Pooled:
        return _Pooled(self.total[index], self.count[index], self.last[index])

    def vectors(self, method: str) -> torch.Tensor:
        """(R, H) unit vectors, as ``pooling.pool`` gives for the same positions."""
        if method == "last":
            return l2_normalize(self.last)
        return l2_normalize(self.total / self.count.clamp(min=1).unsqueeze(1).float())


@torch.no_grad()
def generate_shared(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    branches: list[Branch],
    prefix_length: int,
    pooling: str = "mean",
    known: list[list[list[int] | None]] | None = None,
    share_prefix: bool = True,
    feed_sampled: bool = False,
) -> SharedRollouts:
    """Every branch of every prompt, and the prompts' own embeddings, from one prefill.

    Each prompt is prefilled once (with ``share_prefix``, the system prefix once for the whole
    batch when every prompt starts with the same ``prefix_length`` tokens); each branch
    continues from a copy of that cache. Pooling runs on sums of last-layer states kept as
    tokens arrive, so one generation to the longest length gives the embedding after every
    shorter length too (a row that ended earlier is the same at every longer length), and the
    state of the final token comes from feeding it once more, as in ``generate_rationales``.
    Rows leave the batch as they end. ``known[b][i]``, where not None, are completion ids (a
    cache hit) fed in one forward pass instead of sampled. With ``feed_sampled`` the sampled
    rows are then fed too, with the known ones, in that one pass: every row is pooled the same
    way whatever was cached, so a warm cache gives exactly what a cold one gave (decoding
    step by step and feeding at once differ by ~1e-7, enough to flip a k-means assignment).
    """
    if pooling not in POOLERS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {sorted(POOLERS)}.")
    ids, mask = tokenize_prompts(tokenizer, prompts, model.device)
    n, points = len(prompts), [branch.points for branch in branches]
    start = time.perf_counter()
    cache, mask, pooled, logits = _prefill(model, ids, mask, prefix_length, share_prefix)
    prefill = torch.full((n,), (time.perf_counter() - start) / max(n, 1), device="cpu")
    hidden_size = pooled.total.shape[1]
    result = SharedRollouts(
        prompt_embeddings=pooled.vectors(pooling),
        embeddings=[torch.zeros(n, len(p), hidden_size, device="cpu") for p in points],
        hit_cap=[torch.zeros(n, len(p), dtype=torch.bool, device="cpu") for p in points],
        completions=[[[] for _ in range(n)] for _ in branches],
        prefill_seconds=prefill,
        decode_seconds=[torch.zeros(n, len(p), device="cpu") for p in points],
    )
    rows = [(i, b) for b in range(len(branches)) for i in range(n)]
    stored = {(i, b): known[b][i] for i, b in rows if known and known[b][i] is not None}
    positions = mask.long().sum(dim=1)  # the next token's position: the count of real tokens
    if stored and not feed_sampled:
        _feed_known(model, cache, mask, positions, pooled, stored, points, pooling, result)
    prefilled = DynamicCache([(layer.keys, layer.values) for layer in cache.layers])
    fresh = [row for row in rows if row not in stored]
    if fresh:
        state = (cache, mask, positions, pooled, logits)
        _decode(model, tokenizer, prompts, branches, points, pooling, fresh, state, result)
    if feed_sampled and rows:
        decoded = [seconds.clone() for seconds in result.decode_seconds]
        every = {(i, b): stored.get((i, b), result.completions[b][i]) for i, b in rows}
        _feed_known(model, prefilled, mask, positions, pooled, every, points, pooling, result)
        for i, b in fresh:  # a sampled row keeps the time its sampling took
            result.decode_seconds[b][i] = decoded[b][i]
    eos = set(eos_token_ids(model, tokenizer))
    for b, lengths in enumerate(points):
        for i, completion in enumerate(result.completions[b]):
            for j, length in enumerate(lengths):
                head = completion[:length]
                result.hit_cap[b][i, j] = len(head) == length and not eos.intersection(head)
    return result


#: How many prompts one prefill forward pass takes; on two cores 32 prefill faster per token
#: than 64.
PREFILL_ROWS = 32


def _prefill(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    prefix_length: int,
    share_prefix: bool,
) -> tuple:
    """Prefill left-padded prompts: (cache, attention mask of its columns, pooled prompt
    states, logits of the next token), ``PREFILL_ROWS`` rows at a time. Every part keeps the
    batch's width (a shared prefix keeps it too), so the parts stack into one batch."""
    if ids.shape[0] <= PREFILL_ROWS:
        return _prefill_rows(model, ids, mask, prefix_length, share_prefix)
    parts = [
        _prefill_rows(model, ids[at], mask[at], prefix_length, share_prefix)
        for at in torch.arange(ids.shape[0], device=ids.device).split(PREFILL_ROWS)
    ]
    caches, masks, pooled, logits = zip(*parts, strict=True)
    layers = zip(*(cache.layers for cache in caches), strict=True)
    cache = DynamicCache(
        [
            (torch.cat([x.keys for x in same]), torch.cat([x.values for x in same]))
            for same in layers
        ]
    )
    pooled = _Pooled(
        torch.cat([p.total for p in pooled]),
        torch.cat([p.count for p in pooled]),
        torch.cat([p.last for p in pooled]),
    )
    return cache, torch.cat(masks), pooled, torch.cat(logits)


def _prefill_rows(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    prefix_length: int,
    share_prefix: bool,
) -> tuple:
    shared = _split_prefix(ids, mask, prefix_length) if share_prefix else None
    if shared is None:
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        out = _forward(model, ids, mask, positions, cache=None)
        keep = pooling_mask(mask, prefix_length)
    else:
        forward = functools.partial(_forward, model)
        out, mask = _after_shared_prefix(forward, *shared)
        keep = shared[2].bool()
    hidden = out.hidden_states[-1].float()
    weights = keep.unsqueeze(-1).float()
    pooled = _Pooled((hidden * weights).sum(dim=1), keep.sum(dim=1), hidden[:, -1])
    return out.cache, mask, pooled, out.logits[:, -1].float()


def _split_prefix(ids: torch.Tensor, mask: torch.Tensor, length: int):
    """(prefix ids, suffix ids, suffix mask) when every left-padded row starts with the same
    ``length`` tokens and has more; else None. The suffix keeps the rows' padding."""
    real = mask.long().sum(dim=1)
    width = ids.shape[1]
    if length < 1 or not bool(mask[:, -1].all()) or int(real.min()) <= length:
        return None
    starts = width - real
    heads = torch.stack([ids[r, s : s + length] for r, s in enumerate(starts.tolist())])
    if not bool((heads == heads[:1]).all()):
        return None
    columns = torch.arange(width - length, device=ids.device)
    suffix_mask = (columns[None] >= starts[:, None]).to(mask.dtype)
    suffix_ids = ids[:, length:].masked_fill(suffix_mask == 0, 0)
    return heads[0], suffix_ids, suffix_mask


def _after_shared_prefix(forward, prefix, suffix_ids, suffix_mask) -> tuple:
    """Run the shared ``prefix`` once, then every row's suffix against its keys and values:
    (the suffix pass's output, the attention mask over prefix + suffix columns).
    ``forward(ids, mask, positions, cache)`` is one forward pass returning ``.cache``."""
    at = torch.arange(len(prefix), device=prefix.device)[None]
    cache = forward(prefix[None], None, at, None).cache
    cache.batch_repeat_interleave(suffix_ids.shape[0])
    mask = torch.cat([torch.ones_like(suffix_mask[:, :1]).expand(-1, len(prefix)), suffix_mask], 1)
    positions = (mask.long().cumsum(dim=1) - 1)[:, len(prefix) :]
    return forward(suffix_ids, mask, positions, cache), mask


def _forward(model, ids, mask, positions, cache):
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        output_hidden_states=True,
        logits_to_keep=1,
    )


def _feed_known(model, cache, mask, positions, pooled, stored, points, pooling, result):
    """Known completions of (prompt, branch) rows in one forward pass over a cache copy."""
    rows = list(stored)
    index = torch.tensor([i for i, _ in rows], device=mask.device)
    copy = DynamicCache([(layer.keys[index], layer.values[index]) for layer in cache.layers])
    completions = [stored[row] for row in rows]
    width = max(len(c) for c in completions)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, completion in enumerate(completions):
        ids[r, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        keep[r, : len(completion)] = True
    ids, keep = ids.to(mask.device), keep.to(mask.device)
    start = time.perf_counter()
    steps = torch.arange(width, device=mask.device)
    out = _forward(
        model,
        ids,
        torch.cat([mask[index], keep.to(mask.dtype)], dim=1),
        positions[index, None] + steps,
        cache=copy,
    )
    hidden = out.hidden_states[-1].float() * keep.unsqueeze(-1)
    running = hidden.cumsum(dim=1)
    seconds = (time.perf_counter() - start) / max(sum(map(len, completions)), 1)
    entries = []  # (branch, prompt, point, row, tokens pooled)
    for r, (i, b) in enumerate(rows):
        result.completions[b][i] = list(completions[r])
        for j, length in enumerate(points[b]):
            entries.append((b, i, j, r, min(length, len(completions[r]))))
    at = torch.tensor([e[3] for e in entries], device=mask.device)
    used = torch.tensor([e[4] for e in entries], device=mask.device)
    base = pooled.take(index[at])
    vectors = (
        _Pooled(base.total + running[at, used - 1], base.count + used, hidden[at, used - 1])
        .vectors(pooling)
        .cpu()
    )
    for (b, i, j, _, m), vector in zip(entries, vectors, strict=True):
        result.embeddings[b][i, j] = vector
        result.decode_seconds[b][i, j] = seconds * m


class _RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes each step's keys and values into spare room (doubled
    when full) instead of concatenating: ``DynamicLayer`` copies the whole cache every step."""

    def __init__(self, layer: DynamicLayer, index: torch.Tensor, room: int) -> None:
        super().__init__()
        keys, values = layer.keys[index], layer.values[index]
        self.length = keys.shape[-2]
        shape = (*keys.shape[:-2], self.length + room, keys.shape[-1])
        self._keys = keys.new_empty(shape)
        self._values = values.new_empty(shape)
        self._keys[..., : self.length, :] = keys
        self._values[..., : self.length, :] = values
        self.device, self.is_initialized = keys.device, True
        self._views()

    def _views(self) -> None:
        self.keys = self._keys[..., : self.length, :]
        self.values = self._values[..., : self.length, :]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self._keys.shape[-2]:
            more = max(n, self._keys.shape[-2])
            self._keys = torch.cat(
                [self._keys, self._keys.new_empty(self._keys[..., :more, :].shape)], -2
            )
            self._values = torch.cat(
                [self._values, self._values.new_empty(self._values[..., :more, :].shape)], -2
            )
        self._keys[..., self.length : self.length + n, :] = key_states
        self._values[..., self.length : self.length + n, :] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._views()


def _rows_cache(cache: DynamicCache, index: torch.Tensor, room: int) -> DynamicCache:
    """The prefilled cache's rows ``index`` (repeats allowed), with room to decode into."""
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_RoomyLayer(layer, index, room) for layer in cache.layers]
    else:  # sliding windows and other layer kinds keep their own update rule
        cache.batch_select_indices(index)
    return cache


def _decode(model, tokenizer, prompts, branches, points, pooling, rows, state, result):
    """Sample the rows' completions token by token from the prefilled cache (used up here)."""
    cache, mask, positions, pooled, logits = state
    device = mask.device
    index = torch.tensor([i for i, _ in rows], device=device)
    longest = max(branch.sampling.max_new_tokens for branch in branches)
    cache = _rows_cache(cache, index, min(longest, 32))
    mask, positions, logits, pooled = (
        mask[index],
        positions[index],
        logits[index],
        pooled.take(index),
    )
    branch_of = [b for _, b in rows]
    caps = torch.tensor([branches[b].sampling.max_new_tokens for b in branch_of], device=device)
    generators: list[torch.Generator | None] = [None] * len(rows)
    for b, branch in enumerate(branches):
        if branch.sampling.temperature > 0:
            mine = [r for r, (_, rb) in enumerate(rows) if rb == b]
            seeds = row_seeds(
                [prompts[rows[r][0]] for r in mine], branch.sampling.seed, [branch.draw] * len(mine)
            )
            for r, generator in zip(mine, row_generators(seeds, device), strict=True):
                generators[r] = generator
    top_p = [
        TopPLogitsWarper(branch.sampling.top_p) if branch.sampling.top_p < 1 else None
        for branch in branches
    ]
    eos = torch.tensor(eos_token_ids(model, tokenizer), device=device)
    alive = list(range(len(rows)))  # the original numbers of the rows still in the batch
    spent = torch.zeros(len(rows), device="cpu")  # decoding seconds charged to each row
    tokens: list[list[int]] = [[] for _ in rows]
    step = 0
    while alive:
        step += 1
        start = time.perf_counter()
        chosen = torch.empty(len(alive), dtype=torch.long, device=device)
        for b, branch in enumerate(branches):
            here = [p for p, r in enumerate(alive) if branch_of[r] == b]
            if not here:
                continue
            at = torch.tensor(here, device=device)
            if branch.sampling.temperature == 0:
                chosen[at] = logits[at].argmax(dim=1)
            else:
                streams = [generators[alive[p]] for p in here]
                chosen[at] = gumbel_choice(
                    logits[at], streams, branch.sampling.temperature, top_p[b]
                )
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = _forward(model, chosen[:, None], mask, positions[:, None], cache=cache)
        state_now = out.hidden_states[-1][:, -1].float()
        pooled = _Pooled(pooled.total + state_now, pooled.count + 1, state_now)
        logits = out.logits[:, -1].float()
        positions = positions + 1
        ended = torch.isin(chosen, eos) | (caps[alive] <= step)
        spent[alive] += (time.perf_counter() - start) / len(alive)
        vectors = None
        ended_now = ended.tolist()
        for p, (r, token) in enumerate(zip(alive, chosen.tolist(), strict=True)):
            tokens[r].append(token)
            i, b = rows[r]
            for j, length in enumerate(points[b]):
                if length == step or (length > step and ended_now[p]):
                    if vectors is None:
                        vectors = pooled.vectors(pooling).cpu()
                    result.embeddings[b][i, j] = vectors[p]
                    result.decode_seconds[b][i, j] = spent[r]
        if any(ended_now):
            keep = (~ended).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, positions, logits = mask[keep], positions[keep], logits[keep]
            pooled = pooled.take(keep)
            alive = [alive[p] for p in keep.tolist()]
    for r, (i, b) in enumerate(rows):
        result.completions[b][i] = tokens[r]


# --- embedding rollouts: used by the encoder, the GRACE reward and the baselines ---


def last_hidden_states(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last-layer states of one forward pass; positions count real tokens (left padding).

    The decoder body alone runs: no LM head, and no states of the other layers kept (asking the
    full model for ``hidden_states`` holds every layer's, a memory cost that grows with depth).
    Keeps the graph when gradients are on (the contrastive baselines train through it).
    """
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    out = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    )
    return out.last_hidden_state


def pooled_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_length: int,
    pooling: str = "mean",
    share_prefix: bool = True,
) -> torch.Tensor:
    """(B, H) unit embeddings of left-padded prompts, pooled after the system prefix.

    With ``share_prefix``, when every row starts with the same ``prefix_length`` tokens (one
    system prompt), the prefix runs once and its keys and values serve every row: the same
    embeddings for less work (the prefix is about a third of a short text's prompt). Keeps the
    graph when gradients are on (the baselines train through it); under activation
    checkpointing, which keeps no cache, every row runs whole.
    """
    checkpointing = model.training and getattr(model, "is_activation_checkpointing", False)
    shared = None
    if share_prefix and not checkpointing:
        shared = _split_prefix(input_ids, attention_mask, prefix_length)
    if shared is None:
        hidden = last_hidden_states(model, input_ids, attention_mask)
        return pool(hidden, attention_mask, prefix_length, pooling)
    decoder = model.get_decoder()

    def forward(ids, mask, positions, cache):
        return decoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )

    out, _ = _after_shared_prefix(forward, *shared)
    return pool(out.last_hidden_state, shared[2], 0, pooling)


@torch.no_grad()
def embed_rollouts(
    model: PreTrainedModel, rollouts: Rollouts, prefix_length: int, pooling: str = "mean"
) -> torch.Tensor:
    """(B, H) unit embeddings of prompt + completion; runs a forward pass unless states are kept,
    ``PREFILL_ROWS`` rows at a time (all of a GRPO step's rollouts at once would hold a
    (B, T, H) activation of tens of GB at the paper's sizes)."""
    if rollouts.hidden is not None:
        return pool(rollouts.hidden, rollouts.attention_mask, prefix_length, pooling)
    ids, mask = rollouts.input_ids, rollouts.attention_mask
    parts = [
        pool(last_hidden_states(model, ids[at], mask[at]), mask[at], prefix_length, pooling)
        for at in torch.arange(ids.shape[0], device=ids.device).split(PREFILL_ROWS)
    ]
    return torch.cat(parts)


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
