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
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import get_last_checkpoint

from grace.baselines import build_contrastive_trainer
from grace.config import EVALUATION_FIELDS, TrainConfig
from grace.data import training_rows
from grace.encoder import embed_rollouts, rollouts_from_completions
from grace.models import load_model
from grace.prompts import build_prompts, chat_prompt, system_prefix_length
from grace.rationale import SamplingConfig, eos_token_ids, generate_rationales
from grace.rewards import RewardConfig, supervised_rewards, unsupervised_rewards


def grpo_dataset(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """trl's conversational format: a ``prompt`` column of chat messages, plus our columns."""
    rows = training_rows(config, tokenizer)
    for row in rows:
        row["prompt"] = [
            {"role": "system", "content": config.system_prompt},
            {"role": "user", "content": row["text"]},
        ]
    return datasets.Dataset.from_list(rows)


def completion_text(completion) -> str:
    """trl passes conversational completions as message lists, plain ones as strings."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


LOG_HISTORY = "log_history.json"


class GraceReward:
    """A trl reward function computing GRACE rewards with the live policy.

    trl calls it once per generation batch with each prompt repeated ``num_generations`` times
    in a row; the clustering and cross-group terms need those groups whole, which is checked.
    """

    def __init__(self, config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.reward_config = RewardConfig(
            config.tau, config.cluster_weight, config.cross_weight, config.length_penalty
        )
        self.prefix_length = system_prefix_length(tokenizer, config.system_prompt)
        self.trainer = None  # set by build_grpo_trainer: the reward needs the live model
        self.__name__ = f"grace_{config.setting}"
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
        n = self.config.num_generations
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
            hit_cap = self._hit_cap(model, completion_ids).view(groups, n)
            embedded = time.perf_counter()
            supervised = self.config.setting == "supervised"
            anchor_sources = query[::n] + negative[::n] if supervised else text[::n]
            anchors, anchor_texts = self._rollout_embeddings(model, anchor_sources)
            if supervised:
                terms = supervised_rewards(
                    anchors[:groups], samples, anchors[groups:], hit_cap, self.reward_config
                )
            else:
                terms = unsupervised_rewards(anchors, samples, hit_cap, self.reward_config)
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
        prompts = [chat_prompt(self.tokenizer, t, self.config.system_prompt) for t in text]
        rollouts = rollouts_from_completions(self.tokenizer, prompts, completion_ids, model.device)
        return embed_rollouts(model, rollouts, self.prefix_length)

    def _hit_cap(self, model, completion_ids: list[list[int]]) -> torch.Tensor:
        eos = set(eos_token_ids(model, self.tokenizer))
        cap = self.config.max_completion_length
        return torch.tensor([len(ids) >= cap and not eos & set(ids) for ids in completion_ids])

    def _rollout_embeddings(self, model, texts: list[str]) -> tuple[torch.Tensor, list[str]]:
        """One rollout per text at the query temperature, embedded in the same pass."""
        sampling = SamplingConfig(
            self.config.query_temperature, self.config.top_p, self.config.max_completion_length
        )
        prompts = build_prompts(
            self.tokenizer, texts, self.config.system_prompt, self.config.max_prompt_tokens
        )
        rollouts = generate_rationales(model, self.tokenizer, prompts, sampling, keep_hidden=True)
        return embed_rollouts(model, rollouts, self.prefix_length), rollouts.texts

    def _write_samples(self, step, text, completions, anchor_texts, rewards) -> None:
        """Every ``sample_every`` steps, the first group's rollouts go to rationales.jsonl."""
        every = self.config.sample_every
        if every <= 0 or step % every or step in self.sampled_steps:
            return
        self.sampled_steps.add(step)
        n = self.config.num_generations
        record = {
            "step": step,
            "text": text[0],
            "anchor_rationale": anchor_texts[0],
            "rationales": [completion_text(c) for c in completions[:n]],
            "rewards": [round(float(r), 4) for r in rewards[0]],
        }
        path = Path(self.config.output_dir) / "rationales.jsonl"
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

    return GRPOConfig(
        **config.trainer_arguments(),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        generation_batch_size=config.prompts_per_generation * config.num_generations,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=0,
        beta=config.beta,
        epsilon=config.epsilon,
        scale_rewards=config.scale_rewards,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
    )


def build_grpo_trainer(config: TrainConfig):
    """A ready-to-train ``GRPOTrainer`` with the GRACE reward attached."""
    from trl import GRPOTrainer

    model, tokenizer = load_model(config.model, dtype=torch.bfloat16 if config.bf16 else None)
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


def train(config: TrainConfig):
    """Run (or resume) one training run; returns the trainer after saving the final model."""
    set_seed(config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    if config.method == "grace":
        trainer = build_grpo_trainer(config)
    else:
        trainer = build_contrastive_trainer(config)
    last = get_last_checkpoint(str(output)) if output.exists() else None
    trainer.train(resume_from_checkpoint=last)
    save_final_model(trainer.model, trainer.processing_class, config.output_dir)
    (output / LOG_HISTORY).write_text(json.dumps(trainer.state.log_history, indent=1))
    return trainer


def trained_model(config: TrainConfig) -> Path:
    """The folder of a finished run with this exact configuration, training it if needed.

    Notebooks call this, so a later notebook (or a rerun) reuses a model trained earlier.
    """
    output = Path(config.output_dir)
    saved = output / "train_config.json"
    finished = (output / LOG_HISTORY).exists() and saved.exists()
    if not finished or saved_settings(saved) != config.training_settings():
        train(config)
    return output


def saved_settings(path: Path) -> dict:
    """The training settings recorded in a run's ``train_config.json``."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in EVALUATION_FIELDS}


def log_history(output_dir: str | Path) -> list[dict]:
    """The logged metrics of a finished run, one dict per logging step."""
    return json.loads((Path(output_dir) / LOG_HISTORY).read_text())
