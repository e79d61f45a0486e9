"""Run configuration: one dataclass per concern, the paper's defaults written once.

As trl splits script, model and trainer arguments, a ``TrainConfig`` is made of sections:

============== ==============================================================
``run``        what is trained (method, setting, model, data, seed) and where
``policy``     the prompt and how rollouts are sampled
``optim``      learning rate, its schedule, how long to train (every method)
``grpo``       GRPO's batch layout, KL and clipping
``reward``     ``grace.rewards.RewardConfig``
``adaptation`` LoRA or full fine-tuning, dtypes, GPU switches
``baselines``  the contrastive baselines' batch and InfoNCE temperature
``logging``    logging, checkpoints, sample rationales (changes nothing trained)
``validation`` held-out retrieval scored during training (changes nothing trained)
``evaluation`` ``grace.encoder.EncoderConfig`` plus the suite and the length study
============== ==============================================================

Profiles (``grace/profiles/tiny.yaml``, ``cpu``, ``colab``, ``gpu``, ``paper``) are nested YAML that
lists only what differs from the defaults. Overrides name a field as ``section.field``
(``--set optim.learning_rate=1e-5``) or by its bare name when only one section has it
(``--set learning_rate=1e-5``). Every value is checked against the field's type: ``"1e-5"``
becomes a float, ``"abc"`` for a float is an error, never passed on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from grace.constants import MAX_NEW_TOKENS, PROFILE_DIR, known_profiles
from grace.encoder import PORTABLE, EncoderConfig
from grace.prompts import SYSTEM_PROMPT
from grace.rewards import RewardConfig
from grace.sections import ConfigError, build_section

METHODS = ("grace", "contrastive", "simcse")
SETTINGS = ("supervised", "unsupervised")
DTYPES = ("float32", "bfloat16", "float16")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(kw_only=True)
class RunConfig:
    """What is trained, from what, on which data, and where the run folder is."""

    method: str = "grace"  # grace | contrastive | simcse
    setting: str = "supervised"  # supervised (triples) | unsupervised (sentences), for grace
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    triples: str = "rotten-tomatoes"  # jsonl file, offline builder, or datasets id
    sentences: str = "lee-sentences"  # txt/jsonl file, offline builder, or datasets id
    max_examples: int | None = None  # use only the first N examples
    seed: int = 0
    output_dir: str = "runs/grace"

    def __post_init__(self) -> None:
        check(self.method in METHODS, f"Unknown method {self.method!r}; choose one of {METHODS}.")
        check(
            self.setting in SETTINGS, f"Unknown setting {self.setting!r}; choose one of {SETTINGS}."
        )
        check(self.max_examples is None or self.max_examples >= 1, "max_examples must be >= 1.")
        check(0 <= self.seed < 2**32, f"run.seed must be in [0, 2**32), got {self.seed}.")
        folder = Path(self.output_dir.strip()).expanduser()  # "~/runs/x" as a shell has it
        check(
            self.output_dir.strip() != "" and folder.name not in ("", ".."),
            f"run.output_dir must name a folder for the run, got {self.output_dir!r}.",
        )
        self.output_dir = str(folder)
        model = Path(self.model).expanduser()
        check(
            not (model.exists() and model.resolve() == folder.resolve()),
            f"run.model and run.output_dir are one folder ({self.output_dir}): the run would "
            "move its own model aside; train into another folder.",
        )

    @property
    def uses_sentences(self) -> bool:
        """SimCSE and unsupervised GRACE train on sentences; GRACE and +CL on triples."""
        return self.method == "simcse" or (
            self.method == "grace" and self.setting == "unsupervised"
        )

    @property
    def data(self) -> str:
        return self.sentences if self.uses_sentences else self.triples


@dataclass(kw_only=True)
class PolicyConfig:
    """The policy's prompt and its rollouts (the paper: 8 at temperature 1, anchors at 0.5)."""

    system_prompt: str = SYSTEM_PROMPT
    max_prompt_tokens: int = 1024  # longer texts are truncated (the paper's max prompt)
    max_completion_length: int = MAX_NEW_TOKENS
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    query_temperature: float = 0.5  # one rollout each for query and negative

    def __post_init__(self) -> None:
        check(
            self.num_generations >= 2,
            "num_generations must be at least 2 (advantages are group-relative).",
        )
        check(self.max_prompt_tokens >= 1, "max_prompt_tokens must be >= 1.")
        check(self.max_completion_length >= 1, "max_completion_length must be >= 1.")
        check(self.temperature > 0, "policy temperature must be > 0 (GRPO samples rollouts).")
        check(self.query_temperature >= 0, "query_temperature must be >= 0 (0 = greedy).")
        check(0 < self.top_p <= 1, "top_p must be in (0, 1].")


@dataclass(kw_only=True)
class OptimConfig:
    """The optimiser's rate and schedule, and how long every method trains.

    The reference (verl) keeps the rate constant; transformers' default would decay it
    linearly to zero, which makes short runs learn at half the nominal rate.
    """

    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"  # constant | constant_with_warmup | linear | cosine
    warmup_steps: int = 0
    num_train_epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    # Any other keyword of transformers' TrainingArguments or trl's GRPOConfig, passed as is:
    # fp16, tf32, optim, ddp_timeout, deepspeed, fsdp, vllm_gpu_memory_utilization, ...
    trainer_arguments: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}.")
        check(
            self.lr_scheduler_type in SCHEDULERS,
            f"Unknown lr_scheduler_type {self.lr_scheduler_type!r}; choose one of {SCHEDULERS}.",
        )
        check(self.warmup_steps >= 0, "warmup_steps must be >= 0.")
        check(self.num_train_epochs > 0, "num_train_epochs must be > 0.")
        check(
            self.max_steps == -1 or self.max_steps >= 1,
            f"max_steps must be >= 1, or -1 to train num_train_epochs; got {self.max_steps}.",
        )

    @property
    def scheduler(self) -> str:
        """A constant rate with warm-up steps is transformers' ``constant_with_warmup``."""
        if self.lr_scheduler_type == "constant" and self.warmup_steps:
            return "constant_with_warmup"
        return self.lr_scheduler_type


@dataclass(kw_only=True)
class GRPOSettings:
    """GRPO's batch layout: 64 prompts per generation batch, updates on 16 at a time."""

    prompts_per_generation: int = 64
    per_device_train_batch_size: int = 16  # completions per micro-batch
    gradient_accumulation_steps: int = 8  # micro-batches per optimizer update
    beta: float = 0.0  # KL coefficient: the paper uses none
    epsilon: float = 0.2  # PPO clip
    scale_rewards: str = "none"  # group mean only, no std division

    def __post_init__(self) -> None:
        for name in ("prompts_per_generation", "per_device_train_batch_size"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1.")
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1.")
        check(self.beta >= 0 and self.epsilon > 0, "beta must be >= 0 and epsilon > 0.")
        scales = ("none", "group", "batch")
        check(self.scale_rewards in scales, f"scale_rewards must be one of {scales}.")


@dataclass(kw_only=True)
class AdaptationConfig:
    """Which weights change and in what precision.

    ``dtype`` is the dtype the weights are loaded in; ``bf16`` turns on bf16 autocast (mixed
    precision, as in transformers' Trainer) on GPUs that compute bf16 natively (Ampere or
    newer), ``fp16`` fp16 autocast with loss scaling on older ones (a T4, where bf16 is
    emulated). Full fine-tuning keeps fp32 master weights: at the paper's lr 1e-6 most updates
    would round away in bf16 weights.
    """

    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    dtype: str = "float32"  # float32 | bfloat16 | float16 (half only with LoRA: a frozen base)
    bf16: bool = False  # bf16 mixed precision (autocast) on top of `dtype`
    fp16: bool = False  # fp16 mixed precision (autocast, loss scaling): GPUs without bf16
    gradient_checkpointing: bool = False
    # Train only the top K transformer layers (and the final norm); None trains every layer. The
    # layers below are frozen (with LoRA: adapters only in the top K), so backward stops early.
    train_top_layers: int | None = None
    use_vllm: bool = False
    vllm_mode: str = "colocate"

    def __post_init__(self) -> None:
        check(self.dtype in DTYPES, f"Unknown dtype {self.dtype!r}; choose one of {DTYPES}.")
        check(
            self.lora or self.dtype == "float32",
            "Full fine-tuning needs float32 weights (half-precision weights lose small "
            "updates); set `bf16: true` or `fp16: true` for mixed precision, or `lora: true` to "
            "load the base in half precision.",
        )
        check(
            not (self.bf16 and self.fp16),
            "adaptation.bf16 and adaptation.fp16 exclude each other: bf16 on GPUs of compute "
            "capability 8.0 or newer, fp16 on older ones (a T4).",
        )
        check(self.lora_r >= 1, "lora_r must be >= 1.")
        lora_only = [
            f"adaptation.{f.name}"
            for f in dataclasses.fields(self)
            if f.name.startswith("lora_") and getattr(self, f.name) != f.default
        ]
        check(
            self.lora or not lora_only,
            f"{', '.join(lora_only)} only apply with adaptation.lora: true (full fine-tuning "
            "has no adapters); set lora=true or leave them out.",
        )
        check(
            self.train_top_layers is None or self.train_top_layers >= 1,
            "train_top_layers must be >= 1, or null for every layer.",
        )

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


@dataclass(kw_only=True)
class BaselineConfig:
    """+CL and SimCSE: InfoNCE on direct-mode embeddings."""

    batch_size: int = 32
    temperature: float = 0.05
    simcse_dropout: float = 0.1
    # A step without generation is cheap, so the baselines may train longer (or at another
    # rate) than GRACE; None keeps the optim section's value.
    lr: float | None = None
    steps: int | None = None
    # SimCSE's curve can flatten long before +CL's does; None gives it ``steps``.
    simcse_steps: int | None = None

    def __post_init__(self) -> None:
        check(self.batch_size >= 2, "baselines.batch_size must be >= 2 (in-batch negatives).")
        check(self.lr is None or self.lr > 0, "baselines.lr must be > 0 (or null).")
        check(self.steps is None or self.steps >= 1, "baselines.steps must be >= 1 (or null).")
        check(
            self.simcse_steps is None or self.simcse_steps >= 1,
            "baselines.simcse_steps must be >= 1 (or null).",
        )
        check(self.temperature > 0, "baselines.temperature must be > 0.")
        check(0 <= self.simcse_dropout < 1, "simcse_dropout must be in [0, 1).")

    def steps_for(self, method: str) -> int | None:
        """The steps ``method`` trains (None: the optim section's)."""
        if method == "simcse" and self.simcse_steps is not None:
            return self.simcse_steps
        return self.steps


@dataclass(kw_only=True)
class LoggingConfig:
    """What a run writes besides its weights. Nothing here changes what is trained."""

    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    sample_every: int = 10  # write sample rationales to output_dir/rationales.jsonl
    report_to: list[str] | str = "none"  # "tensorboard", "wandb", ...

    def __post_init__(self) -> None:
        check(self.logging_steps >= 1 and self.save_steps >= 1, "logging/save steps must be >= 1.")


@dataclass(kw_only=True)
class ValidationConfig:
    """Scoring the live model on held-out reviews of the training movies during training
    (``grace.validation``). Nothing here changes what is trained."""

    every: int = 0  # steps between points; 0 switches validation off
    # "review-plot": held-out reviews -> their movie's plot (the two knobs below pick them);
    # or a retrieval task of ``grace.data.TASKS`` (e.g. "lee-topic"), its held-out queries.
    task: str = "review-plot"
    movies: int | None = 24  # None: every training movie with a held-out review (102)
    reviews_per_movie: int = 2  # at most this many held-out reviews of each movie
    # 0: greedy rationales. k >= 1: each text embedded as the mean of k rationales sampled at
    # the policy's temperature, as the paper evaluates (on lee-topic the base's averaged draws
    # are a stronger reference than its greedy one: book/study.md, headroom).
    draws: int = 0

    def __post_init__(self) -> None:
        from grace.data import TASKS

        retrieval = ["review-plot", *(n for n in TASKS if n not in ("review-plot", "sentiment"))]
        check(
            self.task in retrieval,
            f"validation.task must be a retrieval task, one of {retrieval}; got {self.task!r}.",
        )
        check(self.every >= 0, "validation.every must be >= 0 (0 = off).")
        check(self.movies is None or self.movies >= 2, "validation needs >= 2 movies.")
        check(self.reviews_per_movie >= 1, "validation.reviews_per_movie must be >= 1.")
        check(self.draws >= 0, "validation.draws must be >= 0 (0 = greedy rationales).")


@dataclass(kw_only=True)
class EvaluationConfig(EncoderConfig):
    """How trained models are scored: the encoder's settings plus the suite.

    ``num_rationales`` is the number of draws per text for rationale rows (mean ± std over
    draws); ``study_lengths`` are the rationale lengths of the length curve (0 = direct).
    """

    suite: str = "offline"
    study_lengths: list[int] = field(default_factory=lambda: [0, 16, 32, 64, 128])

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as error:
            raise ConfigError(str(error)) from error
        check(all(n >= 0 for n in self.study_lengths), "study_lengths must be >= 0.")

    def encoder_settings(self, **changes) -> dict:
        """The ``EncoderConfig`` fields, for ``GraceEncoder``/``GraceMTEBModel`` keywords."""
        names = {f.name for f in dataclasses.fields(EncoderConfig)}
        return {k: v for k, v in asdict(self).items() if k in names} | changes

    def machine_settings(self, **changes) -> dict:
        """The encoder settings a model folder does not carry (batch size, int8, the rationale
        cache, the single pass): all a trained folder takes beside its ``encoder_config.json``."""
        settings = self.encoder_settings()
        return {k: v for k, v in settings.items() if k not in PORTABLE} | changes


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "policy": PolicyConfig,
    "optim": OptimConfig,
    "grpo": GRPOSettings,
    "reward": RewardConfig,
    "adaptation": AdaptationConfig,
    "baselines": BaselineConfig,
    "logging": LoggingConfig,
    "validation": ValidationConfig,
    "evaluation": EvaluationConfig,
}
# Sections that never change the trained weights: excluded from a run's identity.
NOT_TRAINING = ("logging", "validation", "evaluation")
# Sections (or ``section.field``s) a method never reads: a change there must not retrain that
# method's runs.
UNREAD_BY = {
    "grace": ("baselines",),
    "contrastive": ("grpo", "reward", "baselines.simcse_steps", "baselines.simcse_dropout"),
    "simcse": ("grpo", "reward"),
}


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a run needs, by concern. Defaults follow the paper's reference recipe."""

    run: RunConfig = field(default_factory=RunConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    reward: RewardConfig = field(default_factory=RewardConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        completions = self.grpo.prompts_per_generation * self.policy.num_generations
        check(
            self.run.method != "grace" or completions % self.grpo.per_device_train_batch_size == 0,
            f"A generation batch of {self.grpo.prompts_per_generation} prompts x "
            f"{self.policy.num_generations} rollouts = {completions} completions must split into "
            f"micro-batches of grpo.per_device_train_batch_size="
            f"{self.grpo.per_device_train_batch_size}.",
        )

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def training_settings(self) -> dict:
        """What makes two runs train the same weights: all but logging, evaluation, folder and
        the sections this run's method never reads."""
        left_out = {*NOT_TRAINING, *UNREAD_BY[self.run.method], "run.output_dir"}
        if not self.optim.trainer_arguments:  # added later: runs recorded before keep their hash
            left_out.add("optim.trainer_arguments")
        return {
            section: {k: v for k, v in values.items() if f"{section}.{k}" not in left_out}
            for section, values in self.to_dict().items()
            if section not in left_out
        }

    def settings_hash(self) -> str:
        """A short hash of ``training_settings()``: a run folder's identity."""
        text = json.dumps(self.training_settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_changes(self, changes: dict | list[str]) -> TrainConfig:
        """A copy with overrides applied (same keys as ``--set``), checked like a profile."""
        if isinstance(changes, list):
            changes = parse_overrides(changes)
        return from_dict(merge(self.to_dict(), nest(changes)))

    def training_rows(self, tokenizer) -> list[dict]:
        """The run's training rows (``grace.data.training_rows`` with this run's data)."""
        from grace.data import training_rows

        return training_rows(
            tokenizer,
            self.run.data,
            sentences=self.run.uses_sentences,
            max_examples=self.run.max_examples,
            max_tokens=self.policy.max_prompt_tokens,
        )

    def build_arguments(self, cls: type, arguments: dict):
        """``cls(**arguments)`` (``TrainingArguments`` or trl's ``GRPOConfig``) with
        ``optim.trainer_arguments`` added; what grace sets is set only by its own settings, and
        a keyword ``cls`` refuses is one line."""
        extra = self.optim.trainer_arguments
        clash = sorted(set(extra) & set(arguments))
        check(
            not clash,
            f"optim.trainer_arguments {clash} are set from grace's own settings; use those.",
        )
        try:
            return cls(**arguments, **extra)
        except (TypeError, ValueError) as error:
            where = f"optim.trainer_arguments {extra}" if extra else cls.__name__
            raise ConfigError(f"{where}: {error}") from None

    def trainer_arguments(self) -> dict:
        """The ``TrainingArguments`` every method shares (trl's configs extend them)."""
        import torch

        return dict(
            output_dir=self.run.output_dir,
            seed=self.run.seed,
            learning_rate=self.optim.learning_rate,
            lr_scheduler_type=self.optim.scheduler,
            warmup_steps=self.optim.warmup_steps,
            num_train_epochs=self.optim.num_train_epochs,
            max_steps=self.optim.max_steps,
            logging_steps=self.logging.logging_steps,
            save_steps=self.logging.save_steps,
            save_total_limit=self.logging.save_total_limit,
            report_to=self.logging.report_to,
            bf16=self.adaptation.bf16,
            fp16=self.adaptation.fp16,
            activation_checkpointing=self.adaptation.gradient_checkpointing,
            remove_unused_columns=False,  # the collators and the reward read our own columns
            dataloader_pin_memory=torch.cuda.is_available(),
        )

    def peft_config(self, model=None):
        """peft's LoraConfig when ``adaptation.lora`` is on, else None (full fine-tuning). With
        ``model``, listed target modules must name modules it has (peft's own error is a long
        traceback)."""
        adaptation = self.adaptation
        if not adaptation.lora:
            return None
        from peft import LoraConfig

        targets = adaptation.lora_target_modules
        if model is not None and isinstance(targets, list):
            import torch

            linear = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear)
                }
            )
            missing = sorted(set(targets) - set(linear))
            check(
                not missing,
                f"adaptation.lora_target_modules {missing} name no linear layer of the model; "
                f"its linear layers are {linear} (or use 'all-linear').",
            )

        return LoraConfig(
            r=adaptation.lora_r,
            lora_alpha=adaptation.lora_alpha,
            lora_dropout=adaptation.lora_dropout,
            target_modules=adaptation.lora_target_modules,
            task_type="CAUSAL_LM",
        )


def from_dict(values: dict) -> TrainConfig:
    """A TrainConfig from nested ``{section: {field: value}}``; unknown sections are errors."""
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"Unknown configuration sections {unknown}; valid: {list(SECTIONS)}.")
    return TrainConfig(
        **{name: build_section(cls, values.get(name) or {}, name) for name, cls in SECTIONS.items()}
    )


def owners(name: str) -> list[str]:
    """The sections that have a field called ``name``."""
    return [s for s, cls in SECTIONS.items() if name in {f.name for f in dataclasses.fields(cls)}]


def full_key(key: str) -> tuple[str, str]:
    """``"optim.learning_rate"`` or a bare unique ``"learning_rate"`` -> (section, field)."""
    section, dot, name = key.partition(".")
    if dot:
        if section not in SECTIONS:
            raise ConfigError(f"Unknown configuration section {section!r} in {key!r}.")
        return section, name
    if key in SECTIONS:
        fields = [f.name for f in dataclasses.fields(SECTIONS[key])]
        raise ConfigError(
            f"{key!r} is a section, not a setting: give one of its settings as "
            f"{key}.NAME=VALUE, NAME one of {fields}."
        )
    found = owners(key)
    if not found:
        every = sorted({f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)})
        raise ConfigError(f"Unknown configuration keys [{key!r}]; valid keys: {every}.")
    if len(found) > 1:
        raise ConfigError(f"{key!r} is ambiguous: write one of {[f'{s}.{key}' for s in found]}.")
    return found[0], key


def nest(flat: dict) -> dict:
    """Override keys (dotted or bare) -> ``{section: {field: value}}``; nested dicts pass."""
    nested: dict = {}
    for key, value in flat.items():
        if key in SECTIONS and isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
            continue
        section, name = full_key(key)
        nested.setdefault(section, {})[name] = value
    return nested


def merge(base: dict, changes: dict) -> dict:
    """``base`` with each section's fields updated from ``changes``."""
    merged = dict(base)
    for name, fields in changes.items():
        current = merged.get(name) or {}
        if not isinstance(current, dict) or not isinstance(fields, dict):
            raise ConfigError(f"Section {name!r} must be a mapping of settings.")
        merged[name] = {**current, **fields}
    return merged


def parse_overrides(pairs: list[str]) -> dict:
    """``["optim.learning_rate=1e-5", "lora=true"]`` -> a dict. Values are parsed as YAML,
    except for text settings, which are taken as written (a ``#`` in a system prompt or a
    folder name is not a comment there); ``null`` still clears an optional one."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"Expected key=value, got {pair!r}.")
        hint = field_type(key)
        if hint is str or (hint == str | None and value not in ("null", "~")):
            values[key] = value
            continue
        try:
            values[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise ConfigError(f"--set {key}: {value!r} is not a YAML value ({problem}).") from None
    return values


def field_type(key: str):
    """The type hint of a setting named as ``--set`` names it (dotted or bare)."""
    section, name = full_key(key)
    return typing.get_type_hints(SECTIONS[section]).get(name)


def profile_path(name_or_path: str) -> Path:
    """A profile name (``cpu``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return PROFILE_DIR / f"{name_or_path}.yaml"


def read_profile(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
    """A profile's sections; ``extends: other`` starts from another profile's values."""
    path = profile_path(name_or_path)
    if not path.exists():
        raise ConfigError(
            f"No profile {name_or_path!r} ({path}); known profiles: {known_profiles()}."
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a readable YAML profile ({error}).") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile is a mapping of sections to settings.")
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str) or base in seen or base == name_or_path:
        raise ConfigError(f"{path}: `extends` must name another profile, without a loop.")
    beside = path.parent / base  # a relative YAML path is read beside the profile naming it
    if Path(base).suffix in (".yaml", ".yml") and not Path(base).is_absolute() and beside.exists():
        base = str(beside)
    return merge(read_profile(base, (*seen, name_or_path)), values)


def load_config(
    profile: str | None = None, overrides: list[str] | dict | None = None
) -> TrainConfig:
    """Defaults, then the profile's values, then the overrides; unknown keys are errors."""
    values = read_profile(profile) if profile else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return from_dict(merge(values, nest(overrides or {})))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2))


def steps_label(optim: OptimConfig) -> str:
    return str(optim.max_steps) if optim.max_steps > 0 else f"{optim.num_train_epochs:g} epochs"


def schedule(config: TrainConfig, method: str) -> tuple[str, float]:
    """The steps (or epochs) and learning rate ``method`` trains with: the baselines may set
    their own, GRACE takes the optim section's."""
    if method == "grace":
        return steps_label(config.optim), config.optim.learning_rate
    baselines = config.baselines
    steps = baselines.steps_for(method)
    return str(steps) if steps else steps_label(config.optim), (
        baselines.lr or config.optim.learning_rate
    )


def baseline_label(config: TrainConfig) -> str:
    """'+CL steps[ / SimCSE steps], rate' for the settings table."""
    (plus_cl, rate), (simcse, _) = (schedule(config, m) for m in ("contrastive", "simcse"))
    steps = plus_cl if simcse == plus_cl else f"{plus_cl} / {simcse}"
    return f"{steps}, {rate:g}"


# Rows of the settings table in the book's method chapter: (label, how to read it).
SETTINGS_ROWS = {
    "rollouts per prompt": lambda c: c.policy.num_generations,
    "prompts per generation batch": lambda c: c.grpo.prompts_per_generation,
    "learning rate, schedule": lambda c: f"{c.optim.learning_rate:g}, {c.optim.scheduler}",
    "max prompt / rationale tokens": lambda c: (
        f"{c.policy.max_prompt_tokens} / {c.policy.max_completion_length}"
    ),
    "steps": lambda c: steps_label(c.optim),
    "+CL / SimCSE steps, learning rate": baseline_label,
    "length penalty": lambda c: (
        "off" if c.reward.length_penalty is None else (f"{c.reward.length_penalty:g}")
    ),
    "reward": lambda c: c.reward.variant,
    "anchors' rationales written by": lambda c: c.reward.anchors,
    "KL coefficient, advantage scaling": lambda c: f"{c.grpo.beta:g}, {c.grpo.scale_rewards}",
    "weights trained": lambda c: "LoRA" if c.adaptation.lora else "all",
    "precision": lambda c: (
        c.adaptation.dtype
        + (" + bf16 autocast" if c.adaptation.bf16 else "")
        + (" + fp16 autocast" if c.adaptation.fp16 else "")
    ),
}


def settings_table(profiles: list[str] | None = None) -> str:
    """A markdown table of the settings that matter, the defaults (the paper's) beside each
    profile's; the method chapter carries it (a test keeps the two equal)."""
    names = profiles or known_profiles()
    columns = [TrainConfig(), *(load_config(name) for name in names)]
    header = ["setting", "defaults (the paper's)", *(f"`{name}`" for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, read in SETTINGS_ROWS.items():
        lines.append(f"| {label} | " + " | ".join(str(read(c)) for c in columns) + " |")
    return "\n".join(lines)
