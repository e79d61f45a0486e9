import dataclasses
import sys
import types

import pytest

from grace.config import (
    SECTIONS,
    ConfigError,
    TrainConfig,
    known_profiles,
    load_config,
    parse_overrides,
)
from grace.train import grpo_arguments


def test_defaults_are_the_papers():
    config = TrainConfig()
    policy, grpo, reward = config.policy, config.grpo, config.reward
    assert (policy.num_generations, grpo.prompts_per_generation) == (8, 64)
    assert (config.optim.learning_rate, grpo.beta, grpo.epsilon) == (1e-6, 0.0, 0.2)
    assert (reward.tau, reward.cluster_weight, reward.cross_weight) == (0.1, 0.2, 0.2)
    assert (policy.temperature, policy.query_temperature) == (1.0, 0.5)
    assert grpo.scale_rewards == "none" and reward.length_penalty == -1.0
    # The reference keeps the learning rate constant (verl: warmup_style constant).
    assert config.optim.lr_scheduler_type == "constant" and config.optim.warmup_steps == 0
    assert policy.max_completion_length == config.evaluation.max_new_tokens == 2048


def test_every_section_is_built_by_keyword_with_defaults():
    # Positional construction would swap values silently if fields were reordered.
    from grace.encoder import EncoderConfig
    from grace.rationale import SamplingConfig

    for cls in [*SECTIONS.values(), TrainConfig, SamplingConfig, EncoderConfig]:
        assert all(
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            for f in dataclasses.fields(cls)
        ), cls
        first = dataclasses.fields(cls)[0]
        with pytest.raises(TypeError, match="positional"):
            cls(getattr(cls(), first.name))  # keyword-only: a value needs its name


def test_overrides_are_parsed_as_yaml():
    assert parse_overrides(["lora=true", "optim.learning_rate=1e-5", "model=a/b"]) == {
        "lora": True,
        "optim.learning_rate": "1e-5",  # YAML reads 1e-5 as a string; the field's type decides
        "model": "a/b",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lora"])


def test_profile_then_overrides_dotted_or_bare():
    config = load_config("tiny", ["max_steps=7", "run.method=simcse", "learning_rate=1e-5"])
    assert config.run.model == "tiny-random" and config.optim.max_steps == 7
    assert config.run.method == "simcse"
    assert config.optim.learning_rate == 1e-5 and isinstance(config.optim.learning_rate, float)


def test_baselines_train_their_own_steps_and_rate_where_set():
    from grace.baselines import contrastive_arguments

    shared = load_config("tiny", ["method=contrastive", "max_steps=3", "learning_rate=1e-4"])
    arguments = contrastive_arguments(shared)
    assert (arguments.max_steps, arguments.learning_rate) == (3, 1e-4)
    own = contrastive_arguments(shared.with_changes(["baselines.steps=9", "baselines.lr=2e-5"]))
    assert (own.max_steps, own.learning_rate) == (9, 2e-5)
    assert shared.with_changes(["baselines.steps=9"]).settings_hash() != shared.settings_hash()


def test_simcse_steps_change_simcse_alone():
    from grace.baselines import contrastive_arguments

    both = ["max_steps=3", "baselines.steps=9", "baselines.simcse_steps=4"]
    plus_cl = load_config("tiny", ["method=contrastive", *both])
    simcse = load_config("tiny", ["method=simcse", *both])
    assert contrastive_arguments(plus_cl).max_steps == 9
    assert contrastive_arguments(simcse).max_steps == 4
    fewer = ["baselines.simcse_steps=5", "baselines.simcse_dropout=0.2"]
    assert plus_cl.with_changes(fewer).settings_hash() == plus_cl.settings_hash()
    assert simcse.with_changes(fewer).settings_hash() != simcse.settings_hash()
    with pytest.raises(ConfigError, match="simcse_steps must be >= 1"):
        load_config("tiny", ["baselines.simcse_steps=0"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learnig_rate=1", r"Unknown configuration keys \['learnig_rate'\]"),
        ("optim.learnig_rate=1", r"Unknown configuration keys \['learnig_rate'\] in optim"),
        ("optimiser.learning_rate=1", "Unknown configuration section 'optimiser'"),
        ("optim=3", r"'optim' is a section, not a setting: .* optim.NAME=VALUE"),
        ("temperature=0.7", "ambiguous.*policy.temperature"),
        ("learning_rate=abc", "optim.learning_rate: expected float, got 'abc'"),
        ("learning_rate=-1", "learning_rate must be > 0"),
        ("num_generations=abc", "policy.num_generations: expected int"),
        ("num_generations=2.5", "policy.num_generations: expected int"),
        ("num_generations=1", "at least 2"),
        ("max_steps=0", "max_steps must be >= 1, or -1"),
        ("baselines.steps=0", "baselines.steps must be >= 1"),
        ("lora=maybe", "adaptation.lora: expected bool"),
        ("method=ppo", "Unknown method 'ppo'"),
        ("lr_scheduler_type=exotic", "Unknown lr_scheduler_type"),
        ("tau=0", "tau must be > 0"),
        ("evaluation.num_rationales=0", "num_rationales must be at least 1"),
        ("adaptation.dtype=bfloat16", "Full fine-tuning needs float32 weights"),
        ("adaptation.dtype=float16", "Full fine-tuning needs float32 weights"),
        ("adaptation.dtype=float64", "Unknown dtype 'float64'"),
        ("lora_target_modules=[q_proj]", r"adaptation.lora_target_modules only apply with"),
        ("study_lengths=5", "expected a list"),
    ],
)
def test_bad_settings_are_refused_with_their_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_unknown_profile_and_bad_profile_file(tmp_path):
    with pytest.raises(ConfigError, match="known profiles"):
        load_config("no-such-profile")
    flat = tmp_path / "flat.yaml"
    flat.write_text("learning_rate: 1.0e-5\n")  # a field where a section is expected
    with pytest.raises(ConfigError, match="Unknown configuration sections"):
        load_config(str(flat))


def test_dtype_is_explicit():
    import torch

    assert load_config("tiny").adaptation.torch_dtype == torch.float32
    lora_bf16 = load_config("tiny", ["lora=true", "adaptation.dtype=bfloat16"])
    assert lora_bf16.adaptation.torch_dtype == torch.bfloat16
    # bf16 in the paper profile is mixed precision over fp32 weights, not bf16 weights.
    paper = load_config("paper")
    assert paper.adaptation.bf16 and paper.adaptation.torch_dtype == torch.float32


def test_settings_hash_ignores_logging_evaluation_and_folder():
    base = load_config("tiny")
    same = base.with_changes(
        {"run.output_dir": "elsewhere", "evaluation.num_rationales": 5, "save_steps": 9}
    )
    assert same.settings_hash() == base.settings_hash()
    assert base.with_changes(["run.seed=3"]).settings_hash() != base.settings_hash()
    assert base.with_changes(["learning_rate=5e-2"]).settings_hash() != base.settings_hash()
    # A section the method never reads does not retrain it; one it reads does.
    assert base.with_changes(["baselines.steps=9"]).settings_hash() == base.settings_hash()
    baseline = base.with_changes(["run.method=contrastive"])
    unread = baseline.with_changes(["reward.variant=contrastive", "grpo.beta=0.1"])
    assert unread.settings_hash() == baseline.settings_hash()
    assert baseline.with_changes(["baselines.lr=1e-5"]).settings_hash() != baseline.settings_hash()


def test_constant_learning_rate_reaches_the_trainer():
    args = grpo_arguments(load_config("tiny", ["warmup_steps=2"]))
    assert args.lr_scheduler_type == "constant_with_warmup" and args.warmup_steps == 2
    assert grpo_arguments(load_config("tiny")).lr_scheduler_type == "constant"


@pytest.mark.parametrize("profile", known_profiles())
def test_every_profile_builds_a_trainer_config(profile, tmp_path):
    # GPU-only switches (bf16, fp16, vLLM) cannot be honoured on this CPU machine; the rest of the
    # profile must turn into a valid trl configuration.
    cpu = ["bf16=false", "fp16=false", "use_vllm=false"]
    config = load_config(profile, [f"output_dir={tmp_path}", *cpu])
    args = grpo_arguments(config)
    n = config.policy.num_generations
    assert args.generation_batch_size == config.grpo.prompts_per_generation * n
    assert args.beta == config.grpo.beta and args.scale_rewards == "none"
    assert {"tiny", "cpu", "colab", "paper"} <= set(known_profiles())


def test_paper_profile_is_the_reference_recipe():
    config = load_config("paper")
    assert config.run.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (config.policy.max_prompt_tokens, config.policy.max_completion_length) == (1024, 2048)
    adaptation = config.adaptation
    assert adaptation.bf16 and adaptation.gradient_checkpointing and adaptation.use_vllm
    # 4 GPUs x 16 completions x 2 accumulation steps = 128 completions = 16 prompts per update.
    grpo = config.grpo
    assert 4 * grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps == 16 * 8


# The precision each profile trains in: (weights dtype, bf16 autocast, fp16 autocast).
PRECISION = {
    "tiny": ("float32", False, False),
    "cpu": ("float32", False, False),
    "cpu-long": ("float32", False, False),
    "colab": ("float16", False, True),  # T4: no native bf16; LoRA on a frozen fp16 base
    "paper": ("float32", True, False),  # full fine-tuning: fp32 master weights, bf16 autocast
    "gpu": ("bfloat16", True, False),  # LoRA: a frozen bf16 base, fp32 adapters
}


@pytest.mark.parametrize("profile", known_profiles())
def test_each_profile_states_its_precision(profile):
    adaptation = load_config(profile).adaptation
    assert (adaptation.dtype, adaptation.bf16, adaptation.fp16) == PRECISION[profile]
    assert adaptation.lora or adaptation.dtype == "float32"


def test_full_fine_tuning_trains_fp32_weights_and_lora_fp32_adapters(tmp_path):
    import torch

    from grace.train import build_grpo_trainer

    full = build_grpo_trainer(load_config("tiny", [f"output_dir={tmp_path}"]))
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}
    lora = build_grpo_trainer(
        load_config("tiny", [f"output_dir={tmp_path}", "lora=true", "adaptation.dtype=bfloat16"])
    )
    trained = {p.dtype for p in lora.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in lora.model.parameters() if not p.requires_grad}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}


def test_a_profile_extends_another_and_changes_only_what_it_names(tmp_path):
    long, cpu = load_config("cpu-long"), load_config("cpu")
    assert long.optim.max_steps == 400 and long.validation.movies is None
    assert (long.policy, long.reward, long.grpo) == (cpu.policy, cpu.reward, cpu.grpo)
    looped = tmp_path / "loop.yaml"
    looped.write_text(f"extends: {looped}\n")
    with pytest.raises(ConfigError, match="without a loop"):
        load_config(str(looped))


def test_a_notebook_on_an_offline_profile_switches_the_imported_hub_off(tmp_path, monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import (before any notebook cell runs)."""
    import huggingface_hub.constants as hub

    from grace.book.notebooks import setup_notebook

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    setup_notebook("tiny", str(tmp_path))
    assert hub.is_offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the environment still decides where it speaks
    setup_notebook("tiny", str(tmp_path))
    assert not hub.is_offline_mode()


def test_text_settings_are_taken_as_written_and_bad_yaml_is_one_line():
    config = load_config(
        "tiny",
        ["policy.system_prompt=Answer in steps #1 and #2: think", "output_dir=runs/a #b"],
    )
    assert config.policy.system_prompt == "Answer in steps #1 and #2: think"
    assert config.run.output_dir == "runs/a #b"
    assert load_config("tiny", ["run.max_examples=null"]).run.max_examples is None
    with pytest.raises(ConfigError, match=r"--set learning_rate: '\[x' is not a YAML value"):
        load_config("tiny", ["learning_rate=[x"])


def test_a_relative_extends_is_read_beside_the_profile(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "base.yaml").write_text("extends: tiny\noptim:\n  learning_rate: 0.002\n")
    (folder / "child.yaml").write_text("extends: base.yaml\noptim:\n  max_steps: 3\n")
    monkeypatch.chdir(tmp_path)  # not the profiles' folder
    config = load_config(str(folder / "child.yaml"))
    assert config.optim.learning_rate == 0.002 and config.optim.max_steps == 3


def test_trainer_arguments_pass_any_other_trl_keyword_and_refuse_ours():
    from grace.baselines import contrastive_arguments

    config = load_config("tiny", ["trainer_arguments={optim: adafactor, ddp_timeout: 60}"])
    arguments = grpo_arguments(config)
    assert arguments.optim == "adafactor" and arguments.ddp_timeout == 60
    assert contrastive_arguments(config).optim == "adafactor"
    assert config.settings_hash() != load_config("tiny").settings_hash()  # it may change weights
    # Left out of a run's identity while empty, so runs recorded before it keep theirs.
    assert "trainer_arguments" not in load_config("tiny").training_settings()["optim"]
    with pytest.raises(ConfigError, match=r"\['learning_rate'\] are set from grace's own"):
        grpo_arguments(load_config("tiny", ["trainer_arguments={learning_rate: 1}"]))
    with pytest.raises(ConfigError, match="unexpected keyword argument 'nosuch'"):
        grpo_arguments(load_config("tiny", ["trainer_arguments={nosuch: 1}"]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config("tiny", ["trainer_arguments=[1]"])


def test_a_notebook_keeps_each_profiles_runs_apart(tmp_path, monkeypatch, capsys):
    """A parameters cell whose profile was changed but whose output_dir was left at another
    profile's default gets the new profile's folder; any other folder is kept."""
    from grace.book.notebooks import output_for, setup_notebook

    assert output_for("cpu", "runs/tiny") == "runs/cpu"
    assert output_for("tiny", "runs/tiny") == "runs/tiny"
    assert output_for("cpu", "runs/mine") == "runs/mine"
    assert output_for("cpu", str(tmp_path / "tiny")) == str(tmp_path / "tiny")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    setup_notebook("tiny", str(tmp_path / "out"))
    assert "Colab deletes this folder" in capsys.readouterr().out
