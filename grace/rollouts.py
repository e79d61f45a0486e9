"""Cheaper GRPO steps with the same learning signal: what trl's default path computes twice.

One GRPO step of GRACE, as trl runs it by default, pays several times for the same numbers:

* every rollout prefills its group's prompt again, n times per group, and the loss's forward
  and backward pass run over each group's prompt n times more;
* the reward embeds each rollout with a second forward pass over prompt + completion, though
  sampling computed exactly those last-layer states;
* the query and negative rollouts are sampled in a separate, small batch.

Here (``GraceGRPOTrainer``, a ``GRPOTrainer`` whose loss is trl's own):

* ``sample_rollouts`` prefills each distinct prompt once, shares its key/value cache among the
  rows that continue it, samples every row at its own temperature (the policy's rollouts and
  the anchors, i.e. query/negative rollouts, in one batch) and mean-pools each row's last-layer
  states on the fly, so the reward needs no second pass;
* ``shared_prefix_logps`` gives trl's loss the same per-token log-probabilities (and entropies)
  with each prompt run once per micro-batch, gradients flowing through the shared cache, and the
  LM head applied to the completion positions only.

Both are exact up to float rounding (tests compare them with the plain computations). Where
they do not apply (vLLM, multimodal inputs, several processes, gradient checkpointing) the
trainer falls back to trl's sampling and embeds the rollouts with a second pass. Either way the
trainer hands the reward a ``RolloutBatch``: the reward holds no model and only scores.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import TopPLogitsWarper
from trl import GRPOTrainer

from grace.pooling import l2_normalize, pooling_mask
from grace.prompts import chat_prompt
from grace.rationale import (
    SamplingConfig,
    embed_rollouts,
    generate_rationales,
    next_tokens,
    rollouts_from_completions,
    row_generators,
    row_seeds,
)


@dataclass
class SampledRollouts:
    """Rows sampled by ``sample_rollouts``: completions (to and with the first EOS), each
    row's pooled unit embedding of prompt + completion, and whether it ran into the cap."""

    completion_ids: list[list[int]]
    embeddings: torch.Tensor  # (R, H), L2-normalised, system prefix and padding left out
    hit_cap: torch.Tensor  # (R,) bool: max_new_tokens reached without EOS
    seconds: dict[str, float] = field(default_factory=dict)


def left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, P) ids and mask of token lists, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(rows), width), dtype=torch.long, device="cpu")
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long, device="cpu")
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (left padding), as ``generate`` uses."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def decoder_of(model) -> torch.nn.Module:
    """The transformer body (embeddings, layers, final norm) of a causal LM, PEFT or not."""
    return model.get_decoder()


class _LastStates:
    """Forward hook on the decoder: keeps the last-layer (post-norm) states of each call."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.states = None
        self.handle = decoder.register_forward_hook(self)

    def __call__(self, module, args, output) -> None:
        self.states = (
            output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        )

    def remove(self) -> None:
        self.handle.remove()


@torch.no_grad()
def sample_rollouts(
    model,
    prompt_ids: list[list[int]],
    temperatures: list[float],
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    prefix_length: int,
    seeds: list[int],
    top_p: float = 1.0,
) -> SampledRollouts:
    """Sample one completion per prompt row and pool its states, in one pass.

    Row i draws its tokens from its own random stream, seeded by ``seeds[i]`` (see
    ``grace.rationale.row_seeds``), so its rollout does not depend on the rows beside it.

    Rows with equal prompts (a GRPO group, an unsupervised anchor) share one prefill: the
    distinct prompts run once, minus their last token, and the key/value cache is copied to
    every row that continues them. Decoding then feeds one token per row per step; the hook on
    the decoder adds each fed token's last-layer state to its row's running mean when it lies
    after the system prefix and no later than the row's first EOS. The last sampled token is fed
    once more (no logits) for its own state, as a second forward pass would have it.
    """
    device = model.device
    start = time.perf_counter()
    distinct: dict[tuple[int, ...], int] = {}
    inverse = torch.tensor(
        [distinct.setdefault(tuple(row), len(distinct)) for row in prompt_ids], device=device
    )
    ids, mask = left_pad([list(p) for p in distinct], pad_id, device)
    weights = pooling_mask(mask, prefix_length).float()
    rows = len(prompt_ids)
    decoder = decoder_of(model)
    cache = DynamicCache(config=model.config)
    hidden = model.config.get_text_config().hidden_size
    total = torch.zeros(len(distinct), hidden, dtype=torch.float32, device=device)
    count = torch.zeros(len(distinct), dtype=torch.float32, device=device)
    width = ids.shape[1]
    if width > 1:
        out = decoder(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions(mask)[:, :-1],
            cache=cache,
            use_cache=True,
        )
        kept = weights[:, :-1, None] > 0  # where, not a product: padding states may be NaN
        total += torch.where(kept, out.last_hidden_state.float(), 0.0).sum(dim=1)
        count += weights[:, :-1].sum(dim=1)
        cache.batch_select_indices(inverse)
    total, count = total[inverse], count[inverse]
    prefilled = time.perf_counter()

    temperature = torch.tensor(temperatures, dtype=torch.float32, device=device)
    generators = row_generators(seeds, device)
    top_p_cut = TopPLogitsWarper(top_p) if top_p < 1.0 else None
    eos = torch.tensor(eos_ids, device=device)
    attention = mask[inverse]
    token = ids[inverse, -1]  # the last prompt token is fed at the first decode step
    weight = weights[inverse, -1]
    position = positions(attention)[:, -1]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    generated = []
    hook = _LastStates(decoder)
    try:
        for step in range(max_new_tokens):
            logits = model(
                input_ids=token[:, None],
                attention_mask=attention,
                position_ids=position[:, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            total += hook.states[:, -1].float() * weight[:, None]
            count += weight
            token = next_tokens(logits, generators, temperature, top_p_cut)
            token = torch.where(done, torch.full_like(token, pad_id), token)
            weight = (~done).float()  # the state of this token counts if no EOS came before it
            generated.append(token)
            done = done | torch.isin(token, eos)
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            position = position + 1
            if done.all() or step == max_new_tokens - 1:
                break
        if weight.any():  # the last token's own state: one more step, body only
            out = decoder(
                input_ids=token[:, None],
                attention_mask=attention,
                position_ids=position[:, None],
                cache=cache,
                use_cache=True,
            )
            total += out.last_hidden_state[:, -1].float() * weight[:, None]
            count += weight
    finally:
        hook.remove()
    completion = torch.stack(generated, dim=1)
    is_eos = torch.isin(completion, eos)
    keep = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0  # up to and with the first EOS
    hit_cap = ~is_eos.any(dim=1) & (completion.shape[1] >= max_new_tokens)
    completion_ids = [row[m].tolist() for row, m in zip(completion.cpu(), keep.cpu(), strict=True)]
    embeddings = l2_normalize(total / count.clamp(min=1.0)[:, None])
    seconds = {"prefill": prefilled - start, "decode": time.perf_counter() - prefilled}
    return SampledRollouts(completion_ids, embeddings, hit_cap, seconds)


def shared_prefix_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    compute_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """trl's per-token log-probabilities (and entropies) of the last ``logits_to_keep`` tokens,
    with each distinct prompt run once.

    ``input_ids`` is trl's prompt (left-padded) + completion (right-padded) batch. The distinct
    prompts, minus their last token, go through the body once with a cache; the cache is indexed
    out to every row (a differentiable copy, so the rows' gradients add up in the shared prompt);
    then each row's last prompt token and completion go through the model's fused LM head, which
    scores only those positions. With left padding, positions are counted over real tokens; the
    rotary embedding depends on relative positions only, so this matches trl's forward pass.
    """
    completion = logits_to_keep
    width = input_ids.shape[1] - completion
    prompt, prompt_mask = input_ids[:, :width], attention_mask[:, :width]
    distinct, inverse = torch.unique(
        torch.cat([prompt, prompt_mask], dim=1), dim=0, return_inverse=True
    )
    cache = DynamicCache(config=model.config)
    if width > 1:
        ids, mask = distinct[:, : width - 1], distinct[:, width : 2 * width - 1]
        decoder_of(model)(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions(mask),
            cache=cache,
            use_cache=True,
        )
        cache.batch_select_indices(inverse)
    suffix = input_ids[:, width - 1 :]
    labels = suffix.masked_fill(attention_mask[:, width - 1 :] == 0, -100)
    labels[:, 0] = -100  # the last prompt token is context, not a label
    out = model(
        input_ids=suffix,
        attention_mask=attention_mask,
        position_ids=positions(attention_mask)[:, width - 1 :],
        cache=cache,
        labels=labels,
        fused_lm_head=True,
    )
    entropy = out.entropy[:, -completion:] if compute_entropy else None
    return out.log_probs[:, -completion:], entropy


def rollout_seeds(prompt_ids: list[list[int]], seed: int, step: int) -> list[int]:
    """Each row's sampling seed in a training step: a hash of (run seed, step, prompt, how
    many rows of this prompt came before it), so a rollout depends on nothing else in the
    batch, and a prompt seen again at a later step gets new draws."""
    seen: dict[tuple[int, ...], int] = defaultdict(int)
    draws = []
    for row in prompt_ids:
        draws.append(seen[tuple(row)])
        seen[tuple(row)] += 1
    return row_seeds(prompt_ids, [seed, step], draws)


@dataclass
class RolloutBatch:
    """What ``GraceGRPOTrainer`` hands the reward for one generation batch (this process's)."""

    completion_ids: list[list[int]]  # the policy's rows, as handed to trl
    embeddings: torch.Tensor  # (B, H)
    hit_cap: torch.Tensor  # (B,)
    anchors: torch.Tensor  # (A, H): queries, then negatives if sampled (supervised), or sentences
    anchor_texts: list[str]
    has_negatives: bool
    seconds: dict[str, float] = field(default_factory=dict)  # second-pass timings, logged
    accelerator: object = None  # the trainer's: with several processes the reward gathers groups


def capped_rows(
    completion_ids: list[list[int]], eos_ids: list[int], cap: int, device
) -> torch.Tensor:
    """(B,) bool on ``device``: rollouts that reached the token cap without an EOS."""
    eos = set(eos_ids)
    capped = [len(ids) >= cap and not eos & set(ids) for ids in completion_ids]
    return torch.tensor(capped, device=device)


class GraceGRPOTrainer(GRPOTrainer):
    """trl's ``GRPOTrainer`` with GRACE's single-pass rollouts and shared-prefix log-probs.

    ``grace_reward`` is the ``GraceReward`` among ``reward_funcs``; it says which anchor texts a
    batch needs. The trainer samples and embeds the rollouts and the anchors (``frozen_anchors``,
    a ``grace.train.FrozenAnchors``, writes the anchors' rationales once, by the starting model)
    and hands them to the reward as a ``RolloutBatch``. With ``single_pass=False`` every step
    runs trl's own sampling and log-probabilities and the trainer embeds with a second pass:
    the reference for tests and ``benchmarks/train_step.py --compare``.
    """

    def __init__(
        self, *args, grace_reward, frozen_anchors=None, single_pass: bool = True, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.grace_reward = grace_reward
        self.frozen_anchors = frozen_anchors
        self.single_pass = single_pass
        self.grace_rollouts: RolloutBatch | None = None
        self.grace_seconds: dict[str, list[float]] = defaultdict(list)
        self._grace_rows: list[dict] | None = None

    # --- which steps can take the fast path ------------------------------------------------

    def _single_process_plain_model(self, model) -> bool:
        return self.accelerator.num_processes == 1 and self.accelerator.unwrap_model(model) is model

    def _can_sample_here(self, images, multimodal_fields) -> bool:
        return (
            self.single_pass
            and self.model.training
            and not self.use_vllm
            and not self.use_transformers_continuous_batching
            and not self.tools
            and images is None
            and not multimodal_fields
            and (self.top_k or 0) == 0
            and self.min_p is None
            and self.repetition_penalty == 1.0
            and self.args.generation_kwargs is None
            and self._single_process_plain_model(self.model_wrapped)
        )

    # --- generation ---------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        self._grace_rows, self.grace_rollouts = inputs, None
        self.grace_reward.partial = False
        output = super()._generate_and_score_completions(inputs)
        if self.grace_reward.partial:
            # Scored without the negative rollout (paper variant, not a logging step): the
            # advantages are exact, but the reward values lack the group-constant negative term,
            # so they stay out of trl's logged reward means.
            name = self.reward_func_names[0]
            metrics = self._metrics["train"]
            for key in ("reward", "reward_std", f"rewards/{name}/mean", f"rewards/{name}/std"):
                if metrics.get(key):
                    metrics[key].pop()
        self._grace_rows = None
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # trl 1.16 hands reward functions the dataset's columns only; the batch's embeddings
        # and anchors go along as one more column (the same object in every row).
        inputs = [{**row, "grace_batch": self.grace_rollouts} for row in inputs]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def needs_negative(self, step: int) -> bool:
        """Whether the supervised negative is rolled out for optimizer step ``step`` (0-based):
        always where it changes advantages, else on steps that log or write samples."""
        config = self.grace_reward.config
        if config.reward.negative_every_step:
            return True
        args = self.args
        every = max(1, int(self.state.logging_steps or args.logging_steps))
        steps = max(1, args.steps_per_generation // args.gradient_accumulation_steps)
        covered = range(step + 1, step + steps + 1)  # global steps this generation batch feeds
        logs = any(s % every == 0 for s in covered) or (step == 0 and args.logging_first_step)
        sample = config.logging.sample_every
        return logs or (sample > 0 and step % sample == 0)

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        rows = self._grace_rows
        if rows is None or len(prompt_ids) != len(rows):  # not one of GRACE's batches
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        reward = self.grace_reward
        texts = [row["text"] for row in rows]
        anchor_texts, has_negatives = reward.anchor_sources(
            texts,
            [row.get("query") for row in rows],
            [row.get("negative") for row in rows],
            self.needs_negative(self.state.global_step),
        )
        if not self._can_sample_here(images, multimodal_fields):
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
            with self._generation_model() as model, self.accelerator.autocast():
                self.grace_rollouts = self._second_pass(
                    model, texts, completion_ids, anchor_texts, has_negatives
                )
            for name, value in self.grace_rollouts.seconds.items():
                self.grace_seconds[name].append(value)
            return completion_ids, logprobs

        # Frozen anchors are written already: only the policy's rows are sampled here.
        frozen = self.frozen_anchors
        anchor_ids = [] if frozen else reward.anchor_prompt_ids(anchor_texts)
        policy = reward.policy
        temperatures = [self.temperature] * len(prompt_ids) + [policy.query_temperature] * len(
            anchor_ids
        )
        all_ids = [list(p) for p in prompt_ids] + anchor_ids
        # Under the run's mixed precision, as the loss is: the decoder is called directly, past
        # the autocast accelerate wraps around the model's forward.
        with self._generation_model() as model, self.accelerator.autocast():
            sampled = sample_rollouts(
                model,
                all_ids,
                temperatures,
                max_new_tokens=self.max_completion_length,
                eos_ids=self.eos_token_ids,
                pad_id=self._tokenizer.pad_token_id,
                prefix_length=reward.prefix_length,
                seeds=rollout_seeds(all_ids, self.args.seed, self.state.global_step),
                top_p=self.top_p,
            )
            policy_rows = len(prompt_ids)
            if frozen:
                anchors, texts = frozen.embed(model, anchor_texts, reward.prefix_length)
            else:
                anchors = sampled.embeddings[policy_rows:]
                texts = self._tokenizer.batch_decode(
                    sampled.completion_ids[policy_rows:], skip_special_tokens=True
                )
        for name, value in sampled.seconds.items():
            self.grace_seconds[name].append(value)
        self.grace_rollouts = RolloutBatch(
            completion_ids=sampled.completion_ids[:policy_rows],
            embeddings=sampled.embeddings[:policy_rows],
            hit_cap=sampled.hit_cap[:policy_rows],
            anchors=anchors,
            anchor_texts=texts,
            has_negatives=has_negatives,
            accelerator=self.accelerator,
        )
        return sampled.completion_ids[:policy_rows], None

    def _generation_model(self):
        from trl.models import unwrap_model_for_generation

        return unwrap_model_for_generation(
            self.model_wrapped,
            self.accelerator,
            gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
        )

    # --- the reference path: trl samples, a second pass embeds -------------------------------

    def _second_pass(self, model, texts, completion_ids, anchor_texts, has_negatives):
        """The batch for rollouts trl sampled: each embedded by a second forward pass over
        prompt + completion, the anchors sampled in a batch of their own."""
        start = time.perf_counter()
        completion_ids = [list(ids) for ids in completion_ids]
        embeddings = self.embed_completions(model, texts, completion_ids)
        hit_cap = capped_rows(
            completion_ids, self.eos_token_ids, self.max_completion_length, embeddings.device
        )
        embedded = time.perf_counter()
        anchors, anchor_rationales = self.anchor_embeddings(model, anchor_texts)
        return RolloutBatch(
            completion_ids=completion_ids,
            embeddings=embeddings,
            hit_cap=hit_cap,
            anchors=anchors,
            anchor_texts=anchor_rationales,
            has_negatives=has_negatives,
            seconds={
                "embed_rollouts": embedded - start,
                "anchor_rollouts": time.perf_counter() - embedded,
            },
            accelerator=self.accelerator,
        )

    def embed_completions(self, model, texts: list[str], completion_ids) -> torch.Tensor:
        """(B, H) unit embeddings of each text's prompt with its completion, one forward pass."""
        reward = self.grace_reward
        prompts = [chat_prompt(self._tokenizer, t, reward.policy.system_prompt) for t in texts]
        rollouts = rollouts_from_completions(self._tokenizer, prompts, completion_ids, model.device)
        return embed_rollouts(model, rollouts, reward.prefix_length)

    def anchor_embeddings(self, model, texts: list[str]) -> tuple[torch.Tensor, list[str]]:
        """The anchors' embeddings and rationales: the frozen ones, or fresh policy rollouts
        (one per text at the query temperature, embedded in the same pass)."""
        reward = self.grace_reward
        if self.frozen_anchors is not None:
            return self.frozen_anchors.embed(model, texts, reward.prefix_length)
        policy = reward.policy
        sampling = SamplingConfig(
            temperature=policy.query_temperature,
            top_p=policy.top_p,
            max_new_tokens=policy.max_completion_length,
        )
        prompts = reward.anchor_prompts(texts)
        rollouts = generate_rationales(model, self._tokenizer, prompts, sampling, keep_hidden=True)
        return embed_rollouts(model, rollouts, reward.prefix_length), rollouts.texts

    # --- the loss's log-probabilities ---------------------------------------------------------

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        if (
            not self.single_pass
            or compute_aux_loss
            or any(value is not None for value in multimodal.values())
            or not self._single_process_plain_model(model)
            or getattr(
                self.args, "activation_checkpointing", False
            )  # re-runs would refill the cache
        ):
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **multimodal,
            )
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            rows = slice(start, start + batch_size)
            with self.accelerator.autocast():
                logp, entropy = shared_prefix_logps(
                    model, input_ids[rows], attention_mask[rows], logits_to_keep, compute_entropy
                )
            logps.append(logp)
            entropies.append(entropy)
        entropy = torch.cat(entropies) if compute_entropy else None
        return torch.cat(logps), entropy, None
