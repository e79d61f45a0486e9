import pytest

from grace.config import PROFILE_DIR, TrainConfig, load_config, parse_overrides
from grace.train import grpo_arguments


def test_defaults_are_the_papers():
    config = TrainConfig()
    assert (config.num_generations, config.prompts_per_generation) == (8, 64)
    assert (config.learning_rate, config.beta, config.epsilon) == (1e-6, 0.0, 0.2)
    assert (config.tau, config.cluster_weight, config.cross_weight) == (0.1, 0.2, 0.2)
    assert (config.temperature, config.query_temperature) == (1.0, 0.5)
    assert config.scale_rewards == "none" and config.length_penalty == -1.0


def test_overrides_are_parsed_as_yaml():
    assert parse_overrides(["lora=true", "learning_rate=1e-5", "model=a/b"]) == {
        "lora": True,
        "learning_rate": 1e-5,
        "model": "a/b",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lora"])


def test_profile_then_overrides():
    config = load_config("tiny", ["max_steps=7", "method=simcse"])
    assert config.model == "tiny-random" and config.max_steps == 7 and config.method == "simcse"


def test_unknown_key_and_profile_are_reported():
    with pytest.raises(ValueError, match=r"Unknown configuration keys \['learnig_rate'\]"):
        load_config("tiny", ["learnig_rate=1"])
    with pytest.raises(FileNotFoundError, match="known profiles"):
        load_config("no-such-profile")
    with pytest.raises(ValueError, match="Unknown method"):
        load_config(None, {"method": "ppo"})


@pytest.mark.parametrize("profile", sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
def test_every_profile_builds_a_trainer_config(profile, tmp_path):
    # GPU-only switches (bf16, vLLM) cannot be honoured on this CPU machine; the rest of the
    # profile must turn into a valid trl configuration.
    config = load_config(profile, [f"output_dir={tmp_path}", "bf16=false", "use_vllm=false"])
    args = grpo_arguments(config)
    assert args.generation_batch_size == config.prompts_per_generation * config.num_generations
    assert args.generation_batch_size % config.num_generations == 0
    assert args.beta == config.beta and args.scale_rewards == "none"
    assert {"tiny", "cpu", "colab", "paper"} <= {p.stem for p in PROFILE_DIR.glob("*.yaml")}


def test_paper_profile_is_the_reference_recipe():
    config = load_config("paper")
    assert config.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (config.max_prompt_tokens, config.max_completion_length) == (1024, 2048)
    assert config.bf16 and config.gradient_checkpointing and config.use_vllm
    # 4 GPUs x 16 completions x 2 accumulation steps = 128 completions = 16 prompts per update.
    assert 4 * config.per_device_train_batch_size * config.gradient_accumulation_steps == 16 * 8
