import hashlib
import json
import math

import mteb
import numpy as np
import pandas as pd
import pytest
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType

from grace.cli import main
from grace.encoder import GraceEncoder
from grace.evaluation import (
    PAPER_TASKS,
    SUBSET_TASKS,
    GraceMTEBModel,
    HubRequired,
    TextEncoder,
    bar_chart,
    evaluate,
    minilm_encoder,
    resolve_tasks,
    suite_task_names,
    suite_tasks,
    summarize,
    to_markdown,
    with_paper,
)
from grace.evaluation.model import model_meta
from grace.evaluation.tasks import OFFLINE_TASKS

SCORE_RANGE = {"STS": (-1.0, 1.0)}


def random_encoder() -> TextEncoder:
    """Embeddings drawn from a text's hash: same text, same vector; no meaning at all."""

    def encode(texts, batch_size=None):
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(64) for s in seeds])

    return TextEncoder(encode, model_meta("test/random", "1", 64, None))


@pytest.fixture(scope="module")
def random_report():
    return evaluate(random_encoder(), "offline").main


def test_every_offline_task_scores_in_range_with_tiny_random(tiny, tmp_path):
    model = GraceMTEBModel(GraceEncoder(*tiny), max_new_tokens=2, batch_size=64)
    report = evaluate(model, "offline", output=tmp_path / "tiny.json").main
    assert {r["task"] for r in report["tasks"]} == {t.metadata.name for t in OFFLINE_TASKS}
    for record in report["tasks"]:
        low, high = SCORE_RANGE.get(record["type"], (0.0, 1.0))
        assert low <= record["score"] <= high, record
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["tasks"] == report["tasks"] and len(saved["mteb"]) == len(OFFLINE_TASKS)


def test_minilm_beats_random_embeddings_on_every_offline_task(random_report):
    minilm = {r["task"]: r["score"] for r in evaluate(minilm_encoder(), "offline").main["tasks"]}
    for record in random_report["tasks"]:
        assert minilm[record["task"]] > record["score"] + 0.02, record["task"]


def test_summary_by_hand():
    records = [
        {"task": "A", "type": "STS", "score": 0.5},
        {"task": "B", "type": "STS", "score": 0.7},
        {"task": "C", "type": "Retrieval", "score": 0.3},
    ]
    row = summarize({"run": records}).loc["run"]
    assert row["STS"] == pytest.approx(60.0) and row["Retr"] == pytest.approx(30.0)
    assert math.isnan(row["Cls"])
    assert row["Mean (Task)"] == pytest.approx((50 + 70 + 30) / 3)  # over tasks
    assert row["Mean (TaskType)"] == pytest.approx((60 + 30) / 2)  # over categories
    table = with_paper(summarize({"run": records}))
    assert "paper: Qwen2.5-1.5B GRACE sup." in table.index
    assert table.loc["paper: Qwen2.5-1.5B GRACE sup.", "Avg (paper, as printed)"] == 45.48
    markdown = to_markdown(table)
    assert "| run | 30.00 |" in markdown and markdown.count("\n") == len(table) + 1
    header = to_markdown(summarize({"run": records})).splitlines()[0]
    assert "STS" in header and "Retr" in header and "Cls" not in header and "Summ" not in header


def test_bar_chart_draws_one_bar_per_row_and_category(tmp_path):
    records = {
        "a": [{"task": "A", "type": "STS", "score": 0.5}],
        "b": [{"task": "A", "type": "STS", "score": 0.2}],
    }
    figure = bar_chart(summarize(records), tmp_path / "chart.png", title="test")
    assert (tmp_path / "chart.png").stat().st_size > 1000
    heights = sorted(round(p.get_height(), 3) for p in figure.axes[0].patches)
    assert heights == [20.0, 20.0, 20.0, 50.0, 50.0, 50.0]  # STS + the two overall means


def test_paper_and_subset_task_names_resolve():
    names = [n for names in PAPER_TASKS.values() for n in names]
    assert len(names) == 56 and len(SUBSET_TASKS) == 9
    found = {t.metadata.name: t.metadata.type for t in mteb.get_tasks(tasks=names + SUBSET_TASKS)}
    assert set(names) | set(SUBSET_TASKS) <= set(found)
    for category, members in PAPER_TASKS.items():
        assert {found[n] for n in members} == {category}


def test_mteb_eng_suite_is_mtebs_english_benchmark():
    benchmark = {t.metadata.name: t for t in mteb.get_benchmark("MTEB(eng, v1)").tasks}
    suite = {t.metadata.name: t for t in suite_tasks("mteb-eng")}
    assert list(suite) == list(benchmark) and len(suite) == 56
    for name, task in suite.items():
        assert (task.eval_splits, task.hf_subsets) == (
            benchmark[name].eval_splits,
            benchmark[name].hf_subsets,
        )
    assert suite["STS17"].hf_subsets == ["en-en"] and suite["MSMARCO"].eval_splits == ["dev"]


@pytest.mark.parametrize("suite", ["paper", "subset"])
def test_paper_suites_score_the_test_split_only_as_the_reference(suite):
    tasks = {t.metadata.name: t for t in suite_tasks(suite)}
    assert sorted(tasks) == sorted(suite_task_names(suite))
    assert all(task.eval_splits == ["test"] for task in tasks.values())
    # The reference names tasks without a language filter: every subset is scored.
    assert "ko-ko" in tasks["STS17"].hf_subsets
    if suite == "paper":
        assert tasks["MSMARCO"].eval_splits == ["test"]
        assert len(tasks["MassiveIntentClassification"].hf_subsets) > 50


def test_hub_suites_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubRequired, match="HF_HUB_OFFLINE is set"):
        resolve_tasks("subset")
    assert len(resolve_tasks("LeeSTS,RTMovieClustering")) == 2


def test_model_meta_names_weights_and_settings(tiny):
    direct = GraceMTEBModel(GraceEncoder(*tiny), mode="direct")
    rationale = GraceMTEBModel(GraceEncoder(*tiny), mode="rationale")
    assert direct.mteb_model_meta.similarity_fn_name is ScoringFunction.COSINE
    assert direct.mteb_model_meta.revision != rationale.mteb_model_meta.revision
    assert direct.mteb_model_meta.name.endswith("-direct")


def test_each_distinct_text_is_encoded_once():
    seen = []
    encoder = TextEncoder(
        lambda texts, batch_size: (
            seen.extend(texts) or np.eye(4)[len(seen) - len(texts) : len(seen)]
        ),
        model_meta("test/count", "1", 4, None),
    )
    batches = [{"text": ["a", "b"]}, {"text": ["a", "c", "b"]}]
    out = encoder.encode(batches, task_metadata=None, hf_split="test", hf_subset="default")
    assert seen == ["a", "b", "c"]
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[4])
    again = encoder.encode([{"text": ["c", "d"]}], task_metadata=None, hf_split="t", hf_subset="d")
    assert seen == ["a", "b", "c", "d"] and np.array_equal(again[0], out[3])


def test_cli_eval_offline_subset_of_tasks(tmp_path, capsys):
    output = tmp_path / "report.json"
    code = main(
        [
            "eval",
            "--model",
            "tiny-random",
            "--mode",
            "direct",
            "--suite",
            "LeeSTS",
            "--output",
            str(output),
            "--label",
            "tiny direct",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "| tiny direct |" in capsys.readouterr().out
    assert json.loads(output.read_text())["tasks"][0]["task"] == "LeeSTS"


def test_cli_eval_hub_suite_offline_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", "tiny-random", "--suite", "paper"]) == 2
    assert "needs 56 tasks" in capsys.readouterr().err


def test_a_kept_report_is_measured_once_and_its_file_named_safely(tmp_path):
    from grace.evaluation import report_path
    from grace.evaluation.suites import kept_report
    from grace.runs import report_key

    label = "GRACE supervised (draw 1), +CL/x"
    path = report_path(tmp_path, label)
    assert path.name == "GRACE_supervised_draw_1_plusCL-x.json"
    built = []
    make = lambda: built.append(1) or random_encoder()  # noqa: E731
    key = report_key("random", "LeeSTS", num_rationales=1)
    first = kept_report(tmp_path, label, make, "LeeSTS", key)
    second = kept_report(tmp_path, label, make, "LeeSTS", key)
    assert built == [1] and path.exists()
    assert first["tasks"] == second["tasks"] and first["label"] == label
    # Other settings (here the draws) under the same file name: measured again, not reused.
    third = kept_report(tmp_path, label, make, "LeeSTS", key | {"settings": {"draws": 4}})
    assert built == [1, 1] and third["key"]["settings"] == {"draws": 4}
    kept_report(None, label, make, "LeeSTS", key)  # no folder: measured, kept nowhere
    assert built == [1, 1, 1]


def test_report_keys_name_a_run_by_its_settings(tmp_path):
    from grace.config import load_config
    from grace.runs import prepare_run_folder, report_key

    config = load_config("tiny", {"output_dir": str(tmp_path / "run")})
    prepare_run_folder(config)
    key = report_key(str(tmp_path / "run"), "offline", max_new_tokens=4)
    assert key["model"] == config.settings_hash()
    assert report_key("smollm2-135m-instruct", "offline")["model"] == "smollm2-135m-instruct"


def test_report_keys_keep_only_the_settings_a_mode_reads():
    from grace.runs import report_key

    sampled = {"max_new_tokens": 32, "temperature": 1.0, "seed": 0, "num_rationales": 2}
    other = {"max_new_tokens": 16, "temperature": 0.0, "seed": 3, "num_rationales": 1}

    def same(mode: str, change: dict) -> bool:
        return report_key("m", "s", mode=mode, **sampled) == report_key(
            "m", "s", mode=mode, **(sampled | change)
        )

    # A rationale is sampled: every knob names another report.
    assert not any(same("rationale", {k: v}) for k, v in other.items())
    # Echo samples nothing; only the cap, where the copied text is cut, changes its scores.
    assert all(same("echo", {k: v}) for k, v in other.items() if k != "max_new_tokens")
    assert not same("echo", {"max_new_tokens": 16})
    assert same("direct", other)


def test_every_offline_score_gets_a_bootstrap_interval(random_report):
    scores = {r["task"]: r["score"] for r in random_report["tasks"]}
    intervals = random_report["intervals"]
    assert set(intervals) == set(scores)
    for task, interval in intervals.items():
        low, high = interval["ci95"]
        assert low <= scores[task] <= high and high - low > 0, (task, interval)
    # Where the recomputation is the same metric, it matches mteb's score exactly.
    for task in ("RTReviewPlotRetrieval", "RTReviewPlotReranking", "LeeSTS"):
        assert intervals[task]["recomputed"] == pytest.approx(scores[task], abs=1e-5)  # mteb rounds


def test_in_domain_retrieval_has_hundreds_of_queries_and_unseen_distractors():
    from grace.data import movie_triples
    from grace.evaluation.tasks import RTReviewPlotRetrieval, distractor_plots

    task = RTReviewPlotRetrieval()
    task.load_data()
    split = task.dataset["default"]["test"]
    assert len(split["queries"]) >= 400 and len(split["corpus"]) == 100
    seen = {t[f] for t in movie_triples() + movie_triples("validation")
            for f in ("positive", "negative")}  # fmt: skip
    assert not {" ".join(p.split()) for p in seen} & set(distractor_plots())
    assert all(len(docs) == 1 for docs in split["relevant_docs"].values())


def test_table_rows_carry_mean_std_and_interval():
    from grace.evaluation.results import table_row

    def report(retrieval, sts):
        return {
            "tasks": [
                {"task": "R", "type": "Retrieval", "score": retrieval},
                {"task": "S", "type": "STS", "score": sts},
            ],
            "intervals": {"R": {"ci95": [retrieval - 0.1, retrieval + 0.1]}},
        }

    row = table_row("two draws", [report(0.2, 0.5), report(0.4, 0.5)])
    assert row["tasks"]["R"]["score"] == pytest.approx(30.0)
    assert row["tasks"]["R"]["std"] == pytest.approx(14.142, abs=1e-3)
    assert row["tasks"]["R"]["ci95"] == pytest.approx([20.0, 40.0])
    assert row["tasks"]["S"]["ci95"] is None  # no interval recorded for it
    assert row["mean_task"]["score"] == pytest.approx(40.0)  # (30 + 50) / 2
    single = table_row("one", [report(0.2, 0.5)])
    assert single["tasks"]["R"]["std"] is None and single["mean_task"]["std"] is None

    # As the book's pages print the rows: std only with draws, the interval where recorded.
    from grace.evaluation.results import table_json_markdown

    lines = table_json_markdown([row, single]).splitlines()
    assert lines[0] == "| row | R | S | Mean (Task) |"
    assert lines[2] == "| two draws | 30.00 ± 14.14 [20.0, 40.0] | 50.00 ± 0.00 | 40.00 ± 7.07 |"
    assert lines[3] == "| one | 20.00 [10.0, 30.0] | 50.00 | 35.00 |"


def test_headline_figure_plots_curves_and_every_row_with_its_interval():
    import matplotlib

    matplotlib.use("Agg")
    from grace.evaluation.results import headline_figure

    rows = [
        {"label": name, "tasks": {"R": {"score": x, "std": None, "ci95": [x - 2, x + 2]}}}
        for name, x in (("base", 10.0), ("+CL", 30.0))
    ]
    curve = {"steps": [0, 4], "values": [0.1, 0.3], "stderr": [0.02, 0.03]}
    fig = headline_figure(rows, {"contrastive": curve}, "R", chance=0.05)
    left, right = fig.axes
    assert [t.get_text() for t in right.get_yticklabels()] == ["base", "+CL"]
    assert list(left.lines[0].get_ydata()) == [0.1, 0.3]
    points = [bar.lines[0].get_xdata()[0] for bar in right.containers]  # one errorbar per row
    assert points == [10.0, 30.0]


def test_a_suite_with_a_results_cache_resumes_task_by_task(tiny, tmp_path):
    encoded = []

    class Counting(GraceMTEBModel):
        def __init__(self):
            super().__init__(GraceEncoder(*tiny), mode="direct")
            inner = self.encode_texts
            self.encode_texts = lambda texts, size: encoded.extend(texts) or inner(texts, size)

    cache = tmp_path / "mteb-cache"
    first = evaluate(Counting(), "LeeSTS", results_cache=cache).main  # as if stopped after LeeSTS
    lee_texts = set(encoded)
    encoded.clear()
    both = evaluate(Counting(), "LeeSTS,RTMovieClustering", results_cache=cache).main
    assert encoded and not lee_texts & set(encoded)  # LeeSTS was read back, not embedded
    scores = {r["task"]: r["score"] for r in both["tasks"]}
    assert scores["LeeSTS"] == pytest.approx(first["tasks"][0]["score"], abs=1e-6)  # mteb rounds
    assert "LeeSTS" not in both["intervals"] and "RTMovieClustering" in both["intervals"]
    encoded.clear()
    evaluate(Counting(), "LeeSTS")  # no cache: measured again
    assert lee_texts <= set(encoded)


def test_mtebs_batch_size_and_prompt_types_reach_the_encoder():
    calls = []
    encoder = TextEncoder(
        lambda texts, batch_size: (
            calls.append((list(texts), batch_size)) or np.eye(4)[: len(texts)]
        ),
        model_meta("test/prompts", "1", 4, None),
        batch_size=7,
        prompts={"query": "query: "},
    )
    batches = [{"text": ["a", "b"]}]
    encoder.encode(batches, task_metadata=None, hf_split="t", hf_subset="d")
    for prompt_type in (PromptType.query, PromptType.document):
        split = dict(task_metadata=None, hf_split="t", hf_subset="d", prompt_type=prompt_type)
        encoder.encode(batches, **split, batch_size=16)
    # Documents take no prompt: the same texts as before, already encoded.
    assert calls == [(["a", "b"], 7), (["query: a", "query: b"], 16)]
    with pytest.raises(ValueError, match="prompt types are query and document"):
        TextEncoder(lambda t, b: None, model_meta("test/x", "1", 4, None), prompts={"passage": "p"})


def test_grace_model_card_and_batch_size_come_from_the_encoder(tiny):
    model = GraceMTEBModel(GraceEncoder(*tiny), mode="direct", batch_size=5)
    meta = model.mteb_model_meta
    assert model.batch_size == 5
    assert meta.max_tokens == tiny[0].config.max_position_embeddings
    assert meta.memory_usage_mb == round(tiny[0].num_parameters() * 4 / 2**20)
    assert meta.reference == "https://arxiv.org/abs/2510.04506"
    prompted = GraceMTEBModel(GraceEncoder(*tiny), mode="direct", prompts={"query": "q: "})
    assert prompted.mteb_model_meta.revision != meta.revision


def test_bar_chart_draws_error_bars_only_for_rows_that_have_them(tmp_path):
    records = {
        "sampled": [{"task": "A", "type": "STS", "score": 0.5}],
        "direct": [{"task": "A", "type": "STS", "score": 0.2}],
    }
    table = summarize(records)
    errors = pd.DataFrame({column: [1.5] for column in table.columns}, index=["sampled"])
    figure = bar_chart(table, errors=errors)
    # One error bar (a LineCollection) per bar of the sampled row: STS and the two overall means.
    bars = [c for c in figure.axes[0].containers if getattr(c, "errorbar", None) is not None]
    assert len(bars) == 1 and bars[0].get_label() == "sampled"
    segments = bars[0].errorbar.lines[2][0].get_segments()
    assert len(segments) == 3 and all(abs(s[1][1] - s[0][1] - 3.0) < 1e-9 for s in segments)


def test_embeddings_past_the_ram_limit_are_kept_on_disk_and_read_back_unchanged(tmp_path):
    from grace.evaluation.model import EmbeddingMemory

    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(50)]
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    in_ram, on_disk = EmbeddingMemory(), EmbeddingMemory(ram_mb=1e-4, folder=tmp_path)
    for memory in (in_ram, on_disk):
        memory.update(texts[:30], vectors[:30])
        memory.update(texts[20:], vectors[20:] + 1)  # texts 20-29 keep their first vector
    assert in_ram.path is None and on_disk.path is not None and on_disk.path.parent == tmp_path
    assert on_disk.path.stat().st_size == 50 * 8 * 4  # each text once
    order = texts[::-1] + texts[:3]
    expected = np.concatenate([vectors[:30], vectors[30:] + 1])
    for memory in (in_ram, on_disk):
        assert len(memory) == 50 and "text 7" in memory and "text 77" not in memory
        rows = [texts.index(t) for t in order]
        np.testing.assert_array_equal(memory.stack(order), expected[rows])
    with pytest.raises(KeyError, match="never embedded"):
        on_disk.stack(["text 77"])


def test_an_encoder_past_its_memory_limit_scores_what_one_in_ram_does():
    from grace.evaluation.model import TextEncoder, model_meta

    def encode(texts, batch_size):
        return np.stack([[len(t), t.count("a"), 1.0] for t in texts]).astype(np.float32)

    meta = model_meta("test/lengths", "1", 3, None)
    small, large = TextEncoder(encode, meta, memory_mb=1e-5), TextEncoder(encode, meta)
    batches = [{"text": ["a", "bb", "a"]}, {"text": ["aaa", "bb"]}]
    shown = [
        m.encode(batches, task_metadata=None, hf_split="test", hf_subset="default")
        for m in (small, large)
    ]
    assert small.memory.path is not None and large.memory.path is None
    np.testing.assert_array_equal(shown[0], shown[1])
    assert shown[0].shape == (5, 3)


def test_a_trained_folder_encodes_by_its_saved_settings_alone(tmp_path, monkeypatch):
    """Only machine settings are passed for a folder: its encoder_config.json decides how it
    embeds, and the report is the one the same settings spelled out would give (same key)."""
    from grace.encoder import EncoderConfig, save_encoder_settings
    from grace.models import load_model

    folder = tmp_path / "trained"
    model, tokenizer = load_model("tiny-random", device="cpu")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    saved = {"mode": "rationale", "max_new_tokens": 2, "num_rationales": 2, "seed": 3}
    save_encoder_settings(folder, EncoderConfig(**saved, max_input_tokens=12))
    results = tmp_path / "results"
    alone = evaluate(str(folder), "LeeSTS", label="trained", folder=results, batch_size=64)
    assert alone.main["key"]["settings"] | saved == alone.main["key"]["settings"]
    assert set(alone.draws) == {"trained (draw 1)", "trained (draw 2)", "trained (mean of 2)"}
    spelled = saved | {"max_input_tokens": 12, "batch_size": 64}
    with monkeypatch.context() as patch:  # read back: no model is loaded
        patch.setattr(GraceEncoder, "from_pretrained", None)
        again = evaluate(str(folder), "LeeSTS", label="trained", folder=results, **spelled)
    assert again.main["key"] == alone.main["key"]
    other = evaluate(str(folder), "LeeSTS", label="trained", folder=results, seed=4, batch_size=64)
    assert other.main["key"] != alone.main["key"]  # an override is a new report


def test_evaluate_refuses_variants_it_cannot_make():
    with pytest.raises(ValueError, match="writes no rationales"):
        evaluate("minilm", "LeeSTS", greedy=True)
    with pytest.raises(ValueError, match="with direct mode"):
        evaluate("tiny-random", "LeeSTS", mode="direct", lengths=[0, 4])
    with pytest.raises(ValueError, match="with single_pass=False"):
        evaluate("tiny-random", "LeeSTS", single_pass=False, greedy=True)
    with pytest.raises(ValueError, match="exceed the rationale cap"):
        evaluate("tiny-random", "LeeSTS", max_new_tokens=4, lengths=[8])


def test_evaluate_past_its_memory_limit_scores_what_it_does_in_ram(capsys):
    settings = {"mode": "rationale", "max_new_tokens": 2, "num_rationales": 2, "batch_size": 64}
    in_ram = evaluate("tiny-random", "LeeSTS", greedy=True, **settings)
    on_disk = evaluate("tiny-random", "LeeSTS", greedy=True, memory_mb=1e-6, **settings)
    for a, b in [(in_ram.main, on_disk.main), (in_ram.greedy, on_disk.greedy)]:
        assert a["tasks"] == b["tasks"]
    assert main(["eval", "--model", "minilm", "--suite", "LeeSTS", "--memory-mb", "0"]) == 2
    assert "--memory-mb: must be at least 1" in capsys.readouterr().err
