"""Train the policy with GRPO and GRACE's contrastive rewards, on trl's ``GRPOTrainer``.

trl samples ``num_generations`` rollouts per prompt and computes the clipped policy-gradient
loss; GRACE supplies the reward. The reward embeds each rollout with the live policy (LoRA
weights included) and compares it with one rollout of the query and of the negative,
sampled from the same policy at a lower temperature. Only the prompt's rollouts receive
gradient, as in the paper. The trainer is ``grace.rollouts.GraceGRPOTrainer``: it samples the
rollouts and the anchors and embeds them (by default in one batch, every embedding pooled
during sampling; with ``build_grpo_trainer(config, single_pass=False)`` trl samples and the
trainer embeds with a second pass), and hands them to the reward, which only scores.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
from contextlib import nullcontext
from pathlib import Path

import datasets
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.integrations import integration_utils
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import get_last_checkpoint

from grace.baselines import build_contrastive_trainer
from grace.config import ConfigError, TrainConfig
from grace.encoder import EncoderConfig, save_encoder_settings
from grace.models import ADAPTER_CONFIG, check_fits, load_model, name_adapter_base
from grace.prompts import build_prompts, prompt_token_ids, system_prefix_length
from grace.rationale import (
    SamplingConfig,
    embed_rollouts,
    generate_rationales,
    rollouts_from_completions,
)
from grace.rewards import RewardTerms, supervised_terms, unsupervised_rewards
from grace.runs import (
    SAMPLES_FILE,
    check_checkpoint,
    forget_samples_from,
    is_finished,
    is_main_process,
    mark_finished,
    prepare_run_folder,
    restore_moved_run,
    run_lock,
    wait_for_run_folder,
)
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


class FrozenAnchors:
    """Anchor rationales written once per text by a frozen copy of the starting model.

    With the paper's anchors the policy being trained writes the query's (and negative's)
    rationale at every step, so the target of each reward moves with the policy. Here each
    anchor text gets one rationale, sampled at the query temperature from the model as it was
    before training and kept in ``anchors.jsonl`` in the run folder (a resumed run reuses
    them). The live model embeds them, so that anchors and rollouts are compared in one
    embedding space, the one the trained model is evaluated in.
    """

    FILE = "anchors.jsonl"

    def __init__(self, config: TrainConfig, tokenizer: PreTrainedTokenizerBase, model) -> None:
        self.policy = config.policy
        self.seed = config.run.seed
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.path = Path(config.run.output_dir) / self.FILE
        self.completions: dict[str, list[int]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:  # a last line cut by a crash: sampled again
                    continue
                self.completions[item["text"]] = item["completion_ids"]

    def prompts(self, texts: list[str]) -> list[str]:
        policy = self.policy
        return build_prompts(self.tokenizer, texts, policy.system_prompt, policy.max_prompt_tokens)

    def completion_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's frozen rationale (token ids), sampled the first time it is asked for."""
        missing = sorted(set(texts) - set(self.completions))
        if missing:
            sampling = SamplingConfig(
                temperature=self.policy.query_temperature,
                top_p=self.policy.top_p,
                max_new_tokens=self.policy.max_completion_length,
                seed=self.seed,  # a text's rationale depends on the text and seed alone
            )
            rollouts = generate_rationales(
                self.model, self.tokenizer, self.prompts(missing), sampling
            )
            for text, ids, mask in zip(
                missing, rollouts.completion_ids, rollouts.completion_mask, strict=True
            ):
                self.completions[text] = ids[mask].tolist()
            # One writer: under several processes each samples its own texts' anchors (a text's
            # rationale depends on the text and seed alone), and the main process keeps its own.
            if is_main_process():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    for text in missing:
                        record = {"text": text, "completion_ids": self.completions[text]}
                        handle.write(json.dumps(record) + "\n")
        return [self.completions[text] for text in texts]

    def embed(self, model, texts: list[str], prefix_length: int) -> tuple[torch.Tensor, list[str]]:
        """The anchors' unit embeddings by ``model`` (the live policy) and their rationales."""
        ids = self.completion_ids(texts)
        rollouts = rollouts_from_completions(self.tokenizer, self.prompts(texts), ids, model.device)
        return embed_rollouts(model, rollouts, prefix_length), rollouts.texts


class GraceReward:
    """A trl reward function computing GRACE rewards from what the trainer hands it.

    trl calls it once per generation batch with each prompt repeated ``num_generations`` times
    in a row; the clustering and cross-group terms need those groups whole, which is checked.
    ``GraceGRPOTrainer`` samples the rollouts and the anchors and embeds them (the reward holds
    no model); it passes them as the ``grace_batch`` column, so the reward only scores.
    """

    def __init__(self, config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.policy = config.policy
        self.tokenizer = tokenizer
        self.prefix_length = system_prefix_length(tokenizer, config.policy.system_prompt)
        self.__name__ = f"grace_{config.run.setting}"
        self.last_terms = None
        self.partial = False  # the last call scored without the negative rollout
        self.sampled_steps: set[int] = set()

    def __call__(
        self,
        prompts: list,
        completions: list,
        completion_ids: list[list[int]],
        text: list[str],
        grace_batch: list | None = None,
        trainer_state=None,
        log_metric=None,
        **_,
    ) -> list[float]:
        n = self.policy.num_generations
        groups = check_whole_groups(text, n)
        step = trainer_state.global_step if trainer_state is not None else 0
        batch = grace_batch[0] if grace_batch else None
        if batch is None or batch.completion_ids != [list(c) for c in completion_ids]:
            raise RuntimeError(
                "GraceReward scores the rollouts and anchors that GraceGRPOTrainer hands it "
                "(the grace_batch column); build the trainer with grace.train.build_grpo_trainer."
            )
        samples = batch.embeddings.view(groups, n, -1)
        hit_cap = batch.hit_cap.to(samples.device).view(groups, n)
        terms, rewards = terms_over_processes(
            self.config, batch.anchors, samples, hit_cap, batch.has_negatives, batch.accelerator
        )
        # Without the negative rollout the rewards lack a group-constant term: the advantages
        # are exact, but neither the negative nor the total is logged (nor trl's reward means).
        self.partial = self.config.run.setting == "supervised" and not batch.has_negatives

        self.last_terms = terms
        if log_metric is not None:
            for name, value in terms.means().items():
                if not (self.partial and name in ("negative", "total")):
                    log_metric(f"grace/{name}", value)
            log_metric("grace/hit_cap", float(hit_cap.float().mean()))
            for name, value in batch.seconds.items():
                log_metric(f"grace/seconds_{name}", value)
        if batch.accelerator is None or batch.accelerator.is_main_process:  # one writer
            self._write_samples(step, text, completions, batch.anchor_texts, rewards)
        return rewards.flatten().tolist()

    def anchor_sources(
        self,
        text: list[str],
        query: list[str] | None,
        negative: list[str] | None,
        with_negatives: bool,
    ) -> tuple[list[str], bool]:
        """Texts of the anchor rollouts of a batch (one per group) and whether the negatives are
        among them: queries (+ negatives, when asked for) when supervised, the sentences again
        when not."""
        n = self.policy.num_generations
        if self.config.run.setting != "supervised":
            return text[::n], False
        if with_negatives:
            return query[::n] + negative[::n], True
        return query[::n], False

    def anchor_prompts(self, texts: list[str]) -> list[str]:
        """The anchors' prompts, built as for the policy's own prompts."""
        policy = self.policy
        return build_prompts(self.tokenizer, texts, policy.system_prompt, policy.max_prompt_tokens)

    def anchor_prompt_ids(self, texts: list[str]) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, p) for p in self.anchor_prompts(texts)]

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
        path = Path(self.config.run.output_dir) / SAMPLES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def grace_terms(
    config: TrainConfig,
    anchors: torch.Tensor,
    samples: torch.Tensor,
    hit_cap: torch.Tensor,
    has_negatives: bool,
) -> RewardTerms:
    """The reward terms of (G, n) rollout embeddings ``samples``. ``anchors`` holds one row
    per group: the queries, then the negatives when ``has_negatives`` (supervised), or the
    sentences' own rollouts (unsupervised)."""
    groups = samples.shape[0]
    if config.run.setting == "supervised":
        negatives = anchors[groups:] if has_negatives else None
        return supervised_terms(anchors[:groups], samples, negatives, hit_cap, config.reward)
    return unsupervised_rewards(anchors, samples, hit_cap, config.reward)


def terms_over_processes(
    config: TrainConfig,
    anchors: torch.Tensor,
    samples: torch.Tensor,
    hit_cap: torch.Tensor,
    has_negatives: bool,
    accelerator=None,
) -> tuple[RewardTerms, torch.Tensor]:
    """The terms of every process's groups scored together, and this process's (G, n) rewards.

    The cross-group term compares a group with the other groups of the batch. With several
    processes, trl (1.16) hands process i the i-th contiguous slice of the generation batch,
    so gathering in process order rebuilds the batch one process would have scored: the
    rewards do not depend on how many processes share the work.
    """
    if accelerator is None or accelerator.num_processes == 1:
        terms = grace_terms(config, anchors, samples, hit_cap, has_negatives)
        return terms, terms.total
    from accelerate.utils import gather

    groups, width = samples.shape[0], samples.shape[-1]
    # (k, G, d) -> (G, k, d): the queries and negatives of one group travel together.
    by_group = anchors.view(-1, groups, width).transpose(0, 1).contiguous()
    everyone = gather(by_group).transpose(0, 1).reshape(-1, width)
    hit_cap = hit_cap.to(samples.device)
    terms = grace_terms(config, everyone, gather(samples), gather(hit_cap), has_negatives)
    mine = slice(accelerator.process_index * groups, (accelerator.process_index + 1) * groups)
    return terms, terms.total[mine]


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
    return config.build_arguments(
        GRPOConfig,
        config.trainer_arguments()
        | dict(
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
        ),
    )


def build_grpo_trainer(config: TrainConfig, single_pass: bool = True):
    """A ready-to-train ``GRPOTrainer`` with the GRACE reward attached.

    It is a ``grace.rollouts.GraceGRPOTrainer``: trl's loss, with each prompt run once per
    group and the reward's embeddings pooled during sampling. ``single_pass=False`` keeps
    trl's own sampling and log-probabilities and a second embedding pass (the old path, for
    comparisons); both train on the same learning signal.
    """
    from grace.rollouts import GraceGRPOTrainer

    model, tokenizer = load_model(config.run.model, dtype=config.adaptation.torch_dtype)
    policy = config.policy
    check_fits(
        model,
        system_prefix_length(tokenizer, policy.system_prompt),
        policy.max_prompt_tokens,
        policy.max_completion_length,
        "policy.max_prompt_tokens + policy.max_completion_length",
    )
    peft_config = config.peft_config(model)
    top = config.adaptation.train_top_layers
    if top is not None:
        layers = train_top_layers(model, top, lora=peft_config is not None)
        if peft_config is not None:
            peft_config = top_layers_lora(model, peft_config, layers)
    if config.grpo.beta > 0 and peft_config is None and not model.config._name_or_path:
        # trl loads the KL reference from the policy's own path; a model built in memory (the
        # tiny test model) has none, so the starting weights are saved in the run folder.
        reference = Path(config.run.output_dir) / "reference"
        model.save_pretrained(reference)
        tokenizer.save_pretrained(reference)
        model.config._name_or_path = str(reference)
    frozen = None
    if config.reward.anchors == "frozen":  # copied before any training or adapter changes it
        frozen = FrozenAnchors(config, tokenizer, copy.deepcopy(model))
    reward = GraceReward(config, tokenizer)
    return GraceGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=grpo_arguments(config),
        train_dataset=grpo_dataset(config, tokenizer),
        processing_class=tokenizer,
        peft_config=peft_config,
        grace_reward=reward,
        frozen_anchors=frozen,
        single_pass=single_pass,
    )


def train_top_layers(model: PreTrainedModel, top: int, lora: bool = False) -> list[int]:
    """Leave only the top ``top`` transformer layers (and the final norm) trainable; returns
    their indices. Everything below, the (often tied) embeddings and LM head included, is
    frozen, so backward stops at the lowest trained layer. With ``lora`` nothing is frozen here:
    the indices go to peft's ``layers_to_transform``, which puts adapters in those layers only.
    """
    decoder = model.get_decoder()
    count = len(decoder.layers)
    if not 1 <= top <= count:
        raise ConfigError(f"adaptation.train_top_layers={top}, but the model has {count} layers.")
    trained = list(range(count - top, count))
    if not lora:
        model.requires_grad_(False)
        for index in trained:
            decoder.layers[index].requires_grad_(True)
        decoder.norm.requires_grad_(True)
    return trained


def top_layers_lora(model: PreTrainedModel, peft_config, layers: list[int]):
    """``peft_config`` with adapters in ``layers`` only. peft takes ``layers_to_transform``
    with a list of module names only, so ``"all-linear"`` becomes the layers' linear modules."""
    import dataclasses

    targets = peft_config.target_modules
    if isinstance(targets, str):
        if targets != "all-linear":
            raise ValueError(
                "train_top_layers with LoRA needs lora_target_modules as a list of module "
                f"names or 'all-linear', not the pattern {targets!r}."
            )
        decoder = model.get_decoder()
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in decoder.layers.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
        )
    return dataclasses.replace(
        peft_config, target_modules=list(targets), layers_to_transform=layers
    )


def save_final_model(trainer: Trainer, config: TrainConfig) -> Path:
    """Save the trained model in the run folder through the trainer, which every process calls:
    under FSDP or ZeRO-3 the weights are gathered first, and only the main process writes.
    Full fine-tuning saves a plain fp32 model folder; LoRA saves its adapters alone, naming
    the base as the run did, and ``load_model`` puts them back on the base at the base's own
    precision (merged into bf16 weights, most of a small update would round away)."""
    output = Path(config.run.output_dir)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero() and (output / ADAPTER_CONFIG).is_file():
        name_adapter_base(output, config.run.model)
    return output


def encoder_config(config: TrainConfig) -> EncoderConfig:
    """How a trained model embeds: the evaluation settings with the policy's system prompt,
    in direct mode for the contrastive baselines (they were trained without rationales)."""
    mode = "rationale" if config.run.method == "grace" else "direct"
    settings = config.evaluation.encoder_settings(system_prompt=config.policy.system_prompt)
    return EncoderConfig(**(settings | {"mode": mode}))


def train(config: TrainConfig, callbacks: list | None = None):
    """Run one training run in ``run.output_dir`` and save the final model; returns the trainer.

    The folder is prepared by ``grace.runs``: a checkpoint is resumed only when it was written
    under the same training settings; a folder of other settings is moved aside first; one
    process at a time may write it.
    """
    # Under `accelerate launch` or torchrun the processes of one job share the folder: the
    # main process holds the lock, prepares the folder and writes the final model.
    main = is_main_process()
    with run_lock(config.run.output_dir) if main else nullcontext():
        if is_finished(config.run.output_dir, config):  # finished by another process meanwhile
            raise ConfigError(
                f"{config.run.output_dir} was finished by another process with these settings "
                "while this one waited; it is reused as it is."
            )
        return _train(config, callbacks, main)


class Diverged(ConfigError):
    """Training produced a non-finite loss or gradient norm: the run stops unfinished."""


class StopOnNonFinite(TrainerCallback):
    """Stop a run whose loss or gradient norm is NaN or infinite, naming the step: its weights
    are lost to NaN, and a run marked finished would be reused and score as if it were fine."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise Diverged(
                    f"training diverged at step {state.global_step} ({key} {value}); the run "
                    f"is not finished: lower the learning rate (now {args.learning_rate:g})."
                )


def check_reporters(report_to: list[str] | str) -> None:
    """Refuse a ``logging.report_to`` integration that is not installed before any folder is
    touched: the Trainer would fail only after the model loads (a fresh GPU box has no
    tensorboard, which the GPU profiles log to)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in integration_utils.INTEGRATION_TO_CALLBACK:
            known = ", ".join(integration_utils.INTEGRATION_TO_CALLBACK)
            raise ConfigError(f"logging.report_to={name} is not a logger; use none or {known}.")
        available = getattr(integration_utils, f"is_{name}_available", None)
        if available is not None and not available():
            extra = " (the package's `gpu` extra has it)" if name == "tensorboard" else ""
            raise ConfigError(
                f"logging.report_to={name} but {name} is not installed: pip install {name}"
                f"{extra}, or --set report_to=none."
            )


def check_machine(config: TrainConfig) -> None:
    """Refuse settings this machine cannot run before any folder is touched or model loaded:
    a logger or vLLM that is not installed, bf16 or fp16 autocast without a GPU."""
    check_reporters(config.logging.report_to)
    if config.adaptation.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "adaptation.use_vllm=true but vLLM is not installed: pip install 'trl[vllm]' (on a "
            "CUDA machine), or --set use_vllm=false."
        )
    for autocast in ("bf16", "fp16"):
        if getattr(config.adaptation, autocast) and not torch.cuda.is_available():
            raise ConfigError(
                f"adaptation.{autocast}=true needs a CUDA GPU and this machine has none: "
                f"--set {autocast}=false."
            )
    gpus = torch.cuda.device_count()
    if gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Alone, trl's GRPOTrainer refuses several GPUs with a traceback and the Trainer wraps
        # the baselines in nn.DataParallel (one process driving all of them): neither is wanted.
        raise ConfigError(
            f"{gpus} GPUs are visible but grace train runs as one process: start it with "
            f"`accelerate launch --num_processes {gpus} -m grace.cli train ...` to use them "
            "all, or set CUDA_VISIBLE_DEVICES=0 to train on one."
        )


def _train(config: TrainConfig, callbacks: list | None, main: bool):
    set_seed(config.run.seed)
    check_machine(config)
    output = prepare_run_folder(config) if main else wait_for_run_folder(config)
    if config.run.method == "grace":
        trainer = build_grpo_trainer(config)
        needed = config.grpo.prompts_per_generation
    else:
        trainer = build_contrastive_trainer(config)
        needed = config.baselines.batch_size
    rows = len(trainer.train_dataset)
    if rows < needed:  # trl and the Trainer would "train" 0 steps and save the base model
        raise ConfigError(
            f"{config.run.data}: {rows} training rows, but one step needs {needed}: "
            "give more data (or a larger run.max_examples)."
        )
    trainer.add_callback(StopOnNonFinite())
    if config.validation.every:
        trainer.add_callback(validation_callback(config, trainer))
    for callback in callbacks or []:
        trainer.add_callback(callback)
    checkpoint = get_last_checkpoint(str(output))
    check_checkpoint(checkpoint)
    last = last_step_state(checkpoint)
    if last:  # stopped after its final checkpoint: finish from it, never train a step more
        trainer._load_from_checkpoint(checkpoint)
        trainer.state = last
    else:
        if checkpoint and main:
            forget_samples_from(output, int(Path(checkpoint).name.removeprefix("checkpoint-")))
        trainer.train(resume_from_checkpoint=checkpoint)
    save_final_model(trainer, config)
    if main:
        save_encoder_settings(output, encoder_config(config))
        mark_finished(output, trainer.state.log_history)
    trainer.accelerator.wait_for_everyone()
    return trainer


def last_step_state(checkpoint: str | None) -> TrainerState | None:
    """The trainer state of a checkpoint saved at its run's last step, else None. Resumed
    from there, the Trainer would take one more step before it checks ``max_steps``."""
    if not checkpoint:
        return None
    state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    return state if state.max_steps and state.global_step >= state.max_steps else None


def trained_model(config: TrainConfig) -> Path:
    """The folder of a finished run with these settings, training (or resuming) it if needed:
    a rerun reuses the model, and a change of any setting that decides the weights trains again."""
    if not reuse_finished(config):
        train(config)
    return Path(config.run.output_dir)


def reuse_finished(config: TrainConfig) -> bool:
    """Reuse a finished run of these settings, if there is one (moved back first if a failed
    start had moved it aside): its weights stand, but how it embeds (``encoder_config.json``)
    follows this config's evaluation settings, which may differ. False: it must be trained."""
    restore_moved_run(config)
    if not is_finished(config.run.output_dir, config):  # training again would add steps
        return False
    save_encoder_settings(config.run.output_dir, encoder_config(config))
    return True
