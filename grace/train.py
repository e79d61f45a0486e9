"""Train the policy with GRPO and GRACE's contrastive rewards, on trl's ``GRPOTrainer``.

trl samples ``num_generations`` rollouts per prompt and computes the clipped policy-gradient
loss; GRACE supplies the reward. The reward embeds each rollout with the live policy (LoRA
weights included) and compares it with one rollout of the query and of the negative,
sampled inside the reward call from the same policy at a lower temperature. Only the
prompt's rollouts receive gradient, as in the paper.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import get_last_checkpoint

from grace.baselines import build_contrastive_trainer
from grace.config import TrainConfig
from grace.encoder import EncoderConfig, save_encoder_settings
from grace.models import load_model
from grace.prompts import build_prompts, chat_prompt, system_prefix_length
from grace.rationale import (
    SamplingConfig,
    embed_rollouts,
    eos_token_ids,
    generate_rationales,
    rollouts_from_completions,
)
from grace.rewards import supervised_terms, unsupervised_rewards
from grace.runs import mark_finished, prepare_run_folder
from grace.validation import validation_callback


def grpo_dataset(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """trl's conversational format: a ``prompt`` column of chat messages, plus our columns."""
    rows = config.training_rows(tokenizer)
    system = config.policy.system_prompt
    for row in rows:
        # As ``chat_prompt``: no system turn at all when the prompt is empty, so trl's rollouts
        # and the reward's embeddings see the same template.
        row["prompt"] = [{"role": "system", "content": system}] if system else []
        row["prompt"].append({"role": "user", "content": row["text"]})
    return datasets.Dataset.from_list(rows)


def completion_text(completion) -> str:
    """trl passes conversational completions as message lists, plain ones as strings."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


class GraceReward:
    """A trl reward function computing GRACE rewards with the live policy.

    trl calls it once per generation batch with each prompt repeated ``num_generations`` times
    in a row; the clustering and cross-group terms need those groups whole, which is checked.
    """

    def __init__(self, config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.policy = config.policy
        self.tokenizer = tokenizer
        self.prefix_length = system_prefix_length(tokenizer, config.policy.system_prompt)
        self.trainer = None  # set by build_grpo_trainer: the reward needs the live model
        self.__name__ = f"grace_{config.run.setting}"
        self.last_terms = None
        self.seconds: dict[str, list[float]] = defaultdict(list)  # timings of every call
        self.sampled_steps: set[int] = set()

    def __call__(
        self,
        prompts: list,
        completions: list,
        completion_ids: list[list[int]],
        text: list[str],
        query: list[str] | None = None,
        negative: list[str] | None = None,
        trainer_state=None,
        log_metric=None,
        **_,
    ) -> list[float]:
        n = self.policy.num_generations
        groups = check_whole_groups(text, n)
        trainer = self.trainer
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            start = time.perf_counter()
            samples = self._embed_completions(model, text, completion_ids).view(groups, n, -1)
            hit_cap = self._hit_cap(model, completion_ids, samples.device).view(groups, n)
            embedded = time.perf_counter()
            supervised = self.config.run.setting == "supervised"
            anchor_sources = query[::n] + negative[::n] if supervised else text[::n]
            anchors, anchor_texts = self._rollout_embeddings(model, anchor_sources)
            if supervised:
                terms = supervised_terms(
                    anchors[:groups], samples, anchors[groups:], hit_cap, self.config.reward
                )
            else:
                terms = unsupervised_rewards(anchors, samples, hit_cap, self.config.reward)
            seconds = {
                "embed_rollouts": embedded - start,
                "anchor_rollouts": time.perf_counter() - embedded,
            }

        self.last_terms = terms
        for name, value in seconds.items():
            self.seconds[name].append(value)
        if log_metric is not None:
            for name, value in terms.means().items():
                log_metric(f"grace/{name}", value)
            log_metric("grace/hit_cap", float(hit_cap.float().mean()))
            for name, value in seconds.items():
                log_metric(f"grace/seconds_{name}", value)
        step = trainer_state.global_step if trainer_state is not None else 0
        self._write_samples(step, text, completions, anchor_texts, terms.total)
        return terms.total.flatten().tolist()

    def _embed_completions(self, model, text: list[str], completion_ids) -> torch.Tensor:
        prompts = [chat_prompt(self.tokenizer, t, self.policy.system_prompt) for t in text]
        rollouts = rollouts_from_completions(self.tokenizer, prompts, completion_ids, model.device)
        return embed_rollouts(model, rollouts, self.prefix_length)

    def _hit_cap(self, model, completion_ids: list[list[int]], device) -> torch.Tensor:
        """Rollouts that ran to the token cap without EOS, on the embeddings' device."""
        eos = set(eos_token_ids(model, self.tokenizer))
        cap = self.policy.max_completion_length
        capped = [len(ids) >= cap and not eos & set(ids) for ids in completion_ids]
        return torch.tensor(capped, device=device)

    def _rollout_embeddings(self, model, texts: list[str]) -> tuple[torch.Tensor, list[str]]:
        """One rollout per text at the query temperature, embedded in the same pass."""
        policy = self.policy
        sampling = SamplingConfig(
            temperature=policy.query_temperature,
            top_p=policy.top_p,
            max_new_tokens=policy.max_completion_length,
        )
        prompts = build_prompts(
            self.tokenizer, texts, policy.system_prompt, policy.max_prompt_tokens
        )
        rollouts = generate_rationales(model, self.tokenizer, prompts, sampling, keep_hidden=True)
        return embed_rollouts(model, rollouts, self.prefix_length), rollouts.texts

    def _write_samples(self, step, text, completions, anchor_texts, rewards) -> None:
        """Every ``sample_every`` steps, the first group's rollouts go to rationales.jsonl."""
        every = self.config.logging.sample_every
        if every <= 0 or step % every or step in self.sampled_steps:
            return
        self.sampled_steps.add(step)
        n = self.policy.num_generations
        record = {
            "step": step,
            "text": text[0],
            "anchor_rationale": anchor_texts[0],
            "rationales": [completion_text(c) for c in completions[:n]],
            "rewards": [round(float(r), 4) for r in rewards[0]],
        }
        path = Path(self.config.run.output_dir) / "rationales.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def check_whole_groups(text: list[str], n: int) -> int:
    """Number of groups in a reward call; raises unless it holds whole groups of ``n``."""
    if len(text) % n:
        raise RuntimeError(
            f"The GRACE reward got {len(text)} rollouts, not a multiple of num_generations={n}: "
            "groups were split (with several processes, make per_device_train_batch_size * "
            "steps_per_generation a multiple of num_generations)."
        )
    for start in range(0, len(text), n):
        if len(set(text[start : start + n])) != 1:
            raise RuntimeError(f"Rollouts {start}..{start + n - 1} do not share one prompt.")
    return len(text) // n


def grpo_arguments(config: TrainConfig):
    """trl's GRPOConfig for a TrainConfig (the GPU profiles are checked through this too)."""
    from trl import GRPOConfig

    policy, grpo = config.policy, config.grpo
    return GRPOConfig(
        **config.trainer_arguments(),
        per_device_train_batch_size=grpo.per_device_train_batch_size,
        gradient_accumulation_steps=grpo.gradient_accumulation_steps,
        generation_batch_size=grpo.prompts_per_generation * policy.num_generations,
        num_generations=policy.num_generations,
        max_completion_length=policy.max_completion_length,
        temperature=policy.temperature,
        top_p=policy.top_p,
        top_k=0,
        beta=grpo.beta,
        epsilon=grpo.epsilon,
        scale_rewards=grpo.scale_rewards,
        use_vllm=config.adaptation.use_vllm,
        vllm_mode=config.adaptation.vllm_mode,
    )


def build_grpo_trainer(config: TrainConfig):
    """A ready-to-train ``GRPOTrainer`` with the GRACE reward attached."""
    from trl import GRPOTrainer

    model, tokenizer = load_model(config.run.model, dtype=config.adaptation.torch_dtype)
    reward = GraceReward(config, tokenizer)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=grpo_arguments(config),
        train_dataset=grpo_dataset(config, tokenizer),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
    )
    reward.trainer = trainer
    return trainer


def save_final_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, output_dir: str
) -> Path:
    """A plain model folder (LoRA merged in) that ``load_model(output_dir)`` loads."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)


def encoder_config(config: TrainConfig) -> EncoderConfig:
    """How a trained model embeds: the evaluation settings with the policy's system prompt,
    in direct mode for the contrastive baselines (they were trained without rationales)."""
    mode = "rationale" if config.run.method == "grace" else "direct"
    settings = config.evaluation.encoder_settings(system_prompt=config.policy.system_prompt)
    return EncoderConfig(**(settings | {"mode": mode}))


def train(config: TrainConfig, callbacks: list | None = None):
    """Run one training run in ``run.output_dir`` and save the final model; returns the trainer.

    The folder is prepared by ``grace.runs``: a checkpoint is resumed only when it was written
    under the same training settings; a folder of other settings is moved aside first.
    """
    set_seed(config.run.seed)
    output = prepare_run_folder(config)
    if config.run.method == "grace":
        trainer = build_grpo_trainer(config)
    else:
        trainer = build_contrastive_trainer(config)
    if config.validation.every:
        trainer.add_callback(validation_callback(config, trainer))
    for callback in callbacks or []:
        trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(output)))
    save_final_model(trainer.model, trainer.processing_class, str(output))
    save_encoder_settings(output, encoder_config(config))
    mark_finished(output, trainer.state.log_history)
    return trainer
