import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from grace.encoder import GraceEncoder
from grace.export import export_sentence_transformer
from grace.models import build_tiny_random, load_model, merged

TEXTS = [
    "A quiet film about a lighthouse keeper.",
    "Two friends cross the desert on foot, and only one of them wants to.",
    "",
    "Short.",
]


def test_a_direct_mode_export_loads_in_sentence_transformers_with_the_same_embeddings(tmp_path):
    # A model of its own: transformers' save_pretrained writes `architectures` and `dtype`
    # into the saved model's config, which the shared fixture should not carry.
    encoder = GraceEncoder(*build_tiny_random(), mode="direct", system_prompt="Embed this text.")
    folder = export_sentence_transformer(encoder, tmp_path / "st")
    with pytest.warns(UserWarning, match="empty or whitespace"):
        expected = encoder.encode(TEXTS)
    loaded = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    got = loaded.encode(TEXTS, batch_size=3)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    # The folder is still a grace model folder: the encoder reads its settings back.
    again = GraceEncoder.from_pretrained(str(folder), device="cpu").encode(TEXTS[:2])
    assert np.abs(again - expected[:2]).max() < 1e-5
    with pytest.raises(ValueError, match="own system prompt"):
        loaded.encode(TEXTS[:1], prompt="query: ")


def test_a_lora_run_loaded_on_a_bf16_base_exports_merged_in_fp32(tmp_path):
    """On a bf16 GPU a LoRA run loads as a bf16 base with fp32 adapters beside it; the export
    is a plain fp32 model folder, embedding as the run merged in fp32 does."""
    import torch

    from grace.cli import main

    run = tmp_path / "run"
    lora = ["lora=true", "adaptation.dtype=bfloat16", "baselines.lr=5e-2"]
    train = ["train", "--config", "tiny", "--method", "contrastive", "--set", f"output_dir={run}"]
    assert main([*train, *(x for setting in lora for x in ("--set", setting))]) == 0
    on_bf16 = GraceEncoder.from_pretrained(str(run), device="cpu", dtype=torch.bfloat16)
    folder = export_sentence_transformer(on_bf16, tmp_path / "st", source=str(run))
    assert not (folder / "adapter_config.json").exists()
    loaded = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    assert loaded[0].model.dtype == torch.float32
    got = loaded.encode(TEXTS[:2])
    model, tokenizer = load_model(str(run), device="cpu", dtype=torch.bfloat16)
    expected = GraceEncoder(merged(model), tokenizer, on_bf16.config).encode(TEXTS[:2])
    assert np.abs(got - expected).max() < 1e-5
    # Against the base read in fp32, only the base's rounding to bf16 differs.
    in_fp32 = GraceEncoder.from_pretrained(str(run), device="cpu").encode(TEXTS[:2])
    assert np.abs(got - in_fp32).max() < 1e-3


def test_only_direct_mode_exports(tiny, tmp_path):
    with pytest.raises(ValueError, match="Only direct-mode encoders export"):
        export_sentence_transformer(GraceEncoder(*tiny), tmp_path / "st")


def test_grace_export_writes_a_folder_and_refuses_to_overwrite(tmp_path, capsys):
    from grace.cli import main

    folder = tmp_path / "st"
    assert main(["export", "--model", "tiny-random", "--output", str(folder)]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    loaded = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    direct = GraceEncoder.from_pretrained("tiny-random", device="cpu", mode="direct")
    assert np.abs(loaded.encode(TEXTS[:2]) - direct.encode(TEXTS[:2])).max() < 1e-5
    assert main(["export", "--model", "tiny-random", "--output", str(folder)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["export", "--model", str(folder), "--output", str(folder / "x")]) == 2


def test_an_exported_run_carries_a_model_card_of_its_training(tmp_path, capsys):
    from grace.cli import main
    from grace.runs import saved_config

    run = tmp_path / "run"
    train = ["train", "--config", "tiny", "--method", "contrastive", "--set", f"output_dir={run}"]
    assert main([*train, "--set", "validation.every=1"]) == 0
    assert main(["export", "--model", str(run), "--output", str(tmp_path / "st")]) == 0
    card = (tmp_path / "st" / "README.md").read_text()
    config = saved_config(run)
    assert f"base model: `{config.run.model}`" in card and "+CL (contrastive fine-tuning)" in card
    steps = config.baselines.steps_for("contrastive") or config.optim.max_steps
    assert f"{steps} steps" in card and "paired change" in card
    assert repr(config.policy.system_prompt) in card and "trust_remote_code=True" in card
    assert main(["export", "--model", "tiny-random", "--output", str(tmp_path / "plain")]) == 0
    assert "## Training" not in (tmp_path / "plain" / "README.md").read_text()  # no run folder


def test_export_pushes_to_the_hub_only_when_asked_and_online(tmp_path, capsys, monkeypatch):
    from grace.cli import main

    pushed = []
    monkeypatch.setattr(
        SentenceTransformer,
        "push_to_hub",
        lambda self, repo_id, **kw: pushed.append((repo_id, kw)) or f"https://hub/{repo_id}",
    )
    argv = ["export", "--model", "tiny-random", "--push-to-hub", "me/tiny"]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 2  # HF_HUB_OFFLINE=1 here
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err and not (tmp_path / "a").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main([*argv, "--output", str(tmp_path / "b")]) == 0
    assert pushed == [("me/tiny", {"local_model_path": str(tmp_path / "b"), "exist_ok": True})]
    assert "Uploaded to https://hub/me/tiny" in capsys.readouterr().out
