import json
import subprocess
import sys

import numpy as np
import pytest

from grace.cli import main
from grace.data import DataError, read_jsonl, read_texts


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "grace.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("embed", "train", "eval", "export", "reproduce", "book"):
        assert command in out


def test_embed_txt_to_npy_with_rationales(tmp_path, texts):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts[:3]) + "\n\n")
    output, rationales = tmp_path / "out" / "emb.npy", tmp_path / "rationales.jsonl"
    code = main(
        [
            "embed",
            "--model",
            "tiny-random",
            "--input",
            str(source),
            "--output",
            str(output),
            "--max-new-tokens",
            "4",
            "--rationales-out",
            str(rationales),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    embeddings = np.load(output)
    assert embeddings.shape == (3, 32)
    rows = [json.loads(line) for line in rationales.read_text().splitlines()]
    assert [row["text"] for row in rows] == texts[:3] and all(row["rationale"] for row in rows)


def test_embed_jsonl_direct(tmp_path):
    source = tmp_path / "texts.jsonl"
    source.write_text('{"text": "one"}\n{"text": "two", "id": 7}\n')
    output = tmp_path / "emb.npy"
    args = [
        "embed",
        "--model",
        "tiny-random",
        "--input",
        str(source),
        "--output",
        str(output),
        "--mode",
        "direct",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert np.load(output).shape == (2, 32)


def test_embed_reports_bad_data_with_file_and_line(tmp_path, capsys):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    args = ["embed", "--model", "tiny-random", "--input", str(source), "--output", "x.npy"]
    assert main(args) == 2
    assert f"{source}, line 2: missing field 'text'" in capsys.readouterr().err


def test_embed_reports_unknown_model(tmp_path, capsys):
    source = tmp_path / "t.txt"
    source.write_text("a\n")
    args = ["embed", "--model", "nobody/nothing", "--input", str(source), "--output", "x.npy"]
    assert main(args) == 2
    assert "Cannot load model 'nobody/nothing'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{not json}\n', "line 2: not valid JSON"),
        ('{"text": "ok"}\n\n["a list"]\n', "line 3: expected a JSON object, got list"),
        ('{"text": "   "}\n', "line 1: field 'text' is empty"),
        ('{"text": 5}\n', "line 1: field 'text' must be a string, got int"),
        ('{"text": null}\n', "line 1: field 'text' must be a string, got null"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_jsonl(path, ("text",))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_texts(tmp_path / "absent.txt")


def test_help_and_argument_errors_load_neither_torch_nor_transformers():
    """`grace --help` must answer at once: heavy imports wait until a command runs."""
    import subprocess
    import sys

    code = (
        "import sys; from grace.cli import main; main(['--help']); "
        "main(['train', '--config']); "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-500:]


def test_a_run_folder_is_evaluated_with_its_profiles_batch_size(tmp_path):
    """encoder_config.json keeps no batch size (a machine's choice), so without --batch-size
    the run's own evaluation.batch_size is used rather than the library's 8."""
    from grace.cli import build_parser, encoder_settings
    from grace.config import load_config
    from grace.models import build_tiny_random
    from grace.runs import prepare_run_folder

    folder = tmp_path / "run"
    config = load_config("tiny", [f"output_dir={folder}", "evaluation.batch_size=24"])
    prepare_run_folder(config)
    model, tokenizer = build_tiny_random()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts = tmp_path / "t.txt"
    texts.write_text("one\n")
    output = str(tmp_path / "e.npy")
    argv = ["embed", "--model", str(folder), "--input", str(texts), "--output", output]
    assert encoder_settings(build_parser().parse_args(argv))["batch_size"] == 24
    given = build_parser().parse_args([*argv, "--batch-size", "5"])
    assert encoder_settings(given)["batch_size"] == 5
    plain = build_parser().parse_args(["embed", "--model", "tiny-random", *argv[3:]])
    assert "batch_size" not in encoder_settings(plain)  # the library's default applies
