"""The ``grace`` command line."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from grace.constants import MAX_NEW_TOKENS, MEMORY_MB, MODES, known_profiles


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``grace embed: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Argument types: each checks one argument when it is parsed, before any model is loaded.


def count(text: str) -> int:
    """A whole number >= 1 (token caps, draws, batch sizes)."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def temperature(text: str) -> float:
    """A number >= 0; 0 means greedy decoding, said explicitly rather than implied."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = greedy), got {text}")
    return value


def device(text: str) -> str:
    """A torch device that exists on this machine."""
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use cpu, cuda, cuda:N or mps"
        ) from None
    if parsed.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= available:
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {available} CUDA device(s); try --device cpu"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("mps is not available here; try --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or mps")
    return text


def input_file(text: str) -> str:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a regular file (a pipe or a device)")
    return text


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def output_file(text: str) -> str:
    """A file path that can be written: not a folder, and in a folder that can be made."""
    if Path(text).is_dir() or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    if Path(text).exists() and not os.access(text, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: the file is not writable")
    writable_folder(Path(text).parent, text)
    return text


def output_folder(text: str) -> str:
    """A folder that exists or can be made, and can be written."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    writable_folder(Path(text), text)
    return text


def writable_folder(folder: Path, text: str) -> None:
    """Raise unless ``folder``, or the nearest folder above it that exists, can be written."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {existing}")


def lengths(text: str) -> list[int]:
    """``0,16,32``: rationale lengths in tokens (0 = direct), sorted, each once."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected token counts such as 0,16,32, got {text!r}")
    return sorted({int(part) for part in parts})


def notebook_numbers(text: str) -> list[int]:
    """``5,8``: numbers of notebooks that exist."""
    from grace.book.reproduce import ReproduceError, notebooks

    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected notebook numbers such as 5,8, got {text!r}")
    numbers = [int(part) for part in parts]
    try:
        notebooks(numbers)
    except ReproduceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return numbers


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="grace",
        description="GRACE: embeddings from an LLM's rationales, trained with GRPO.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed texts from a file into a .npy matrix")
    embed.add_argument("--model", required=True, help="hub id, local folder, or alias")
    embed.add_argument(
        "--input",
        required=True,
        type=input_file,
        help=".txt (one text a line, UTF-8, no blank lines) or .jsonl (field text)",
    )
    embed.add_argument(
        "--output",
        required=True,
        type=output_file,
        help="file for the (N, H) array in .npy format (written under exactly this name)",
    )
    add_encoder_options(embed)
    embed.add_argument(
        "--rationales-out", type=output_file, help="write each text's rationale to this .jsonl"
    )
    embed.set_defaults(run=run_embed)

    train = commands.add_parser("train", help="train with GRACE (GRPO) or a contrastive baseline")
    train.add_argument(
        "--config", required=True, help=f"profile ({', '.join(known_profiles())}) or YAML"
    )
    train.add_argument("--method", choices=("grace", "contrastive", "simcse"))
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting: --set optim.learning_rate=1e-5, or a bare name when only "
        "one section has it: --set output_dir=runs/x (repeatable)",
    )
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser("eval", help="evaluate a model on an mteb suite")
    evaluate.add_argument("--model", required=True, help="hub id, folder, alias, or 'minilm'")
    evaluate.add_argument(
        "--suite", default="offline", help="offline | subset | paper | mteb-eng | TASK[,TASK...]"
    )
    evaluate.add_argument(
        "--output", type=output_file, help="write the report (mteb results + summary) here"
    )
    evaluate.add_argument("--label", help="row name in tables (default: the model's name)")
    evaluate.add_argument(
        "--results-cache",
        type=output_folder,
        help="mteb's result cache folder: each task's result is kept as it finishes, so a "
        "stopped suite resumes task by task",
    )
    add_encoder_options(evaluate)
    evaluate.add_argument(
        "--lengths",
        type=lengths,
        help="also score one rationale cut at each of these lengths, e.g. 0,16,32,64,128 "
        "(0 = direct), from the same generation",
    )
    evaluate.add_argument(
        "--greedy", action="store_true", help="also score greedy rationales (temperature 0)"
    )
    evaluate.add_argument(
        "--memory-mb",
        type=count,
        default=MEMORY_MB,
        help="keep embeddings in RAM up to this many MB, the rest in a file on disk "
        f"(default {MEMORY_MB}; a corpus such as MSMARCO's needs tens of GB)",
    )
    evaluate.set_defaults(run=run_eval)

    estimate = commands.add_parser(
        "estimate", help="time a profile's training and evaluation on this machine, before a run"
    )
    estimate.add_argument(
        "--config", required=True, help=f"profile ({', '.join(known_profiles())}) or YAML"
    )
    estimate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as for grace train"
    )
    estimate.set_defaults(run=run_estimate)

    export = commands.add_parser(
        "export", help="write a model's direct-mode encoder as a sentence-transformers folder"
    )
    export.add_argument("--model", required=True, help="hub id, local folder, or alias")
    export.add_argument("--output", required=True, type=output_folder, help="a new or empty folder")
    export.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="also upload the folder to this Hugging Face repository (needs a login or HF_TOKEN)",
    )
    export.set_defaults(run=run_export)

    reproduce = commands.add_parser("reproduce", help="run the book's notebooks with papermill")
    reproduce.add_argument(
        "--profile", default="cpu", help=f"{' | '.join(known_profiles())} | YAML"
    )
    reproduce.add_argument("--only", type=notebook_numbers, help="notebooks to run, e.g. 5,8")
    reproduce.add_argument(
        "--output", type=output_folder, help="where executed notebooks and results go"
    )
    reproduce.add_argument("--fresh", action="store_true", help="rerun finished notebooks too")
    reproduce.set_defaults(run=run_reproduce)

    book = commands.add_parser("book", help="build the Jupyter Book (warnings are errors)")
    book.add_argument(
        "--executed", type=existing_folder, help="executed notebooks (default: book/executed)"
    )
    book.add_argument(
        "--output", type=output_folder, help="the HTML goes to OUTPUT/_build/html (default: .)"
    )
    book.set_defaults(run=run_book)
    return parser


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """The ``GraceEncoder`` settings shared by the commands that embed text.

    Unset options take the model folder's ``encoder_config.json`` (written by ``grace train``)
    and otherwise the paper's inference settings (``EncoderConfig``).
    """
    parser.add_argument("--mode", choices=MODES, help="default: the folder's, else rationale")
    parser.add_argument(
        "--max-new-tokens",
        type=count,
        help=f"rationale length cap (paper: {MAX_NEW_TOKENS}); echo mode cuts its copy here",
    )
    parser.add_argument("--temperature", type=temperature, help=">= 0; 0 = greedy (paper: 1)")
    parser.add_argument(
        "--num-rationales", type=count, help="average the embeddings of k rationales (paper: 1)"
    )
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (CPU)")
    parser.add_argument("--seed", type=seed, help="sampling seed (default 0)")
    parser.add_argument(
        "--batch-size",
        type=count,
        help="generated rows per batch (default: a run folder's evaluation.batch_size, else 8)",
    )
    parser.add_argument(
        "--cache-dir", type=output_folder, help="reuse rationales sampled before (SQLite cache)"
    )
    parser.add_argument(
        "--device", type=device, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )


def encoder_settings(args: argparse.Namespace) -> dict:
    """The options given on the command line (unset ones are left to the model folder)."""
    names = (
        "device",
        "mode",
        "max_new_tokens",
        "temperature",
        "num_rationales",
        "seed",
        "batch_size",
        "cache_dir",
    )
    from grace.encoder import EncoderConfig, saved_encoder_settings
    from grace.runs import saved_config, saved_hash

    settings = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    settings |= {"int8": True} if args.int8 else {}
    if args.batch_size is None and saved_hash(args.model):
        # A run folder's profile sized evaluation batches for the machines it is meant for
        # (32-64 rows); the library default of 8 would decode it several times slower.
        settings["batch_size"] = saved_config(args.model).evaluation.batch_size
    try:  # options that are each fine may not fit together, or with the folder's saved ones
        merged = saved_encoder_settings(args.model) | settings
        EncoderConfig(**{name: value for name, value in merged.items() if name != "device"})
    except ValueError as error:
        raise UsageError(str(error)) from None
    return settings


class UsageError(ValueError):
    """Options that contradict one another."""


def distinct_files(**paths: str | None) -> None:
    """Refuse two options that name one file (an output would overwrite the input, or the
    rationales the embeddings)."""
    given = {name: Path(path).expanduser().resolve() for name, path in paths.items() if path}
    names = list(given)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            one, other = given[first], given[second]
            if one == other or (one.exists() and other.exists() and os.path.samefile(one, other)):
                raise UsageError(
                    f"--{first.replace('_', '-')} and --{second.replace('_', '-')} are the same "
                    f"file ({paths[first]}); give each its own."
                )


def outside_model(model: str, **paths: str | None) -> None:
    """Refuse an output inside a local model folder: it could replace the model's own files
    (``--output M/model.safetensors``)."""
    if not Path(model).is_dir():
        return
    folder = Path(model).resolve()
    for name, path in paths.items():
        if path and folder in Path(path).expanduser().resolve().parents:
            raise UsageError(
                f"--{name.replace('_', '-')} {path} lies inside the model folder {model}, "
                "where it could replace the model's files; write it elsewhere."
            )


def run_embed(args: argparse.Namespace) -> None:
    from grace.data import read_texts
    from grace.encoder import GraceEncoder
    from grace.files import atomic_output

    distinct_files(input=args.input, output=args.output, rationales_out=args.rationales_out)
    outside_model(args.model, output=args.output, rationales_out=args.rationales_out)
    texts = read_texts(args.input, skip_blank=False)  # row i of the output is line i
    encoder = GraceEncoder.from_pretrained(args.model, **encoder_settings(args))
    embeddings, rationales = encoder.encode_with_rationales(texts, show_progress_bar=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    import numpy as np

    with atomic_output(args.output, binary=True) as handle:  # np.save(path) would add ".npy"
        np.save(handle, embeddings)
    if args.rationales_out:
        with atomic_output(args.rationales_out) as handle:
            for text, rationale in zip(texts, rationales, strict=True):
                handle.write(json.dumps({"text": text, "rationale": rationale}) + "\n")
    print(f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}")


def run_estimate(args: argparse.Namespace) -> None:
    from grace.config import load_config
    from grace.estimate import estimate, measure_rates

    config = load_config(args.config, args.set)
    print(f"Timing {config.run.model} on this machine (a few seconds to a minute) ...")
    print(estimate(config, *measure_rates(config)))


def run_export(args: argparse.Namespace) -> None:
    from grace.encoder import GraceEncoder
    from grace.export import export_sentence_transformer
    from grace.models import hub_offline

    output = Path(args.output)
    if Path(args.model).is_dir() and output.resolve() == Path(args.model).resolve():
        raise UsageError(f"--output {args.output} is the model folder; choose a new folder.")
    outside_model(args.model, output=args.output)
    if output.is_dir() and any(output.iterdir()):
        raise UsageError(f"--output {args.output} is not empty; choose a new or empty folder.")
    if args.push_to_hub and hub_offline():
        raise UsageError("--push-to-hub needs the hub, but HF_HUB_OFFLINE is set; unset it.")
    encoder = GraceEncoder.from_pretrained(args.model, device="cpu", mode="direct")
    folder = export_sentence_transformer(encoder, output, source=args.model)
    print(
        f"Wrote a sentence-transformers folder to {folder}; load it with "
        f"SentenceTransformer({str(folder)!r}, trust_remote_code=True)."
    )
    if args.push_to_hub:
        from sentence_transformers import SentenceTransformer

        loaded = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
        # The card written with the folder is kept: sentence-transformers would replace it.
        url = loaded.push_to_hub(args.push_to_hub, local_model_path=str(folder), exist_ok=True)
        print(f"Uploaded to {url}")


def run_train(args: argparse.Namespace) -> None:
    from grace.config import ConfigError, load_config
    from grace.train import reuse_finished, train

    overrides = [*args.set, *([f"run.method={args.method}"] if args.method else [])]
    config = load_config(args.config, overrides)
    try:  # the same check as every --output folder, before any model loads
        output_folder(config.run.output_dir)
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"run.output_dir: {error}") from error
    if reuse_finished(config):
        print(f"{config.run.output_dir} holds a finished run with these settings; reused.")
        return
    trainer = train(config)
    print(f"Trained {trainer.state.global_step} steps; model saved in {config.run.output_dir}")


def run_eval(args: argparse.Namespace) -> None:
    from grace.encoder import EncoderConfig, saved_encoder_settings
    from grace.evaluation import evaluate, resolve_tasks, summarize, to_markdown
    from grace.evaluation.model import MINILM

    outside_model(args.model, output=args.output, results_cache=args.results_cache)
    resolve_tasks(args.suite)  # unknown names or an unreachable hub fail before the model loads
    settings = encoder_settings(args)
    variants = {"greedy": args.greedy, "lengths": args.lengths or ()}
    if args.model == MINILM:
        ignored = [f"--{name.replace('_', '-')}" for name in settings]
        ignored += ["--lengths"] * bool(args.lengths) + ["--greedy"] * args.greedy
        if ignored:
            raise UsageError(
                f"{', '.join(ignored)}: {MINILM} is a sentence-transformers encoder, with no "
                "rationales to write; drop them."
            )
        variants = {}
    else:
        # Beside the model's own embedding (the mean of its k draws): each draw when k > 1,
        # the means of fewer draws, greedy and the lengths, from the same generation pass.
        encoding = {k: v for k, v in settings.items() if k != "device"}
        draws = EncoderConfig(**(saved_encoder_settings(args.model) | encoding)).draws
        variants["means"] = tuple(m for m in (2, 4) if m < draws)
    reports = evaluate(
        args.model,
        args.suite,
        label=args.label,
        results_cache=args.results_cache,
        output=args.output,
        memory_mb=args.memory_mb,
        **variants,
        **settings,
    )
    report = reports.main
    alone = len(reports.single_draws()) == 1  # one draw: "(draw 1)" is the main report
    shown = {
        label: r
        for label, r in reports.variants().items()
        if not (alone and label.endswith("(draw 1)"))
    }
    rows = {report["label"]: report["tasks"]} | {r["label"]: r["tasks"] for r in shown.values()}
    print(to_markdown(summarize(rows)))
    print(
        f"{len(report['tasks'])} task{'s' * (len(report['tasks']) != 1)} in {report['seconds']} s"
        + (f" ({len(shown)} variants from the same pass)" if shown else "")
        + (f"; report written to {args.output}" if args.output else "")
    )


def run_reproduce(args: argparse.Namespace) -> None:
    from grace.book.reproduce import notebooks, reproduce

    summary = reproduce(args.profile, args.output, only=args.only, resume=not args.fresh)
    done = sum(record["status"] == "ok" for record in summary["notebooks"].values())
    total = len(notebooks())
    rest = "" if done == total else "; run without --only for the others"
    print(
        f"{done} of {total} notebooks done, {summary['total_seconds']} s in all "
        f"(profile {args.profile}){rest}."
    )


def run_book(args: argparse.Namespace) -> None:
    from grace.book.reproduce import build_book

    print(f"Book built: {build_book(args.executed, args.output)}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # bad arguments (status 2) or --help (status 0)
        return int(stop.code or 0)
    from grace.book.reproduce import ReproduceError
    from grace.config import ConfigError
    from grace.data import DataError
    from grace.encoder import CacheError
    from grace.files import WriteError
    from grace.models import ContextTooLong, ModelLoadError

    try:
        args.run(args)
    except (
        CacheError,
        ConfigError,
        ContextTooLong,
        DataError,
        ModelLoadError,
        ReproduceError,
        UsageError,
        WriteError,
        FileNotFoundError,
    ) as error:
        print(f"grace {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ngrace {args.command}: interrupted; {rerun_hint(args.command)}.", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as error:
        if not disk_full(error):
            raise
        where = f" while writing {error.filename}" if getattr(error, "filename", None) else ""
        print(
            f"grace {args.command}: error: the disk is full{where}; free some space, then "
            f"{rerun_hint(args.command, after_stop=False)}.",
            file=sys.stderr,
        )
        return 2
    return 0


def rerun_hint(command: str, after_stop: bool = True) -> str:
    """What to do after a stop: a run resumes, a reproduce skips what finished."""
    return {
        "train": "run the same command again to resume from the last checkpoint",
        "reproduce": "run it again: the finished notebooks are skipped",
    }.get(command, "nothing was written" if after_stop else "run it again")


def disk_full(error: BaseException) -> bool:
    """A write that failed for want of space: an OSError, or torch's checkpoint writer."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return "PytorchStreamWriter failed writing" in str(error) or "unexpected pos" in str(error)


if __name__ == "__main__":
    sys.exit(main())
