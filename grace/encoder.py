"""GraceEncoder: texts in, unit-length embeddings out, the way GRACE makes them.

``rationale`` mode (the paper): the policy writes a rationale for each text, and the chat
prompt plus rationale is mean-pooled. ``direct`` mode pools the chat prompt alone, the
no-reasoning baseline. ``echo`` mode writes the text itself as the rationale (cut to
``max_new_tokens``), the control for a policy that has learned to copy its input: repeating a
text lets every token of the copy attend to the whole text (echo embeddings, Springer et al.
2024). The interface follows sentence-transformers' ``encode``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from grace.constants import MAX_NEW_TOKENS, MODES
from grace.files import write_text_atomically
from grace.models import (
    ModelLoadError,
    check_fits,
    load_model,
    model_fingerprint,
    quantize_int8,
)
from grace.prompts import SYSTEM_PROMPT, build_prompts, system_prefix_length
from grace.rationale import (
    Branch,
    Rollouts,
    SamplingConfig,
    embed_rollouts,
    eos_token_ids,
    generate_rationales,
    generate_shared,
    rollouts_from_completions,
)
from grace.sections import build_section


@dataclass(kw_only=True)
class EncoderConfig:
    """How texts become embeddings. Defaults are the paper's inference settings."""

    mode: str = "rationale"
    max_new_tokens: int = MAX_NEW_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_input_tokens: int = 1024
    pooling: str = "mean"
    single_pass: bool = True  # pool the states of generation itself, no second forward pass
    num_rationales: int = 1  # k > 1: average the embeddings of k sampled rationales per text
    int8: bool = False  # dynamic int8 quantisation of the linear layers (CPU inference only)
    batch_size: int = 8
    cache_dir: str | None = None  # folder of the on-disk rationale cache; None disables it
    system_prompt: str = SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; choose one of {MODES}.")
        for name in ("num_rationales", "batch_size", "max_input_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}.")
        SamplingConfig(  # checks those three
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens
        )
        if self.draws > self.batch_size:
            raise ValueError(
                f"num_rationales={self.num_rationales} is more than batch_size={self.batch_size}: "
                "a text's rationales are sampled together, in one batch. Raise batch_size or "
                "lower num_rationales."
            )

    @property
    def draws(self) -> int:
        """How many rationales are sampled per text (1 in direct and echo mode and for greedy
        decoding)."""
        greedy = self.temperature == 0
        return 1 if self.mode != "rationale" or greedy else self.num_rationales

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Variant:
    """One embedding per text, as ``GraceEncoder.encode_variants`` makes it.

    Draw ``draw`` of a rationale sampled at ``temperature`` (None: the encoder's; 0: greedy)
    with at most ``max_new_tokens`` tokens, pooled with its prompt: what an encoder with those
    settings returns as draw ``draw`` of ``encode_draws``. ``max_new_tokens=0`` is the prompt
    alone (direct mode).
    """

    max_new_tokens: int
    temperature: float | None = None
    draw: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.draw < 0:
            raise ValueError(f"max_new_tokens and draw must be >= 0, got {self}.")


@dataclass
class Encodings:
    """``encode_variants`` output: per variant, (N, H) unit embeddings, (N,) cap-hit flags
    (no EOS within the cap; False in direct mode), the N rationales, and the seconds of the
    shared pass that variant alone needed (the prefill, ``prefill_seconds``, plus its rows'
    decoding, each step's time split evenly over the rows it advanced)."""

    embeddings: dict[Variant, np.ndarray]
    hit_cap: dict[Variant, np.ndarray]
    rationales: dict[Variant, list[str]]
    seconds: dict[Variant, float]
    prefill_seconds: float = 0.0


class CacheError(RuntimeError):
    """The rationale cache cannot be read or written; the message names the file and the fix."""


class RationaleCache:
    """Completion ids on disk (SQLite), keyed by model, prompt, sampling settings, seed, draw.

    A key determines its rationale (``generate_rationales`` seeds each row from it), so a
    cache hit returns exactly what sampling would have written, whatever else was cached.
    A file that is not a readable cache is moved aside and rebuilt, with a warning; a bad
    row is sampled again and overwritten.
    """

    VERSION = 2  # bump when the same key would sample a different rationale (v2: per-row RNG)

    def __init__(self, folder: str | Path, vocab_size: int) -> None:
        self.path = Path(folder) / "rationales.sqlite"
        self.vocab_size = vocab_size
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        except sqlite3.DatabaseError as error:
            if any(cause in str(error) for cause in ("locked", "unable to open", "disk is full")):
                raise CacheError(  # not the file's fault: it is kept as it is
                    f"Cannot open the rationale cache {self.path} ({error})."
                ) from error
            aside = self.path.with_name(self.path.name + ".corrupt")
            warnings.warn(
                f"{self.path} is not a readable rationale cache ({error}); moved it to {aside} "
                "and started an empty cache.",
                stacklevel=3,
            )
            self.path.replace(aside)
            self.db = self._open()
        except OSError as error:
            raise CacheError(f"Cannot create the rationale cache {self.path}: {error}") from error

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)  # other processes may be writing
        try:
            db.execute("CREATE TABLE IF NOT EXISTS rationales (key TEXT PRIMARY KEY, ids TEXT)")
            db.execute("SELECT key, ids FROM rationales LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @classmethod
    def key(cls, model_id: str, prompt: str, sampling: SamplingConfig, draw: int) -> str:
        fields = [cls.VERSION, model_id, prompt, asdict(sampling), draw]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> list[int] | None:
        """The stored ids, or None when absent or not a list of token ids (a warning)."""
        with self._failures():
            row = self.db.execute("SELECT ids FROM rationales WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            ids = json.loads(row[0])
        except (TypeError, ValueError):
            ids = None
        valid = isinstance(ids, list) and all(
            type(i) is int and 0 <= i < self.vocab_size for i in ids
        )
        if not valid:
            # One message for all bad rows: Python shows a repeated warning once.
            warnings.warn(
                f"{self.path} holds rows that are not token ids; they are sampled again.",
                stacklevel=3,
            )
            return None
        return ids

    def put(self, items: dict[str, list[int]]) -> None:
        rows = [(key, json.dumps(ids)) for key, ids in items.items()]
        with self._failures(), self.db:
            self.db.executemany("INSERT OR REPLACE INTO rationales VALUES (?, ?)", rows)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """SQLite errors after opening (a file damaged mid-run, a full disk) name the fix."""
        try:
            yield
        except sqlite3.Error as error:
            fix = "Free some space" if "disk is full" in str(error) else "Delete it"
            raise CacheError(
                f"The rationale cache {self.path} failed ({error}). {fix}, or run without "
                "a cache (no --cache-dir; cache_dir=None)."
            ) from error


class GraceEncoder:
    """Embeds texts with a causal LM as GRACE does; see ``EncoderConfig`` for the knobs.

    Empty or whitespace-only texts are encoded as the empty string: the chat template still
    gives real tokens to pool, so their embedding is finite and unit-length (one warning).
    A sampled rationale depends only on the model, its text, the sampling settings, ``seed``
    and its draw number: not on batching, input order, the cache or other processes.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: EncoderConfig | None = None,
        **overrides,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = replace(config or EncoderConfig(), **overrides)
        if self.config.int8 and not hasattr(model.config, "quantized_from"):
            raise ValueError(
                "int8=True needs a quantised model: load it with "
                "GraceEncoder.from_pretrained(..., int8=True) or grace.models.quantize_int8."
            )
        self.prefix_length = system_prefix_length(tokenizer, self.config.system_prompt)
        new = 0 if self.config.mode == "direct" else self.config.max_new_tokens
        check_fits(
            model,
            self.prefix_length,
            self.config.max_input_tokens,
            new,
            "max_input_tokens + max_new_tokens",
        )
        self.cache = None
        if self.config.cache_dir:
            self.cache = RationaleCache(self.config.cache_dir, model.config.vocab_size)
        # Cache keys name the weights, so a retrained model never reads stale rationales.
        self.model_id = model_fingerprint(model) if self.cache else ""
        self.generated = 0  # how many rationales this encoder has sampled (cache misses)
        # One prefill per text for all its rationales (``encode_variants``); False: the
        # reference path, one ``generate`` call per row (kept for tests and benchmarks).
        self.share_work = True
        self.share_prefix = True  # the system prefix prefilled once per batch

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, device: str | None = None, dtype=None, **config
    ) -> GraceEncoder:
        """Load a model and embed as it was trained to: a folder's ``encoder_config.json``
        (written by ``grace train``) gives the defaults; keyword arguments override them."""
        settings = EncoderConfig(**(saved_encoder_settings(name_or_path) | config))
        if settings.int8 and device is None:
            device = "cpu"  # int8 dynamic quantisation is a CPU kernel, even on a GPU box
        model, tokenizer = load_model(name_or_path, device=device, dtype=dtype)
        if settings.int8:
            model = quantize_int8(model)
        return cls(model, tokenizer, settings)

    def encode(
        self,
        texts: list[str] | str,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """(N, H) float32 unit vectors (a single string gives shape (H,))."""
        if isinstance(texts, str):
            return self.encode([texts], batch_size, show_progress_bar)[0]
        return self.encode_with_rationales(texts, batch_size, show_progress_bar)[0]

    def encode_with_rationales(
        self,
        texts: list[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Embeddings and the (first) rationale written for each text ("" in direct mode).

        With ``num_rationales`` k > 1 the embedding is the re-normalised mean of the k draws.
        """
        draws, rationales = self.encode_draws(texts, batch_size, show_progress_bar)
        return mean_of_draws(draws), [written[0] for written in rationales]

    def encode_draws(
        self,
        texts: list[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """(N, k, H) unit embeddings, one per sampled rationale, and the k rationales per text.

        ``batch_size`` counts generated rows, so a batch holds ``batch_size // k`` texts. The
        k rationales of a text continue one prefill of its prompt (``encode_variants``).
        """
        k = self.config.draws
        if not texts:
            return np.zeros((0, k, self.model.config.hidden_size), dtype=np.float32), []
        # An echo is fed, never sampled: it has no reference sampling path to compare with.
        if self.config.mode != "echo" and not (self.share_work and self.config.single_pass):
            return self._encode_draws_per_row(texts, batch_size, show_progress_bar)
        variants = self.draw_variants()
        encoded = self.encode_variants(texts, variants, batch_size, show_progress_bar)
        draws = np.stack([encoded.embeddings[v] for v in variants], axis=1)
        columns = [encoded.rationales[v] for v in variants]
        return draws, [list(row) for row in zip(*columns, strict=True)]

    def draw_variants(self) -> list[Variant]:
        """What ``encode_draws`` returns: the prompt alone in direct mode, else k draws."""
        config = self.config
        if config.mode == "direct":
            return [Variant(0)]
        return [Variant(config.max_new_tokens, config.temperature, j) for j in range(config.draws)]

    def encode_variants(
        self,
        texts: list[str],
        variants: list[Variant],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> Encodings:
        """Many embeddings of each text from one prefill of its prompt and one generation per
        (temperature, draw): shorter caps are prefixes of the longest (a rationale depends only
        on its prompt, seed and draw), the prompt alone is direct mode.

        Each variant equals what a separate encoder with its settings gives (tested), and the
        rationale cache is read and written under each variant's own key. A branch is one
        (temperature, draw) pair; ``batch_size`` counts the rows that run to the longest cap,
        so a batch holds ``batch_size // (branches with that cap)`` texts.
        """
        config = self.config
        variants = list(dict.fromkeys(variants))
        hidden = self.model.config.hidden_size
        if not texts:
            empty = np.zeros((0, hidden), dtype=np.float32)
            return Encodings(
                {v: empty for v in variants},
                {v: np.zeros(0, dtype=bool) for v in variants},
                {v: [] for v in variants},
                dict.fromkeys(variants, 0.0),
            )
        texts = self._clean(list(texts))
        prompts = build_prompts(
            self.tokenizer, texts, config.system_prompt, config.max_input_tokens
        )
        branches, where = self._branches(variants)
        lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        size = self._texts_per_batch(branches, batch_size or config.batch_size)
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        show = len(batches) > 1 if show_progress_bar is None else show_progress_bar

        n = len(prompts)
        embeddings = {v: np.zeros((n, hidden), dtype=np.float32) for v in variants}
        hit_cap = {v: np.zeros(n, dtype=bool) for v in variants}
        rationales = {v: [""] * n for v in variants}
        seconds = dict.fromkeys(variants, 0.0)
        prefill_total = 0.0
        for batch in tqdm(batches, desc=f"encode ({len(variants)} variants)", disable=not show):
            rows = [prompts[i] for i in batch]
            if config.mode == "echo":
                known = [[self._echo(texts[i], branch) for i in batch] for branch in branches]
            else:
                known = [[self._lookup(prompt, branch) for prompt in rows] for branch in branches]
            out = generate_shared(
                self.model,
                self.tokenizer,
                rows,
                branches,
                self.prefix_length,
                config.pooling,
                known,
                self.share_prefix,
                feed_sampled=self.cache is not None,
            )
            fresh = [(b, r) for b, column in enumerate(known) for r, ids in enumerate(column)]
            fresh = [(b, r) for b, r in fresh if known[b][r] is None]
            self.generated += len(fresh)
            self._store(rows, branches, out.completions, fresh)
            prefill = float(out.prefill_seconds.sum())
            prefill_total += prefill
            for v in variants:
                if v.max_new_tokens == 0:
                    embeddings[v][batch] = out.prompt_embeddings.cpu().numpy()
                    seconds[v] += prefill
                    continue
                b, j = where[v]
                embeddings[v][batch] = out.embeddings[b][:, j].cpu().numpy()
                hit_cap[v][batch] = out.hit_cap[b][:, j].cpu().numpy()
                seconds[v] += prefill + float(out.decode_seconds[b][:, j].sum())
                ids = [completion[: v.max_new_tokens] for completion in out.completions[b]]
                for i, text in zip(
                    batch, self.tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True
                ):
                    rationales[v][i] = text
        return Encodings(embeddings, hit_cap, rationales, seconds, prefill_total)

    def _branches(self, variants: list[Variant]) -> tuple[list[Branch], dict]:
        """One branch per (temperature, draw), pooled at each of its variants' lengths; and
        variant -> (branch, length index)."""
        config = self.config
        caps: dict[tuple[float, int], set[int]] = {}
        for v in variants:
            if v.max_new_tokens:
                temperature = config.temperature if v.temperature is None else v.temperature
                caps.setdefault((temperature, v.draw), set()).add(v.max_new_tokens)
        branches = [
            Branch(self._sampling(temperature, max(lengths)), draw, tuple(sorted(lengths)))
            for (temperature, draw), lengths in caps.items()
        ]
        where = {}
        for v in variants:
            if v.max_new_tokens:
                temperature = config.temperature if v.temperature is None else v.temperature
                b = list(caps).index((temperature, v.draw))
                where[v] = (b, branches[b].points.index(v.max_new_tokens))
        return branches, where

    def _sampling(self, temperature: float, max_new_tokens: int) -> SamplingConfig:
        return replace(self.config.sampling, temperature=temperature, max_new_tokens=max_new_tokens)

    @staticmethod
    def _texts_per_batch(branches: list[Branch], batch_size: int) -> int:
        """Texts per batch: ``batch_size`` rows decode together up to the longest cap, and the
        rows of shorter branches of the same texts join them while they run (a decoding step
        costs a fixed part plus a part per row, so wide steps pay: on two cores 176 ms for
        64 rows, 610 ms for 320). Prompts are prefilled ``rationale.PREFILL_ROWS`` at a time
        whatever the batch."""
        if not branches:
            return max(1, batch_size)
        longest = max(branch.sampling.max_new_tokens for branch in branches)
        tail = sum(branch.sampling.max_new_tokens == longest for branch in branches)
        return max(1, batch_size // tail)

    def _echo(self, text: str, branch: Branch) -> list[int]:
        return self.echo_ids(text, branch.sampling.max_new_tokens)

    def echo_ids(self, text: str, cap: int) -> list[int]:
        """The text's own ids as a completion, cut to ``cap``; a copy that fits ends with EOS,
        as a sampled copy would."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[:cap] if len(ids) >= cap else ids + eos_token_ids(self.model, self.tokenizer)[:1]

    def _prompt_batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[str]]]:
        """(indices, rendered prompts) of ``texts`` in batches of ``batch_size``."""
        config = self.config
        prompts = build_prompts(
            self.tokenizer, self._clean(list(texts)), config.system_prompt, config.max_input_tokens
        )
        for start in range(0, len(prompts), config.batch_size):
            batch = list(range(start, min(start + config.batch_size, len(prompts))))
            yield batch, [prompts[i] for i in batch]

    def write(self, texts: list[str]) -> list[list[int]]:
        """The completion ids of each text's first rationale, as this encoder samples it (the
        same seed and draw as ``encode``), for another model to embed (``embed_written``)."""
        written: list[list[int]] = [[] for _ in texts]
        for batch, prompts in self._prompt_batches(texts):
            rollouts = generate_rationales(
                self.model, self.tokenizer, prompts, self.config.sampling
            )
            for i, ids, mask in zip(
                batch, rollouts.completion_ids, rollouts.completion_mask, strict=True
            ):
                written[i] = ids[mask].tolist()
        return written

    def embed_written(self, texts: list[str], completions: list[list[int]]) -> np.ndarray:
        """(N, H) embeddings of each text with the given rationale ids (written by another
        model, or its own text: ``echo_ids``; ``[]`` is direct mode), pooled by these weights."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for batch, prompts in self._prompt_batches(texts):
            rollouts = rollouts_from_completions(
                self.tokenizer, prompts, [completions[i] for i in batch], self.model.device
            )
            with torch.no_grad():
                out[batch] = self._embed(rollouts).cpu().numpy()
        return out

    def _lookup(self, prompt: str, branch: Branch) -> list[int] | None:
        """A branch's cached completion (to its cap), or None unless every length is stored
        and each shorter one is a prefix of the longest, as sampling makes them."""
        if not self.cache:
            return None
        stored = []
        for length in branch.points:
            sampling = replace(branch.sampling, max_new_tokens=length)
            ids = self.cache.get(RationaleCache.key(self.model_id, prompt, sampling, branch.draw))
            if ids is None:
                return None
            stored.append((length, ids))
        longest = stored[-1][1]
        if any(ids != longest[:length] for length, ids in stored):
            return None
        return longest

    def _store(self, prompts, branches, completions, fresh) -> None:
        """Write each freshly sampled completion under the key of every length it serves."""
        if not self.cache or not fresh:
            return
        items = {}
        for b, row in fresh:
            branch = branches[b]
            for length in branch.points:
                sampling = replace(branch.sampling, max_new_tokens=length)
                key = RationaleCache.key(self.model_id, prompts[row], sampling, branch.draw)
                items[key] = completions[b][row][:length]
        self.cache.put(items)

    def _encode_draws_per_row(
        self,
        texts: list[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """``encode_draws`` the reference way: every (text, draw) row prefills its prompt."""
        config = self.config
        k = config.draws
        texts = self._clean(list(texts))
        prompts = build_prompts(
            self.tokenizer, texts, config.system_prompt, config.max_input_tokens
        )
        lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        size = max(1, (batch_size or config.batch_size) // k)
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        show = len(batches) > 1 if show_progress_bar is None else show_progress_bar

        embeddings = [None] * len(prompts)
        rationales = [[""] * k for _ in prompts]
        for batch in tqdm(batches, desc=f"encode ({config.mode})", disable=not show):
            rows = [(prompts[i], draw) for i in batch for draw in range(k)]
            vectors, written = self._encode_batch(rows)
            for n, i in enumerate(batch):
                embeddings[i] = vectors[n * k : (n + 1) * k]
                rationales[i] = written[n * k : (n + 1) * k]
        return torch.stack(embeddings).cpu().numpy(), rationales

    def _clean(self, texts: list[str]) -> list[str]:
        blank = [i for i, text in enumerate(texts) if not text.strip()]
        if blank:
            warnings.warn(
                f"{len(blank)} empty or whitespace-only texts (first at index {blank[0]}) are "
                "encoded as the empty string.",
                stacklevel=3,
            )
            for i in blank:
                texts[i] = ""
        return texts

    def _encode_batch(self, rows: list[tuple[str, int]]) -> tuple[torch.Tensor, list[str]]:
        """Embeddings and rationales of (prompt, draw) rows; each draw has its own cache key."""
        device = self.model.device
        prompts = [prompt for prompt, _ in rows]
        if self.config.mode == "direct":
            rollouts = rollouts_from_completions(
                self.tokenizer, prompts, [[]] * len(prompts), device
            )
            return self._embed(rollouts), [""] * len(prompts)

        keys = [self._cache_key(*row) for row in rows] if self.cache else [None] * len(rows)
        stored = [self.cache.get(k) if self.cache else None for k in keys]
        missing = [i for i, ids in enumerate(stored) if ids is None]
        if missing:
            fresh = generate_rationales(
                self.model,
                self.tokenizer,
                [prompts[i] for i in missing],
                self.config.sampling,
                keep_hidden=self.config.single_pass and not self.cache,
                draws=[rows[i][1] for i in missing],
            )
            self.generated += len(missing)
            if not self.cache:
                return self._embed(fresh), fresh.texts
            for i, ids, mask in zip(
                missing, fresh.completion_ids, fresh.completion_mask, strict=True
            ):
                stored[i] = ids[mask].tolist()
            self.cache.put({keys[i]: stored[i] for i in missing})
        # Cached and freshly sampled rows alike are fed in one pass, so a warm cache gives
        # exactly what a cold one gave.
        fed = rollouts_from_completions(self.tokenizer, prompts, stored, device)
        return self._embed(fed), fed.texts

    def _embed(self, rollouts: Rollouts) -> torch.Tensor:
        return embed_rollouts(self.model, rollouts, self.prefix_length, self.config.pooling)

    def _cache_key(self, prompt: str, draw: int) -> str:
        return RationaleCache.key(self.model_id, prompt, self.config.sampling, draw)


ENCODER_CONFIG = "encoder_config.json"
# Settings that travel with a model folder; the rest (cache, batch size, int8) are choices of
# the machine that embeds.
PORTABLE = (
    "mode",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "max_input_tokens",
    "pooling",
    "num_rationales",
    "system_prompt",
)


def save_encoder_settings(folder: str | Path, config: EncoderConfig) -> Path:
    """``encoder_config.json`` beside a model's weights: how this model embeds text."""
    path = Path(folder) / ENCODER_CONFIG
    write_text_atomically(path, json.dumps({k: getattr(config, k) for k in PORTABLE}, indent=2))
    return path


def saved_encoder_settings(name_or_path: str) -> dict:
    """The settings saved in a model folder, or ``{}`` (hub ids, aliases, other folders).
    A damaged file is a ``ModelLoadError`` naming it, not a traceback."""
    path = Path(name_or_path) / ENCODER_CONFIG
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(settings, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(settings) - set(PORTABLE))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; valid: {sorted(PORTABLE)}")
        # Types and values checked as a profile's are (a seed of 1.5, a system prompt of 42).
        config = build_section(EncoderConfig, settings, ENCODER_CONFIG)
    except (ValueError, TypeError, RecursionError) as error:  # also JSON nested too deep
        raise ModelLoadError(
            f"{path}: not a usable encoder configuration ({error}); fix it, or delete it to "
            "embed with the defaults."
        ) from error
    return {name: getattr(config, name) for name in settings}


def mean_of_draws(draws: np.ndarray) -> np.ndarray:
    """(N, k, H) unit vectors -> (N, H): their mean, scaled back to unit length."""
    mean = draws.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)
