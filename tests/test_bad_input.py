"""The probes of issues 15 and 24: every bad input gets a one-line error (exit status 2)
before any model loads, or the behaviour the issue asked for. One row or test per probe, so
none comes back."""

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import grace.baselines
import grace.encoder
import grace.train
from grace.book.reproduce import ReproduceError, notebooks
from grace.cli import main
from grace.config import ConfigError
from grace.data import DataError, read_texts, read_triples
from grace.encoder import CacheError, EncoderConfig, GraceEncoder
from grace.evaluation import HubRequired, resolve_tasks


@pytest.fixture
def files(tmp_path):
    """Paths the probes name: a good input, a folder, a plain file, a non-UTF-8 file."""
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    names = {"texts": "texts.txt", "folder": "folder", "file": "file", "latin1": "latin1.txt"}
    return {key: str(tmp_path / name) for key, name in names.items()}


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model starts loading: the probes must stop before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(grace.encoder, "load_model", refuse)
    monkeypatch.setattr(grace.train, "load_model", refuse)
    monkeypatch.setattr(grace.baselines, "load_model", refuse)


EMBED = ["embed", "--model", "tiny-random", "--input", "{texts}", "--output", "{out}"]

PROBES = [
    (EMBED + ["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1, got 0"),
    (EMBED + ["--max-new-tokens", "-5"], "--max-new-tokens: must be at least 1, got -5"),
    (EMBED + ["--max-new-tokens", "ten"], "--max-new-tokens: expected a whole number"),
    (EMBED + ["--num-rationales", "0"], "--num-rationales: must be at least 1"),
    (EMBED + ["--batch-size", "0"], "--batch-size: must be at least 1"),
    (EMBED + ["--temperature", "-1"], "--temperature: must be >= 0 (0 = greedy)"),
    (EMBED + ["--temperature", "nan"], "--temperature: must be >= 0"),
    (EMBED + ["--seed", "-1"], "--seed: must be 0 or more"),
    (EMBED + ["--device", "gpu"], "--device: unknown device 'gpu'"),
    (EMBED + ["--device", "cuda:99"], "--device: cuda:99: this machine has"),
    (EMBED + ["--cache-dir", "{file}"], "--cache-dir: {file}: is a file, not a folder"),
    (EMBED + ["--rationales-out", "{folder}"], "--rationales-out: {folder}: is a folder"),
    (
        ["embed", "--model", "tiny-random", "--input", "{folder}", "--output", "{out}"],
        "--input: {folder}: is a folder, not a file",
    ),
    (
        ["embed", "--model", "tiny-random", "--input", "{folder}/none.txt", "--output", "{out}"],
        "--input: {folder}/none.txt: no such file",
    ),
    (
        ["embed", "--model", "tiny-random", "--input", "{texts}", "--output", "{folder}"],
        "--output: {folder}: is a folder; give a file name",
    ),
    (  # unwritable: the folder to write in is a file
        ["embed", "--model", "tiny-random", "--input", "{texts}", "--output", "{file}/e.npy"],
        "--output: {file}/e.npy: {file} is a file, not a folder",
    ),
    (
        ["embed", "--model", "tiny-random", "--input", "{latin1}", "--output", "{out}"],
        "{latin1}, line 1: not UTF-8 (byte 4 of the line is 0xe9)",
    ),
    (["eval", "--model", "tiny-random", "--suite", "offlin"], "Unknown suite or task: 'offlin'"),
    (["eval", "--model", "tiny-random", "--suite", ","], "Suite ',' names no tasks"),
    (
        ["eval", "--model", "tiny-random", "--output", "{file}/r.json"],
        "--output: {file}/r.json: {file} is a file, not a folder",
    ),
    (["reproduce", "--only", "99"], "--only: No notebook numbered 99"),
    (["reproduce", "--only", ""], "--only: expected notebook numbers such as 5,8, got ''"),
    (["reproduce", "--only", "abc"], "--only: expected notebook numbers"),
    (["reproduce", "--output", "{file}"], "--output: {file}: is a file, not a folder"),
    (["book", "--executed", "{folder}/none"], "--executed: {folder}/none: no such folder"),
    (
        ["train", "--config", "tiny", "--set", "run.output_dir={file}"],
        "run.output_dir: {file}: is a file, not a folder",
    ),
    (
        ["train", "--config", "tiny", "--set", "run.output_dir={file}/run"],
        "run.output_dir: {file}/run: {file} is a file, not a folder",
    ),
    (
        ["eval", "--model", "tiny-random", "--mode", "rationale", "--max-new-tokens", "4"]
        + ["--lengths", "0,2", "--results-cache", "{folder}"],
        "results_cache resumes one encoding of a suite",
    ),
    (
        [
            "train",
            "--config",
            "tiny",
            "--set",
            "run.model={folder}",
            "--set",
            "output_dir={folder}",
        ],
        "run.model and run.output_dir are one folder",
    ),
    # Issue 24: outputs that would overwrite an input, values that would train on nothing.
    (
        ["embed", "--model", "tiny-random", "--input", "{texts}", "--output", "{texts}"],
        "--input and --output are the same file",
    ),
    (EMBED + ["--rationales-out", "{texts}"], "--input and --rationales-out are the same file"),
    (EMBED + ["--rationales-out", "{out}"], "--output and --rationales-out are the same file"),
    (["train", "--config", "tiny", "--set", "optim.learning_rate=inf"], "expected a finite"),
    (["train", "--config", "tiny", "--set", "reward.cluster_weight=nan"], "expected a finite"),
    (["train", "--config", "tiny", "--set", "reward.tau=inf"], "expected a finite number"),
    (["train", "--config", "tiny", "--set", "optim.num_train_epochs=inf"], "a finite number"),
    (["train", "--config", "tiny", "--set", "run.seed=-1"], "run.seed must be in [0, 2**32)"),
    (["train", "--config", "tiny", "--set", "run.seed=1e20"], "run.seed must be in [0, 2**32)"),
    (["train", "--config", "tiny", "--set", "run.output_dir="], "must name a folder for the run"),
    (["train", "--config", "tiny", "--set", "run.output_dir=."], "must name a folder for the run"),
    (["train", "--config", "tiny", "--set", "run.output_dir=./"], "must name a folder for the run"),
    (["train", "--config", "tiny", "--set", "run.output_dir=/"], "must name a folder for the run"),
    (
        ["train", "--config", "tiny", "--set", "grpo.per_device_train_batch_size=3"],
        "must split into micro-batches of grpo.per_device_train_batch_size=3",
    ),
    (["book", "--executed", "{folder}"], "holds no executed notebooks"),
    # Issue 36: a hang, a file named after a folder, options silently ignored, settings this
    # machine cannot run.
    (["train", "--config", "tiny", "--set", "use_vllm=true"], "vLLM is not installed"),
    (["train", "--config", "tiny", "--set", "bf16=true"], "bf16=true needs a CUDA GPU"),
    (["train", "--config", "tiny", "--set", "fp16=true"], "fp16=true needs a CUDA GPU"),
    (["train", "--config", "tiny", "--set", "fp16=true", "--set", "bf16=true"], "exclude each"),
    (EMBED + ["--num-rationales", "100000"], "num_rationales=100000 is more than batch_size=8"),
    (["eval", "--model", "tiny-random", "--output", "{folder}/new/"], "is a folder; give a file"),
    (["eval", "--model", "minilm", "--lengths", "0,8"], "--lengths: minilm is a sentence-"),
    (["eval", "--model", "minilm", "--greedy", "--max-new-tokens", "4"], "--max-new-tokens, --gr"),
]


@pytest.mark.parametrize(("argv", "message"), PROBES, ids=[p[1] for p in PROBES])
def test_bad_argument_is_one_line_and_status_2(argv, message, files, tmp_path, no_model, capsys):
    names = {**files, "out": str(tmp_path / "out.npy")}
    assert main([arg.format(**names) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**names) in err
    assert err.count("\n") == 1 and err.startswith(f"grace {argv[0]}: error: ")
    assert not os.path.exists(names["out"])


TRAIN_RUN = ["train", "--config", "tiny", "--set", "output_dir={folder}/run"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (EMBED + ["--max-new-tokens", "20000"], "max_input_tokens + max_new_tokens (1024 + 20000)"),
        (
            TRAIN_RUN + ["--set", "policy.max_completion_length=100000"],
            "policy.max_prompt_tokens + policy.max_completion_length (64 + 100000)",
        ),
    ],
)
def test_lengths_beyond_the_models_positions_are_one_line(argv, message, files, tmp_path, capsys):
    names = {**files, "out": str(tmp_path / "out.npy")}
    assert main([arg.format(**names) for arg in argv]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in last and "the model has 4096" in last
    assert not os.path.exists(names["out"])


def test_embed_writes_the_output_path_exactly_as_given(tmp_path, files, capsys):
    for name in ("emb.bin", "no_suffix"):
        output = tmp_path / name
        argv = ["embed", "--model", "tiny-random", "--input", files["texts"]]
        assert main([*argv, "--output", str(output), "--mode", "direct", "--device", "cpu"]) == 0
        assert np.load(output).shape == (2, 32)
        assert f"embeddings to {output}\n" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npy") == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xef\xbb\xbffirst\nsecond\n", ["first", "second"]),  # the BOM is dropped
        (b"first\r\nsecond\r\n\r\n\n", ["first", "second"]),  # CRLF; blank lines at the end
        (b"first\rsecond\rthird\r", ["first", "second", "third"]),  # CR alone (old Mac)
        (b"first\n \nthird\n", "line 2: blank line"),  # row i of the output must be line i
        (b"first\n\xff\n", "line 2: not UTF-8 (byte 1 of the line is 0xff)"),
        (b'{"text": "a"}\n\n{"text": "c"}\n', "line 2: blank line"),
        (b'\xef\xbb\xbf{"text": "a"}\n', ["a"]),
        (b'{"text": "a"}\n{"text": "\\ud800"}\n', "line 2: field 'text' holds a lone surrogate"),
    ],
)
def test_embed_input_keeps_line_numbers(tmp_path, content, expected):
    suffix = ".jsonl" if content.lstrip(b"\xef\xbb\xbf").startswith(b"{") else ".txt"
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    if isinstance(expected, list):
        assert read_texts(path, skip_blank=False) == expected
    else:
        with pytest.raises(DataError, match=re.escape(f"{path}, {expected}")):
            read_texts(path, skip_blank=False)


def test_training_files_skip_blank_lines_but_name_decoding_errors(tmp_path):
    path = tmp_path / "latin1.jsonl"
    line = '{"query": "caf\xe9", "positive": "p", "negative": "n"}\n'
    path.write_bytes(("\n" + line).encode("latin-1"))  # train --set triples=latin1.jsonl
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: not UTF-8"):
        read_triples(path)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a\n\nb\n")
    assert read_texts(sentences) == ["a", "b"]  # training sentences: a bag, blank lines skipped


def test_encoder_settings_are_checked():
    for bad in (
        dict(temperature=-1.0),
        dict(max_new_tokens=0),
        dict(num_rationales=0),
        dict(batch_size=0),
        dict(top_p=1.5),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EncoderConfig(**bad)


def test_unknown_notebook_numbers_are_refused():
    with pytest.raises(ReproduceError, match="No notebook numbered 99"):
        notebooks([99])
    with pytest.raises(ReproduceError, match="none given"):
        notebooks([])


def test_hub_suite_without_network_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nobody there
    start = time.perf_counter()
    with pytest.raises(HubRequired, match="cannot be reached"):
        resolve_tasks("paper")
    assert time.perf_counter() - start < 10


def test_corrupt_cache_file_is_moved_aside_and_rebuilt(tiny, texts, tmp_path):
    reference = GraceEncoder(*tiny, max_new_tokens=6).encode(texts[:2])
    (tmp_path / "rationales.sqlite").write_bytes(b"not a database " * 100)
    with pytest.warns(UserWarning, match="is not a readable rationale cache"):
        encoder = GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    assert (tmp_path / "rationales.sqlite.corrupt").exists()
    assert np.allclose(encoder.encode(texts[:2]), reference, atol=1e-5)


@pytest.mark.parametrize("stored", ["not json", "[1, 2", '{"a": 1}', "[1e400]", "[99999]", "[-1]"])
def test_bad_cache_row_is_sampled_again(tiny, texts, tmp_path, stored):
    encoder = GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    reference = encoder.encode(texts[:1])
    with sqlite3.connect(tmp_path / "rationales.sqlite") as db:
        db.execute("UPDATE rationales SET ids = ?", (stored,))
    again = GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="rows that are not token ids"):
        assert np.allclose(again.encode(texts[:1]), reference, atol=1e-5)
    assert again.generated == 1
    assert GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path)).encode(texts[:1]).any()


def test_cache_failing_mid_run_names_the_file_and_the_fix(tiny, texts, tmp_path):
    encoder = GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    with sqlite3.connect(tmp_path / "rationales.sqlite") as db:
        db.execute("DROP TABLE rationales")
    with pytest.raises(CacheError, match="rationales.sqlite failed .*Delete it, or run without"):
        encoder.encode(texts[:1])


def test_a_full_disk_is_never_blamed_on_the_cache_file(tiny, texts, tmp_path, monkeypatch):
    from grace.encoder import RationaleCache

    encoder = GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    encoder.encode(texts[:1])
    kept = (tmp_path / "rationales.sqlite").read_bytes()

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RationaleCache, "_open", full)
    with pytest.raises(CacheError, match="Cannot open the rationale cache .*disk is full"):
        GraceEncoder(*tiny, max_new_tokens=6, cache_dir=str(tmp_path))
    assert (tmp_path / "rationales.sqlite").read_bytes() == kept  # neither moved nor rebuilt
    assert not (tmp_path / "rationales.sqlite.corrupt").exists()

    class FullDisk:
        def __getattr__(self, name):
            raise sqlite3.OperationalError("database or disk is full")

    encoder.cache.db = FullDisk()
    with pytest.raises(CacheError, match=r"disk is full\)\. Free some space, or run without"):
        encoder.encode(texts[1:2])


def test_unopenable_cache_is_an_error_with_status_2(tmp_path, files, capsys):
    (tmp_path / "cache" / "rationales.sqlite").mkdir(parents=True)  # a folder where the file goes
    argv = ["embed", "--model", "tiny-random", "--input", files["texts"], "--device", "cpu"]
    argv += ["--output", str(tmp_path / "e.npy"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert "Cannot open the rationale cache" in capsys.readouterr().err


def test_json_inputs_are_read_as_json_lines_whatever_the_case_of_the_suffix(tmp_path):
    for name in ("x.json", "x.JSONL"):
        path = tmp_path / name
        path.write_text('{"text": "first"}\n{"text": "second"}\n')
        assert read_texts(path) == ["first", "second"]


def test_a_run_folder_is_never_deleted_and_a_foreign_folder_never_moved(tmp_path):
    from grace.config import ConfigError, load_config
    from grace.runs import prepare_run_folder

    folder = tmp_path / "run"
    config = load_config("tiny", [f"output_dir={folder}"])
    for rate in (2e-3, 3e-3, 4e-3):  # settings changed twice: both earlier runs kept
        prepare_run_folder(config.with_changes({"optim.learning_rate": rate}))
        (folder / f"lr{rate}").write_text("weights")
    with pytest.warns(UserWarning, match="kept, not deleted"):
        prepare_run_folder(config)
    kept = sorted(p.name for p in tmp_path.glob("run.previous-*/lr*"))
    assert kept == ["lr0.002", "lr0.003", "lr0.004"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files but no run"):
        prepare_run_folder(config.with_changes({"run.output_dir": str(other)}))
    assert (other / "notes.txt").read_text() == "mine"


def test_a_home_folder_is_expanded_like_a_shell_would():
    from grace.config import load_config

    config = load_config("tiny", ["run.output_dir=~/gr_run"])
    assert config.run.output_dir == os.path.expanduser("~/gr_run")


def test_one_run_at_a_time_writes_a_folder(tmp_path):
    from grace.config import ConfigError
    from grace.runs import run_lock

    with run_lock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=f"another process \\({os.getpid()}\\)"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released with the first holder
        pass


def test_one_reproduce_at_a_time_writes_an_output_folder(tmp_path):
    from grace.book.reproduce import reproduce
    from grace.config import ConfigError
    from grace.runs import folder_lock

    with folder_lock(tmp_path, tmp_path / ".lock"):  # another `grace reproduce` holds it
        with pytest.raises(ConfigError, match="being written by another process"):
            reproduce("tiny", tmp_path, only=[1])
    assert not (tmp_path / "reproduce.json").exists()


def test_too_few_training_rows_is_an_error_not_an_untrained_model(tmp_path, capsys):
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path / 'run'}"]
    assert main([*argv, "--set", "run.max_examples=1"]) == 2
    assert "1 training rows, but one step needs 2" in capsys.readouterr().err
    assert not (tmp_path / "run" / "log_history.json").exists()


def test_an_empty_training_file_is_an_error(tmp_path, capsys):
    (tmp_path / "triples.jsonl").write_text("")
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path / 'run'}"]
    assert main([*argv, "--set", f"run.triples={tmp_path / 'triples.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert "triples.jsonl" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "log_history.json").exists()


def test_more_top_layers_than_the_model_has_is_one_line(tmp_path, capsys):
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path / 'run'}"]
    assert main([*argv, "--set", "adaptation.train_top_layers=99"]) == 2
    err = capsys.readouterr().err
    assert "adaptation.train_top_layers=99, but the model has 2 layers" in err
    assert err.count("\n") == 1


def test_the_same_train_command_twice_reuses_the_finished_run(tmp_path, capsys):
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path}"]
    assert main(argv) == 0
    weights = (tmp_path / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert "holds a finished run with these settings; reused" in capsys.readouterr().out
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    # Evaluation settings do not retrain, but the reused folder embeds by the new ones.
    assert main([*argv, "--set", "evaluation.max_new_tokens=7"]) == 0
    assert "reused" in capsys.readouterr().out
    assert json.loads((tmp_path / "encoder_config.json").read_text())["max_new_tokens"] == 7


@pytest.mark.parametrize("logger", ["wandb", "bogus"])
def test_a_logger_not_installed_is_refused_before_the_run_folder_moves(tmp_path, logger, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={run}"]
    assert main(argv) == 0
    weights = (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    changed = [*argv, "--set", "learning_rate=2e-3", "--set", f"report_to={logger}"]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert f"logging.report_to={logger}" in err and err.count("\n") == 1
    assert not [p for p in tmp_path.iterdir() if ".previous-" in p.name]  # nothing moved aside
    assert (run / "model.safetensors").read_bytes() == weights


def test_a_run_moved_aside_by_a_failed_start_is_moved_back(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={run}"]
    assert main(argv) == 0
    weights = (run / "model.safetensors").read_bytes()
    typo = ["--set", "adaptation.lora=true", "--set", "adaptation.lora_target_modules=[nosuch]"]
    with pytest.warns(UserWarning, match="kept, not deleted"):
        assert main([*argv, *typo]) == 2  # refused only once the model is loaded
    assert "name no linear layer of the model" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="moved it back"):
        assert main(argv) == 0
    assert "holds a finished run with these settings; reused" in capsys.readouterr().out
    assert (run / "model.safetensors").read_bytes() == weights


def test_no_output_lands_inside_the_model_folder(tmp_path, files, no_model, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    for argv in (
        ["eval", "--model", str(model), "--output", str(model / "model.safetensors")],
        ["embed", "--model", str(model), "--input", files["texts"], "--output", f"{model}/e.npy"],
    ):
        assert main(argv) == 2
        assert "lies inside the model folder" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == b"weights"


def test_an_output_hard_linked_to_the_input_is_refused(tmp_path, files, capsys):
    linked = tmp_path / "linked.npy"
    os.link(files["texts"], linked)
    argv = ["embed", "--model", "tiny-random", "--input", files["texts"], "--output", str(linked)]
    assert main(argv) == 2
    assert "--input and --output are the same file" in capsys.readouterr().err
    assert Path(files["texts"]).read_text() == "one\ntwo\n"


def test_a_write_that_fails_midway_keeps_the_previous_file(tmp_path):
    from grace.files import WriteError, atomic_output

    path = tmp_path / "report.json"
    path.write_text("previous")
    with pytest.raises(WriteError, match=r"report.json: could not be written .*No space"):
        with atomic_output(path) as out:
            out.write("half of the new")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no partial file


def test_embed_over_a_hard_link_leaves_the_other_name_whole(tmp_path, files):
    old = tmp_path / "old.npy"
    np.save(old, np.ones(3))
    os.link(old, tmp_path / "kept.npy")
    assert (
        main(["embed", "--model", "tiny-random", "--input", files["texts"], "--output", str(old)])
        == 0
    )
    assert np.load(old).shape[0] == 2  # two texts embedded
    np.testing.assert_array_equal(np.load(tmp_path / "kept.npy"), np.ones(3))


@pytest.mark.parametrize(
    "settings",
    [["learning_rate=1e12"], ["run.method=contrastive", "baselines.lr=1e12", "baselines.steps=3"]],
)
def test_a_diverged_run_stops_unfinished_naming_the_step(tmp_path, settings, capsys):
    argv = ["train", "--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main([*argv, *(f"--set={s}" for s in settings)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"training diverged at step \d+ \((loss|grad_norm) (nan|inf)\)", err)
    assert not (tmp_path / "log_history.json").exists()


def test_ctrl_c_says_how_to_resume_without_a_traceback(monkeypatch, capsys):
    def interrupted(config, callbacks=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(grace.train, "train", interrupted)
    assert main(["train", "--config", "tiny", "--set", "run.output_dir=/tmp/unused-run"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; run the same command again to resume" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("error", "where"),
    [
        (OSError(28, "No space left on device", "run/checkpoint-3/optimizer.pt"), "optimizer.pt"),
        (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"), ""),
    ],
)
def test_a_full_disk_while_training_is_one_line(monkeypatch, error, where, capsys):
    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(grace.train, "train", full)
    assert main(["train", "--config", "tiny", "--set", "run.output_dir=/tmp/unused-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grace train: error: the disk is full") and err.count("\n") == 1
    assert where in err and "run the same command again to resume" in err


def test_other_runtime_errors_are_not_called_a_full_disk(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(grace.train, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--config", "tiny", "--set", "run.output_dir=/tmp/unused-run"])


def test_ctrl_c_during_embed_writes_nothing(monkeypatch, files, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grace.encoder, "load_model", interrupted)
    argv = ["embed", "--model", "tiny-random", "--input", files["texts"]]
    assert main([*argv, "--output", str(tmp_path / "e.npy")]) == 130
    err = capsys.readouterr().err
    assert "grace embed: interrupted; nothing was written." in err and "Traceback" not in err
    assert not (tmp_path / "e.npy").exists()


def test_a_damaged_checkpoint_is_named_before_resuming(tmp_path, capsys):
    from grace.runs import check_checkpoint

    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path}"]
    assert main([*argv, "--set", "optim.max_steps=1"]) == 0
    checkpoint = tmp_path / "checkpoint-1"
    check_checkpoint(checkpoint)  # a good one passes: optimizer, scheduler and RNG state load
    optimizer = checkpoint / "optimizer.pt"
    kept = optimizer.read_bytes()
    torch.save({"state": Path("anything")}, optimizer)  # an object, not tensors: refused unread
    with pytest.raises(ConfigError, match="optimizer.pt: holds objects beyond tensors"):
        check_checkpoint(checkpoint)
    optimizer.write_bytes(kept[:100])
    with pytest.raises(ConfigError, match=r"optimizer.pt: unreadable \("):
        check_checkpoint(checkpoint)
    optimizer.write_bytes(kept)
    (tmp_path / "log_history.json").unlink()  # as if stopped after the checkpoint
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    capsys.readouterr()
    assert main([*argv, "--set", "optim.max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert f"{weights}: truncated" in err and "Delete" in err and err.count("\n") == 1
    (checkpoint / "trainer_state.json").write_text("{not json")
    assert main([*argv, "--set", "optim.max_steps=1"]) == 2
    assert "trainer_state.json: Expecting property name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", "not a usable encoder configuration (Expecting property name"),
        ('{"mode": "rationale", "colour": 1}', "unknown keys ['colour']"),
        ('{"max_new_tokens": 0}', "max_new_tokens"),
        ('{"seed": -5}', "seed must be 0 or more"),
        ('{"seed": 1.5}', "seed: expected int, got 1.5"),
        ('{"system_prompt": 42}', "system_prompt: expected str, got 42"),
        ('{"num_rationales": 16}', "num_rationales=16 is more than batch_size=8"),
        ('{"unused": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a usable encoder"),
        ('{"seed": ' + "9" * 5000 + "}", "Exceeds the limit (4300 digits)"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_a_damaged_encoder_config_is_one_line(tmp_path, files, content, message, capsys):
    from grace.models import build_tiny_random

    model, tokenizer = build_tiny_random()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "encoder_config.json").write_text(content)
    argv = ["embed", "--model", str(tmp_path / "model"), "--input", files["texts"]]
    assert main([*argv, "--output", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert "encoder_config.json: not a usable encoder configuration" in err and message in err


def test_a_damaged_run_record_is_one_line(tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    for content, message in (
        ("{oops", "Expecting property name"),
        ("{}", "'notebooks' mapping"),
        ('{"notebooks": {}, "x": ' + deep + "}", "not a readable run record"),
        ('{"notebooks": {}, "x": ' + "7" * 5000 + "}", "Exceeds the limit"),
    ):
        (tmp_path / "reproduce.json").write_text(content)
        assert main(["reproduce", "--profile", "tiny", "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "reproduce.json: not a readable run record" in err and message in err


def test_eval_scores_a_task_named_twice_once_and_refuses_lengths_beyond_the_cap(capsys):
    from grace.evaluation import suite_task_names

    assert suite_task_names("LeeSTS,LeeSTS, LeeSTS") == ["LeeSTS"]
    argv = ["eval", "--model", "tiny-random", "--suite", "LeeSTS", "--mode", "rationale"]
    assert main([*argv, "--max-new-tokens", "4", "--lengths", "2,8,100"]) == 2
    assert "lengths [8, 100] exceed the rationale cap max_new_tokens=4" in capsys.readouterr().err


def test_a_safetensors_file_of_garbage_is_named_not_a_traceback(tmp_path):
    from grace.models import safetensors_problem

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff" * 64)  # its first 8 bytes claim a header of 2**64 - 1 bytes
    assert safetensors_problem(path).startswith("unreadable header (it claims")
    path.write_bytes((10).to_bytes(8, "little") + b"not json!!")
    assert safetensors_problem(path).startswith("unreadable header")


@pytest.mark.parametrize("method", ["grace", "contrastive"])
def test_lora_targets_the_model_lacks_are_one_line(tmp_path, method, capsys):
    argv = ["train", "--config", "tiny", "--set", f"run.output_dir={tmp_path}"]
    lora = ["--set", "adaptation.lora=true", "--set", "adaptation.lora_target_modules=[nosuchmod]"]
    assert main([*argv, "--set", f"run.method={method}", *lora]) == 2
    err = capsys.readouterr().err
    assert "lora_target_modules ['nosuchmod'] name no linear layer of the model" in err
    assert "q_proj" in err and err.count("\n") == 1


def test_a_damaged_or_non_finite_model_folder_is_one_line(tmp_path, files, capsys):
    import torch

    from grace.models import build_tiny_random

    model, tokenizer = build_tiny_random()
    for name in ("truncated", "nan"):
        if name == "nan":
            with torch.no_grad():
                model.model.norm.weight.fill_(float("nan"))
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    argv = ["embed", "--input", files["texts"], "--output", str(tmp_path / "e.npy")]
    assert main([*argv, "--model", str(tmp_path / "truncated")]) == 2
    assert f"{weights}: truncated" in capsys.readouterr().err
    assert main([*argv, "--model", str(tmp_path / "nan")]) == 2
    err = capsys.readouterr().err
    assert "has non-finite weights (1 tensors, first model.norm.weight)" in err
    assert err.splitlines()[-1].startswith("grace embed: error: ") and "Traceback" not in err
    assert not (tmp_path / "e.npy").exists()
    evaluate = ["eval", "--model", str(tmp_path / "nan"), "--suite", "LeeSTS", "--mode", "direct"]
    assert main([*evaluate, "--output", str(tmp_path / "r.json")]) == 2
    assert "has non-finite weights" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_model_that_is_a_file_or_an_unfinished_run_is_named(files, tmp_path, capsys):
    """Issue 24: a file given as --model was "a folder without a model"; an unfinished run
    folder ended in a tokenizer library's complaint."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "grace_config.json").write_text("{}")
    for model, message in (
        (files["file"], f"{files['file']} is a file; a model is a folder"),
        (str(run), f"{run} is a run folder whose training has not finished"),
    ):
        argv = ["embed", "--model", model, "--input", files["texts"], "--device", "cpu"]
        assert main([*argv, "--output", str(tmp_path / "e.npy")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_book_refuses_a_folder_missing_some_notebooks(tmp_path, capsys):
    (tmp_path / notebooks()[0].name).write_text("{}")
    assert main(["book", "--executed", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"lacks executed copies of {notebooks()[1].name}" in err and err.count("\n") == 1


def test_reproduce_refuses_an_unknown_profile_and_its_own_sources_before_running(tmp_path, capsys):
    from grace.book.reproduce import NOTEBOOK_DIR

    assert main(["reproduce", "--profile", "nosuch", "--output", str(tmp_path)]) == 2
    assert "No profile 'nosuch'" in capsys.readouterr().err
    sources = {p.name: p.read_bytes() for p in NOTEBOOK_DIR.glob("*.ipynb")}
    root = NOTEBOOK_DIR.parent
    assert main(["reproduce", "--profile", "tiny", "--only", "1", "--output", str(root)]) == 2
    assert "over their sources" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in NOTEBOOK_DIR.glob("*.ipynb")} == sources
    assert not list(tmp_path.iterdir())  # nothing written for the unknown profile


def test_reproduce_says_how_many_notebooks_ran(monkeypatch, capsys):
    """Issue 24: `--only 1` printed "All notebooks done"."""
    import grace.book.reproduce

    summary = {"notebooks": {"01_the_idea.ipynb": {"status": "ok", "seconds": 1.0}}}
    monkeypatch.setattr(
        grace.book.reproduce, "reproduce", lambda *a, **k: summary | {"total_seconds": 1.0}
    )
    assert main(["reproduce", "--only", "1", "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert f"1 of {len(notebooks())} notebooks done" in out and "without --only" in out


def test_a_pipe_as_input_is_named_a_pipe(tmp_path, no_model, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = ["embed", "--model", "tiny-random", "--input", str(fifo), "--output", "e.npy"]
    assert main(argv) == 2
    assert f"--input: {fifo}: not a regular file (a pipe or a device)" in capsys.readouterr().err
    with pytest.raises(DataError, match="not a regular file"):
        read_texts(fifo)


def test_pickled_model_weights_beyond_tensors_are_refused_in_one_line(tmp_path, files, capsys):
    from grace.models import build_tiny_random

    model, tokenizer = build_tiny_random()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").unlink()
    torch.save({"weights": Path("anything")}, tmp_path / "model" / "pytorch_model.bin")
    capsys.readouterr()  # the save's progress bar
    argv = ["embed", "--model", str(tmp_path / "model"), "--input", files["texts"]]
    assert main([*argv, "--output", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert "its weights are a pickle holding objects beyond tensors" in err
    assert err.count("\n") == 1 and "weights_only=False" not in err


def test_more_validation_reviews_than_any_movie_has_is_one_line():
    from grace.config import ConfigError
    from grace.validation import validation_set

    with pytest.raises(ConfigError, match="reviews_per_movie=1000: no training movie has that"):
        validation_set(4, 1000)


def test_a_run_record_nested_too_deep_or_with_a_huge_number_is_no_run(tmp_path):
    from grace.runs import saved_hash

    for content in ("[" * 100_000 + "]" * 100_000, '{"settings_hash": ' + "1" * 5000 + "}", "[]"):
        (tmp_path / "grace_config.json").write_text(content)
        assert saved_hash(tmp_path) is None
