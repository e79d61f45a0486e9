"""Run configuration: one dataclass with the paper's defaults, loadable from YAML profiles.

A profile (``configs/tiny.yaml``, ``cpu``, ``colab``, ``paper``) lists only what it changes;
``--set key=value`` on the command line changes one more thing (values are parsed as YAML,
so ``--set lora=true`` gives a bool and ``--set learning_rate=1e-5`` a float).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from grace.prompts import SYSTEM_PROMPT

PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs"
METHODS = ("grace", "contrastive", "simcse")
SETTINGS = ("supervised", "unsupervised")


# Settings that only change how trained models are scored, never how they are trained.
EVALUATION_FIELDS = (
    "eval_suite",
    "eval_max_new_tokens",
    "eval_batch_size",
    "eval_draws",
    "study_lengths",
)


class ConfigError(ValueError):
    """A setting that cannot be used: unknown key, bad value, malformed override."""


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults follow the paper's reference recipe."""

    method: str = "grace"  # grace | contrastive | simcse
    setting: str = "supervised"  # supervised (triples) | unsupervised (sentences), for grace
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    triples: str = "rotten-tomatoes"  # jsonl file, offline builder, or datasets id
    sentences: str = "lee-sentences"  # txt/jsonl file, offline builder, or datasets id
    max_examples: int | None = None  # use only the first N examples
    output_dir: str = "runs/grace"
    seed: int = 0

    # The policy and its rollouts.
    system_prompt: str = SYSTEM_PROMPT
    max_prompt_tokens: int = 1024  # longer texts are truncated (the paper's max prompt)
    max_completion_length: int = 2048
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    query_temperature: float = 0.5  # one rollout each for query and negative

    # GRPO optimisation: 64 prompts per generation batch, updates on 16 prompts at a time.
    learning_rate: float = 1e-6
    prompts_per_generation: int = 64
    per_device_train_batch_size: int = 16  # completions per micro-batch
    gradient_accumulation_steps: int = 8  # micro-batches per optimizer update
    num_train_epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    beta: float = 0.0  # KL coefficient: the paper uses none
    epsilon: float = 0.2  # PPO clip
    scale_rewards: str = "none"  # group mean only, no std division

    # The reward (see grace.rewards).
    tau: float = 0.1
    cluster_weight: float = 0.2
    cross_weight: float = 0.2
    length_penalty: float | None = -1.0  # None: no penalty for hitting the token cap

    # How the weights are adapted, and on what hardware.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"

    # Contrastive baselines (InfoNCE on direct-mode embeddings).
    contrastive_batch_size: int = 32
    contrastive_temperature: float = 0.05
    simcse_dropout: float = 0.1

    # Evaluation (notebooks and `grace reproduce`): the paper samples up to 2048 tokens.
    eval_suite: str = "offline"
    eval_max_new_tokens: int = 2048
    eval_batch_size: int = 8  # generated rows per batch
    eval_draws: int = 1  # rationales sampled per text for rationale rows: mean ± std over draws
    study_lengths: list[int] = dataclasses.field(default_factory=lambda: [0, 16, 32, 64, 128])

    # Bookkeeping.
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    sample_every: int = 10  # write sample rationales to output_dir/rationales.jsonl
    report_to: list[str] | str = "none"  # "tensorboard", "wandb", ...

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
        if self.setting not in SETTINGS:
            raise ConfigError(f"Unknown setting {self.setting!r}; choose one of {SETTINGS}.")
        if self.num_generations < 2:
            raise ConfigError("num_generations must be at least 2 (advantages are group-relative).")

    def training_settings(self) -> dict:
        """Every field but the evaluation ones, JSON-normalised: what makes two runs the same."""
        settings = {k: v for k, v in asdict(self).items() if k not in EVALUATION_FIELDS}
        return json.loads(json.dumps(settings))

    def trainer_arguments(self) -> dict:
        """The ``TrainingArguments`` every method shares (trl's configs extend them)."""
        import torch

        return dict(
            output_dir=self.output_dir,
            seed=self.seed,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            logging_steps=self.logging_steps,
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            report_to=self.report_to,
            bf16=self.bf16,
            activation_checkpointing=self.gradient_checkpointing,
            remove_unused_columns=False,  # the collators and the reward read our own columns
            dataloader_pin_memory=torch.cuda.is_available(),
        )

    def peft_config(self):
        """peft's LoraConfig when ``lora`` is on, else None (full fine-tuning)."""
        if not self.lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            task_type="CAUSAL_LM",
        )


def profile_path(name_or_path: str) -> Path:
    """A profile name (``cpu``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return PROFILE_DIR / f"{name_or_path}.yaml"


def parse_overrides(pairs: list[str]) -> dict:
    """``["lr=1e-5", "lora=true"]`` -> ``{"lr": 1e-5, "lora": True}`` (values parsed as YAML)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Expected key=value, got {pair!r}.")
        values[key.strip()] = number_or_value(yaml.safe_load(value))
    return values


def number_or_value(value):
    """YAML reads ``1e-5`` (no dot) as a string; people mean a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(
    profile: str | None = None, overrides: list[str] | dict | None = None
) -> TrainConfig:
    """Defaults, then the profile's values, then the overrides; unknown keys are errors."""
    values: dict = {}
    if profile:
        path = profile_path(profile)
        if not path.exists():
            known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
            raise FileNotFoundError(f"No profile {profile!r} ({path}); known profiles: {known}.")
        values.update(yaml.safe_load(path.read_text()) or {})
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values.update(overrides or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown}; valid keys: {sorted(known)}.")
    return TrainConfig(**values)
