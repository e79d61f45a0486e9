"""Headroom before training: could *any* choice among the policy's own rationales help?

GRPO can only re-weight rationales the policy already samples. So before training, sample K
rationales for every training document, let each reward pick its favourite draw (scored
against the document's training queries and negatives, as in training), embed the document
with that draw, and measure what the held-out queries gain against the greedy rationale. If
even the reward's best-of-K buys nothing on held-out queries, GRPO on that reward has nothing
to amplify on that task; if it does, the gain is an upper bound of what training can learn
by re-weighting (training may also move the weights, which this does not measure).

A task (``grace.data.OfflineTask``) is documents (the policy's prompts), training triples
that point at them, and held-out queries scored against them: by the reciprocal rank of their
document (retrieval), or by a vote of their nearest documents' labels (classification).
``scripts/headroom.py`` runs the three offline tasks and writes ``results/headroom/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from grace.data import OfflineTask
from grace.encoder import GraceEncoder, Variant, mean_of_draws
from grace.prompts import build_prompts, prompt_token_ids
from grace.rewards import FORMULAS, RewardConfig
from grace.validation import clustered_stderr, mean_and_stderr, pessimistic_ranks

REWARDS = tuple(FORMULAS)
NEIGHBOURS = 5  # documents that vote on a held-out query's label


def task_scores(task: OfflineTask, queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Per held-out query: reciprocal rank of its document (``pessimistic_ranks``), or
    1 / 0 for a right / wrong vote of its ``NEIGHBOURS`` nearest documents' labels."""
    similarity = queries @ documents.T
    targets = np.array([target for _, target, _ in task.held_out])
    if task.labels:
        labels = np.array(task.labels)
        nearest = np.argsort(-similarity, axis=1)[:, :NEIGHBOURS]
        votes = labels[nearest].mean(axis=1)
        return ((votes > 0.5).astype(int) == targets).astype(float)
    right = similarity[np.arange(len(targets)), targets]
    return 1.0 / pessimistic_ranks(similarity, right)


# --- the measurement ---------------------------------------------------------------------


@dataclass
class Embedded:
    """One length's embeddings: documents greedy (N, H) and sampled (N, K, H), the anchors and
    held-out queries greedy, all as the encoder writes them; and the direct-mode rows."""

    documents: np.ndarray
    draws: np.ndarray
    queries: np.ndarray
    negatives: np.ndarray
    held_out: np.ndarray
    rationale_share: float
    direct: dict[str, np.ndarray] = field(default_factory=dict)


def embed_task(
    encoder: GraceEncoder, task: OfflineTask, lengths: tuple[int, ...], draws: int
) -> dict[int, Embedded]:
    """Two passes: the documents (greedy and ``draws`` sampled rationales at every length,
    from one prefill), then every other text (greedy, every length). Longer lengths continue
    the shorter ones, so one generation serves them all."""
    greedy = {length: Variant(length, 0.0) for length in lengths}
    sampled = {(length, j): Variant(length, 1.0, j) for length in lengths for j in range(draws)}
    direct = Variant(0)
    docs = encoder.encode_variants(task.documents, [direct, *greedy.values(), *sampled.values()])
    others = sorted(
        {t for q, _, n in task.train for t in (q, n)} | {q for q, _, _ in task.held_out}
    )
    rest = encoder.encode_variants(others, [direct, *greedy.values()])
    row = {text: i for i, text in enumerate(others)}
    doc_row = {text: i for i, text in enumerate(task.documents)}
    config = encoder.config
    prompts = build_prompts(
        encoder.tokenizer, task.documents, config.system_prompt, config.max_input_tokens
    )
    pooled_prompt = np.mean([len(prompt_token_ids(encoder.tokenizer, p)) for p in prompts])
    pooled_prompt -= encoder.prefix_length

    def lookup(encodings, variant, texts):
        return np.stack([encodings.embeddings[variant][row[t]] for t in texts])

    def anchors(variant, texts):  # a negative that is also a document takes the document's
        return np.stack(
            [
                docs.embeddings[variant][doc_row[t]]
                if t in doc_row
                else rest.embeddings[variant][row[t]]
                for t in texts
            ]
        )

    queries = [q for q, _, _ in task.train]
    negatives = [n for _, _, n in task.train]
    held = [q for q, _, _ in task.held_out]
    out = {}
    for length in lengths:
        written = [
            len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
            for j in range(draws)
            for text in docs.rationales[sampled[length, j]]
        ]
        pooled = np.mean(written) + pooled_prompt
        out[length] = Embedded(
            documents=docs.embeddings[greedy[length]],
            draws=np.stack([docs.embeddings[sampled[length, j]] for j in range(draws)], axis=1),
            queries=lookup(rest, greedy[length], queries),
            negatives=anchors(greedy[length], negatives),
            held_out=lookup(rest, greedy[length], held),
            rationale_share=float(np.mean(written) / pooled),  # of the documents' pooled tokens
            direct={
                "documents": docs.embeddings[direct],
                "held_out": lookup(rest, direct, held),
            },
        )
    return out


def draw_rewards(
    task: OfflineTask,
    embedded: Embedded,
    reward: str,
    tau: float,
    cluster_weight: float = RewardConfig.cluster_weight,
) -> np.ndarray:
    """(documents, K): each draw's reward averaged over its document's training triples, as
    ``grace.rewards`` computes it with all the triples in one batch (no length penalty)."""
    config = RewardConfig(
        tau=tau, variant=reward, length_penalty=None, cluster_weight=cluster_weight
    )
    doc_of = np.array([d for _, d, _ in task.train])
    positives = torch.from_numpy(embedded.draws[doc_of])
    terms = FORMULAS[reward](
        torch.from_numpy(embedded.queries),
        positives,
        torch.from_numpy(embedded.negatives),
        torch.zeros(positives.shape[:2], dtype=torch.bool),
        config,
    )
    total = terms.total.numpy()
    sums = np.zeros((len(task.documents), total.shape[1]))
    np.add.at(sums, doc_of, total)
    counts = np.bincount(doc_of, minlength=len(task.documents))[:, None]
    return sums / np.maximum(counts, 1)


def change_row(task: OfflineTask, values: np.ndarray, baseline: np.ndarray) -> dict:
    """A score with its standard error, and its paired change from the baseline with the
    plain and the cluster-bootstrapped standard error."""
    clusters = [cluster for _, _, cluster in task.held_out]
    change = values - baseline
    return {
        "score": mean_and_stderr(values),
        "change": float(change.mean()),
        "change_stderr": mean_and_stderr(change)[1],
        "change_stderr_clustered": clustered_stderr(change, clusters),
    }


def headroom_record(
    task: OfflineTask, embedded: Embedded, length: int, rewards: tuple[str, ...], tau: float = 0.1
) -> dict:
    """What each way of choosing a document's rationale scores on the held-out queries."""
    count, draws = embedded.draws.shape[:2]
    every = np.arange(count)

    def score(documents: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        return task_scores(task, embedded.held_out if queries is None else queries, documents)

    baseline = score(embedded.documents)
    choices = {
        "greedy rationale": embedded.documents,
        "one sampled draw": embedded.draws[:, 0],
        f"mean of {draws} draws": mean_of_draws(embedded.draws),
    }
    spread = {}
    for reward in rewards:
        values = draw_rewards(task, embedded, reward, tau)
        choices[f"best of {draws} by {reward}"] = embedded.draws[every, values.argmax(axis=1)]
        choices[f"worst of {draws} by {reward}"] = embedded.draws[every, values.argmin(axis=1)]
        within = values.std(axis=1, ddof=1).mean()
        spread[reward] = {"reward": float(within), "cosine": float(within * tau)}
    # What the paper's choice is made of: its reward less the term that pays a draw for
    # resembling its siblings, and that term's own favourite, the draw nearest their mean.
    plain = draw_rewards(task, embedded, "paper", tau, cluster_weight=0.0)
    choices[f"best of {draws} by paper without its cluster term"] = embedded.draws[
        every, plain.argmax(axis=1)
    ]
    centre = np.einsum("nkh,nh->nk", embedded.draws, mean_of_draws(embedded.draws))
    choices[f"nearest the mean of {draws}"] = embedded.draws[every, centre.argmax(axis=1)]
    # A probe, not a result: each document's draw chosen by its own held-out queries' cosine.
    targets = np.array([t for _, t, _ in task.held_out])
    if not task.labels:
        near = np.einsum("qh,qkh->qk", embedded.held_out, embedded.draws[targets])
        liked = np.zeros((count, draws))
        np.add.at(liked, targets, near)
        oracle = embedded.draws[every, liked.argmax(axis=1)]
        choices[f"oracle: best of {draws} by the held-out queries (upper bound)"] = oracle
    rows = {name: change_row(task, score(docs), baseline) for name, docs in choices.items()}
    direct = score(embedded.direct["documents"], embedded.direct["held_out"])
    rows["direct (no rationale, queries direct too)"] = change_row(task, direct, baseline)
    return {
        "task": task.name,
        "description": task.description,
        "metric": task.metric,
        "chance": task.chance,
        "rationale_tokens": length,
        "draws": draws,
        "documents": count,
        "training_queries": len(task.train),
        "held_out_queries": len(task.held_out),
        "clusters": len({c for _, _, c in task.held_out}),
        "cluster": task.cluster_name,
        "rationale_share": embedded.rationale_share,
        "tau": tau,
        "rows": rows,
        "reward_spread": spread,
    }


def measure_headroom(
    encoder: GraceEncoder,
    task: OfflineTask,
    lengths: tuple[int, ...] = (32, 64),
    draws: int = 8,
    rewards: tuple[str, ...] = REWARDS,
) -> list[dict]:
    """One record per length (``headroom_record``), with the seconds the embedding took."""
    started = time.perf_counter()
    embedded = embed_task(encoder, task, lengths, draws)
    seconds = round(time.perf_counter() - started, 1)
    return [
        headroom_record(task, embedded[length], length, rewards) | {"seconds": seconds}
        for length in lengths
    ]


def change_cell(row: dict | None, sigmas: float) -> tuple[str, bool]:
    """``+1.23 ± 0.45`` (x 100, clustered error), and whether it is beyond ``sigmas`` errors."""
    if row is None:
        return "–", False
    change, error = row["change"], row["change_stderr_clustered"]
    return f"{100 * change:+.2f} ± {100 * error:.2f}", change > sigmas * error


def headroom_markdown(records: list[dict], sigmas: float = 3.0) -> str:
    """One row per task and length: the greedy score beside chance, and what each reward's
    best-of-K (and the oracle) changes on the held-out queries, x 100 with its clustered
    standard error; a change beyond ``sigmas`` of them is headroom."""
    rewards = list(records[0]["reward_spread"]) if records else []
    head = ["task", "tokens", "rationale share", "greedy (chance)"]
    head += [f"best by {r}" for r in rewards] + ["oracle", "spread (cosine)", "headroom"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for record in records:
        rows, draws = record["rows"], record["draws"]
        best = [change_cell(rows.get(f"best of {draws} by {r}"), sigmas) for r in rewards]
        oracle = [change_cell(row, sigmas) for n, row in rows.items() if n.startswith("oracle")]
        oracle = oracle[0] if oracle else change_cell(None, sigmas)
        greedy = rows["greedy rationale"]["score"][0]
        spread = " / ".join(f"{record['reward_spread'][r]['cosine']:.3f}" for r in rewards)
        found = [r for r, (_, beyond) in zip(rewards, best, strict=True) if beyond]
        cells = [
            record["task"],
            str(record["rationale_tokens"]),
            f"{100 * record['rationale_share']:.0f} %",
            f"{100 * greedy:.2f} ({100 * record['chance']:.2f})",
            *[text for text, _ in best],
            oracle[0],
            spread,
            ", ".join(found) or "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The rows of ``headroom_parts_markdown``, as ``headroom_record`` names them for K draws.
PARTS = {
    "mean of draws": "mean of {k} draws",
    "nearest their mean": "nearest the mean of {k}",
    "best by paper": "best of {k} by paper",
    "best by paper without its cluster term": "best of {k} by paper without its cluster term",
}


def headroom_parts_markdown(records: list[dict], sigmas: float = 3.0) -> str:
    """Per task and length, the paper's best-of-K beside what it may be made of: the mean of
    the K draws (no choice), the draw nearest that mean (what the cluster term prefers) and
    the paper's reward without its cluster term; x 100, paired changes from greedy with their
    clustered standard errors. Records made before these rows existed show a dash."""
    head = ["task", "tokens", *PARTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for record in records:
        rows, k = record["rows"], record["draws"]
        cells = [change_cell(rows.get(name.format(k=k)), sigmas)[0] for name in PARTS.values()]
        lines.append(
            "| " + " | ".join([record["task"], str(record["rationale_tokens"]), *cells]) + " |"
        )
    return "\n".join(lines)
