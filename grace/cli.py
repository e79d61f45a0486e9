"""The ``grace`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace",
        description="GRACE: embeddings from an LLM's rationales, trained with GRPO.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed texts from a file into a .npy matrix")
    embed.add_argument("--model", required=True, help="hub id, local folder, or alias")
    embed.add_argument("--input", required=True, help=".txt (one text a line) or .jsonl (text)")
    embed.add_argument("--output", required=True, help="where to write the (N, H) .npy array")
    add_encoder_options(embed)
    embed.add_argument("--rationales-out", help="write each text's rationale to this .jsonl")
    embed.set_defaults(run=run_embed)

    train = commands.add_parser("train", help="train with GRACE (GRPO) or a contrastive baseline")
    train.add_argument("--config", required=True, help="profile (tiny, cpu, colab, paper) or YAML")
    train.add_argument("--method", choices=("grace", "contrastive", "simcse"))
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set output_dir=runs/x (repeatable)",
    )
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser("eval", help="evaluate a model on an mteb suite")
    evaluate.add_argument("--model", required=True, help="hub id, folder, alias, or 'minilm'")
    evaluate.add_argument(
        "--suite", default="offline", help="offline | subset | paper | TASK[,TASK...]"
    )
    evaluate.add_argument("--output", help="write the report (mteb results + summary) here")
    evaluate.add_argument("--label", help="row name in tables (default: the model's name)")
    add_encoder_options(evaluate)
    evaluate.set_defaults(run=run_eval)

    reproduce = commands.add_parser("reproduce", help="run the book's notebooks with papermill")
    reproduce.add_argument("--profile", default="cpu", help="tiny | cpu | colab | paper | YAML")
    reproduce.add_argument("--only", help="notebook numbers to run, e.g. 5,8")
    reproduce.add_argument("--output", help="where executed notebooks and results go")
    reproduce.add_argument("--fresh", action="store_true", help="rerun finished notebooks too")
    reproduce.set_defaults(run=run_reproduce)

    book = commands.add_parser("book", help="build the Jupyter Book (warnings are errors)")
    book.add_argument("--executed", help="executed notebooks to use (default: book/executed)")
    book.add_argument("--output", help="the HTML goes to OUTPUT/_build/html (default: .)")
    book.set_defaults(run=run_book)
    return parser


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """The ``GraceEncoder`` settings shared by the commands that embed text."""
    parser.add_argument("--mode", choices=("rationale", "direct"), default="rationale")
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy rationales")
    parser.add_argument(
        "--num-rationales", type=int, default=1, help="average the embeddings of k rationales"
    )
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache-dir", help="reuse rationales sampled before (SQLite cache)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def encoder_settings(args: argparse.Namespace) -> dict:
    return dict(
        device=args.device,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        num_rationales=args.num_rationales,
        int8=args.int8,
        seed=args.seed,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
    )


def run_embed(args: argparse.Namespace) -> None:
    from grace.data import read_texts
    from grace.encoder import GraceEncoder

    texts = read_texts(args.input)
    encoder = GraceEncoder.from_pretrained(args.model, **encoder_settings(args))
    embeddings, rationales = encoder.encode_with_rationales(texts, show_progress_bar=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, embeddings)
    if args.rationales_out:
        with open(args.rationales_out, "w", encoding="utf-8") as handle:
            for text, rationale in zip(texts, rationales, strict=True):
                handle.write(json.dumps({"text": text, "rationale": rationale}) + "\n")
    print(f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}")


def run_train(args: argparse.Namespace) -> None:
    from grace.config import load_config
    from grace.train import train

    overrides = [*args.set, *([f"method={args.method}"] if args.method else [])]
    config = load_config(args.config, overrides)
    trainer = train(config)
    print(f"Trained {trainer.state.global_step} steps; model saved in {config.output_dir}")


def run_eval(args: argparse.Namespace) -> None:
    from grace.evaluation import GraceMTEBModel, evaluate, minilm_encoder, summarize, to_markdown
    from grace.evaluation.model import MINILM

    if args.model == MINILM:
        model = minilm_encoder()
    else:
        model = GraceMTEBModel(args.model, **encoder_settings(args))
    report = evaluate(model, args.suite, output=args.output, label=args.label)
    print(to_markdown(summarize({report["label"]: report["tasks"]})))
    print(
        f"{len(report['tasks'])} tasks in {report['seconds']} s"
        + (f"; report written to {args.output}" if args.output else "")
    )


def run_reproduce(args: argparse.Namespace) -> None:
    from grace.reproduce import reproduce

    only = [int(n) for n in args.only.split(",")] if args.only else None
    summary = reproduce(args.profile, args.output, only=only, resume=not args.fresh)
    print(f"All notebooks done in {summary['total_seconds']} s (profile {args.profile}).")


def run_book(args: argparse.Namespace) -> None:
    from grace.reproduce import build_book

    print(f"Book built: {build_book(args.executed, args.output)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from grace.config import ConfigError
    from grace.data import DataError
    from grace.models import ModelLoadError
    from grace.reproduce import ReproduceError

    try:
        args.run(args)
    except (ConfigError, DataError, ModelLoadError, ReproduceError, FileNotFoundError) as error:
        print(f"grace {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
