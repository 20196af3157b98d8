"""Retrieval for the ladder's retrieval rung: a task's knowledge source, chunked, indexed
with BM25 (``bm25s``, the default) or an embedding model (``retriever: embedding``), and the
top-k passages for each input.

* ``load_documents`` reads the source: a folder of ``.txt``/``.md`` files (a document's id
  is its path relative to the folder without the suffix, ``policies/refunds``) or a
  ``.jsonl`` of passages (``{"id", "text"}`` per line).
* ``chunk_documents`` cuts them into passages by the spec's ``retrieval.chunk`` rule
  (deterministic: the same source and rule give the same passages, ids ``<doc>#<n>``).
* ``Index`` holds the passages and their BM25 index; ``retrieve(query, k)`` ranks every
  passage (score, then source order on ties) and returns the top k; ``save``/``load`` are
  mirrors (a folder: ``index.json``, ``passages.jsonl``, ``bm25/``), so the index travels
  in the serving bundle (``retrieval/``).
* ``build_index`` builds it once per content: cached under
  ``$RIGHTSIZER_CACHE/retrieval/<digest>`` where the digest hashes the source's bytes, the
  chunk rule and the retriever, written with ``atomic_dir`` (a failed build leaves nothing).
* ``for_rung`` gives the spec a rung runs with: the index attached for the rungs that
  retrieve (``retrieval``; ``lora`` unless ``retrieval.lora: false``), none otherwise;
  ``rightsizer.inference.build_prompt`` puts the passages into the prompt.
* ``recall_at_k``: the share of rows whose gold passage (``retrieval.gold_field``, a
  document or passage id, or a list of them) is among the k retrieved.

Tokenisation for BM25: lower case, runs of letters and digits, English stop words removed
(bm25s' list), then the Snowball English stemmer (PyStemmer), so "refunds" finds "refund".

``EmbeddingIndex`` (``retriever: embedding``, ``model:`` a hub id, a local folder or
``demo:<name>``): each passage and query is the mean of the model's last hidden states over
its tokens, L2-normalised; passages rank by cosine similarity. The model loads through
transformers' ``AutoModel`` (safetensors only, ``trust_remote_code`` as the spec says) and is
saved inside the index folder (``encoder/``), so the serving bundle embeds its queries with
the very model that embedded the passages, offline.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError

if TYPE_CHECKING:
    from rightsizer.schema.task import ChunkRule, TaskSpec

FORMAT_VERSION = 1  # of the saved index and the tokeniser: a change rebuilds cached indexes
INDEX_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
EMBEDDINGS_FILE = "embeddings.safetensors"
ENCODER_DIR = "encoder"
EMBED_BATCH = 32
EMBED_MAX_TOKENS = 512
DOC_SUFFIXES = (".txt", ".md")
CONTEXT_RUNGS = ("retrieval", "lora")  # the rungs whose prompts carry retrieved passages
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Passage:
    """One chunk of the knowledge source; ``score`` is its BM25 score for a query."""

    id: str  # "<doc>#<n>": the n-th passage of document <doc>
    text: str
    score: float = 0.0
    doc: str = ""  # the document (file or JSONL passage) it was cut from


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@functools.cache
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """BM25 terms of a text: lower-cased letter/digit runs, English stop words left out,
    stemmed (Snowball English)."""
    stop = _stopwords()
    return _stemmer().stemWords([t for t in _TOKEN.findall(text.lower()) if t not in stop])


def load_documents(source: str | Path) -> list[tuple[str, str]]:
    """``(doc id, text)`` of a knowledge source, in a fixed order (sorted paths, or file order)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)
        if not files:
            raise ConfigError(f"retrieval.source: the folder {path} has no .txt or .md file")
        docs = [(p.relative_to(path).with_suffix("").as_posix(), p.read_text(encoding="utf-8"))
                for p in files]
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        docs, problems = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"retrieval.source: {path} line {n} is not JSON ({e})")
                continue
            if not (isinstance(row, dict) and isinstance(row.get("id"), (str, int))
                    and isinstance(row.get("text"), str)):
                problems.append(f"retrieval.source: {path} line {n}: expected {{\"id\", \"text\"}} "
                                "(a string or integer id, a string text)")
                continue
            docs.append((str(row["id"]), row["text"]))
        if problems:
            raise ConfigError(problems)
        if not docs:
            raise ConfigError(f"retrieval.source: {path} has no passage")
    else:
        raise ConfigError(f"retrieval.source: {path} is neither a folder of .txt/.md files nor a .jsonl")
    ids = [d for d, _ in docs]
    dup = sorted({d for d in ids if ids.count(d) > 1})
    if dup:
        raise ConfigError(f"retrieval.source: duplicate document ids {dup[:5]} in {path} "
                          "(a file name stem used twice, or a repeated JSONL id)")
    return docs


def _windows(words: list[str], size: int, overlap: int) -> list[list[str]]:
    step = size - overlap
    out = []
    for start in range(0, len(words), step):
        out.append(words[start:start + size])
        if start + size >= len(words):
            break
    return out


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a paragraph of heading lines joins the next one."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out, heading = [], ""
    for p in paras:
        if all(line.lstrip().startswith("#") for line in p.splitlines()):
            heading = f"{heading} {p}".strip()
            continue
        out.append(f"{heading} {p}".strip() if heading else p)
        heading = ""
    if heading:
        out.append(heading)
    return out


def chunk_documents(docs: list[tuple[str, str]], rule: ChunkRule) -> list[Passage]:
    """The passages of the documents by ``rule`` (whitespace collapsed to single spaces)."""
    passages = []
    for doc, text in docs:
        if rule.by == "passage":
            pieces = [text.split()]
        elif rule.by == "words":
            pieces = _windows(text.split(), rule.size, rule.overlap)
        elif rule.by == "paragraph":
            pieces = [w for p in _paragraphs(text) for w in _windows(p.split(), rule.size, rule.overlap)]
        else:
            raise ConfigError(f"retrieval.chunk.by: {rule.by!r} is not a chunk rule")
        pieces = [p for p in pieces if p]
        passages.extend(Passage(id=f"{doc}#{n}", text=" ".join(words), doc=doc)
                        for n, words in enumerate(pieces))
    if not passages:
        raise ConfigError("retrieval.source: no passage (every document is empty)")
    return passages


def source_digest(spec: TaskSpec) -> str:
    """A content hash of the knowledge source, its chunk rule and the retriever."""
    r = spec.retrieval
    encoder = None
    if r.retriever == "embedding":
        from rightsizer.models import model_fingerprint, resolve_model_ref

        encoder = model_fingerprint(resolve_model_ref(r.model))
    h = hashlib.sha256(json.dumps({"v": FORMAT_VERSION, "retriever": r.retriever, "encoder": encoder,
                                   "chunk": dataclasses.asdict(r.chunk)}, sort_keys=True).encode())
    path = spec.source_path()
    files = ([p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in DOC_SUFFIXES]
             if path.is_dir() else [path])
    for p in files:
        name = p.relative_to(path).as_posix() if path.is_dir() else p.name
        h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class Index:
    """Passages and their BM25 index; ``retrieve`` ranks them for a query."""

    def __init__(self, passages: list[Passage], bm25, meta: dict):
        self.passages, self._bm25, self.meta = passages, bm25, meta

    @classmethod
    def build(cls, passages: list[Passage], meta: dict | None = None) -> "Index":
        import bm25s

        bm25 = bm25s.BM25()
        # an empty passage (only stop words) still takes its row, so ids stay aligned
        bm25.index([tokenize(p.text) or [""] for p in passages], show_progress=False)
        return cls(passages, bm25, {**(meta or {}), "n_passages": len(passages),
                                    "format_version": FORMAT_VERSION, "retriever": "bm25"})

    @property
    def digest(self) -> str:
        return self.meta.get("digest", "")

    def scores(self, query: str):
        """Every passage's BM25 score for ``query`` (a numpy array, in source order)."""
        import numpy as np

        tokens = tokenize(query)
        return (self._bm25.get_scores(tokens) if tokens
                else np.zeros(len(self.passages), dtype=np.float32))

    def retrieve(self, query: str, k: int) -> list[Passage]:
        """The top ``k`` passages for ``query``: highest score first, ties in source order."""
        import numpy as np

        if k < 1:
            raise ConfigError(f"retrieval.k: {k}; expected >= 1")
        scores = self.scores(query)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [dataclasses.replace(self.passages[i], score=float(scores[i])) for i in order]

    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder`` (created; see ``load``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(folder / BM25_DIR))
        _write_passages(folder, self.passages, self.meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Index":
        """The index ``save`` wrote; ConfigError when the folder is not one."""
        import bm25s

        folder = Path(folder)
        meta, passages = _read_saved(folder)
        if meta.get("retriever") == "embedding":
            return EmbeddingIndex.from_saved(folder, meta, passages)
        bm25 = bm25s.BM25.load(str(folder / BM25_DIR))
        return cls(passages, bm25, meta)


def _read_saved(folder: Path) -> tuple[dict, list[Passage]]:
    """The metadata and passages of a saved index, checked; ConfigError naming the folder."""
    if not (folder / INDEX_FILE).is_file() or not (folder / PASSAGES_FILE).is_file():
        raise ConfigError(f"{folder}: not a retrieval index (no {INDEX_FILE} or {PASSAGES_FILE})")
    meta = json.loads((folder / INDEX_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{folder}: retrieval index format {meta.get('format_version')}; "
                          f"this version reads {FORMAT_VERSION} (rebuild it)")
    rows = [json.loads(line) for line in (folder / PASSAGES_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    passages = [Passage(id=r["id"], text=r["text"], doc=r["doc"]) for r in rows]
    if len(passages) != meta.get("n_passages"):
        raise ConfigError(f"{folder}: {len(passages)} passages, the index says {meta.get('n_passages')}")
    return meta, passages


def _write_passages(folder: Path, passages: list[Passage], meta: dict) -> None:
    (folder / PASSAGES_FILE).write_text("".join(
        json.dumps({"id": p.id, "doc": p.doc, "text": p.text}, sort_keys=True) + "\n"
        for p in passages), encoding="utf-8")
    (folder / INDEX_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


class Encoder:
    """Text -> unit vector: the mean of a model's last hidden states over the text's tokens.

    It runs on the step's runtime target's device (``rightsizer.runtime.target``), in fp32
    everywhere (an embedding's ranking should not depend on the device's half precision); the
    vectors come back on the CPU."""

    def __init__(self, model_dir: str, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from rightsizer.runtime.target import resolve_target

        self.device = resolve_target().device
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.model = AutoModel.from_pretrained(model_dir, trust_remote_code=trust_remote_code,
                                               use_safetensors=True, dtype=torch.float32).to(self.device)
        self.model.eval()

    def encode(self, texts: list[str]):
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), EMBED_BATCH):
                enc = self.tokenizer(texts[i:i + EMBED_BATCH], return_tensors="pt", padding=True,
                                     truncation=True, max_length=EMBED_MAX_TOKENS).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


class EmbeddingIndex(Index):
    """Passages and their embeddings (``Encoder``); ``retrieve`` ranks by cosine similarity."""

    def __init__(self, passages: list[Passage], encoder: Encoder, vectors, meta: dict):
        self.passages, self.encoder, self.vectors, self.meta = passages, encoder, vectors, meta

    @classmethod
    def build(cls, passages: list[Passage], meta: dict | None = None, model: str = "",
              trust_remote_code: bool = False) -> "EmbeddingIndex":
        from rightsizer.models import resolve_model_ref

        if not model:
            raise ConfigError("retrieval.model: the embedding retriever needs a model (hub id, folder, demo:<name>)")
        encoder = Encoder(resolve_model_ref(model), trust_remote_code)
        vectors = encoder.encode([p.text for p in passages])
        return cls(passages, encoder, vectors, {**(meta or {}), "n_passages": len(passages),
                                                 "format_version": FORMAT_VERSION, "retriever": "embedding",
                                                 "model": model, "dim": int(vectors.shape[1])})

    def scores(self, query: str):
        """Every passage's cosine similarity to ``query`` (a numpy array, in source order)."""
        return (self.vectors @ self.encoder.encode([query])[0]).numpy()

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.vectors.contiguous()}, str(folder / EMBEDDINGS_FILE))
        self.encoder.save(folder / ENCODER_DIR)
        _write_passages(folder, self.passages, self.meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "EmbeddingIndex":
        folder = Path(folder)
        return cls.from_saved(folder, *_read_saved(folder))

    @classmethod
    def from_saved(cls, folder: Path, meta: dict, passages: list[Passage]) -> "EmbeddingIndex":
        """The index from its folder's vectors and encoder, its metadata and passages read."""
        from safetensors.torch import load_file

        if not (folder / EMBEDDINGS_FILE).is_file() or not (folder / ENCODER_DIR).is_dir():
            raise ConfigError(f"{folder}: an embedding index without {EMBEDDINGS_FILE} or {ENCODER_DIR}/")
        vectors = load_file(str(folder / EMBEDDINGS_FILE))["vectors"]
        if vectors.shape[0] != len(passages):
            raise ConfigError(f"{folder}: {vectors.shape[0]} embeddings for {len(passages)} passages")
        # the saved encoder is this project's own copy: it runs no remote code
        return cls(passages, Encoder(str(folder / ENCODER_DIR)), vectors, meta)


def cache_dir() -> Path:
    """Where built indexes are cached: ``$RIGHTSIZER_CACHE/retrieval`` (``~/.cache/rightsizer``)."""
    root = Path(os.environ.get("RIGHTSIZER_CACHE", Path.home() / ".cache" / "rightsizer"))
    return root / "retrieval"


def build_index(spec: TaskSpec, cache: str | Path | None = None) -> Index:
    """The task's index, built once per content (source bytes, chunk rule, retriever) and
    cached in ``cache`` (default ``cache_dir()``) under its digest, atomically."""
    if spec.retrieval is None:
        raise ConfigError("retrieval: this task declares no knowledge source", spec.name)
    digest = source_digest(spec)
    folder = Path(cache or cache_dir()) / digest
    if (folder / INDEX_FILE).is_file():
        try:
            return Index.load(folder)
        except (ConfigError, OSError, ValueError, KeyError):
            pass  # an unreadable cache entry (an older format): built again below
    passages = chunk_documents(load_documents(spec.source_path()), spec.retrieval.chunk)
    meta = {"digest": digest, "chunk": dataclasses.asdict(spec.retrieval.chunk)}
    if spec.retrieval.retriever == "embedding":
        index = EmbeddingIndex.build(passages, meta, model=spec.retrieval.model,
                                     trust_remote_code=spec.trust_remote_code)
    else:
        index = Index.build(passages, meta)
    with atomic_dir(folder) as tmp:
        index.save(tmp)
    return index


def for_rung(spec: TaskSpec, rung: str, cache: str | Path | None = None) -> TaskSpec:
    """The spec a rung runs with: its index attached when the rung retrieves (``retrieval``,
    and ``lora`` when ``retrieval.lora``), detached otherwise. Prompts built from it
    (``inference.build_prompt``) carry the passages; training, scoring, the bundle use it."""
    r = spec.retrieval
    wants = r is not None and rung in CONTEXT_RUNGS and (rung != "lora" or r.lora)
    if not wants:
        return spec if spec.index is None else dataclasses.replace(spec, index=None)
    if spec.index is not None:
        return spec
    return dataclasses.replace(spec, index=build_index(spec, cache))


def retrieve_for(spec: TaskSpec, row: dict) -> list[Passage]:
    """The passages a spec with an index puts into the prompt for ``row`` (none without one)."""
    if spec.index is None or spec.retrieval is None:
        return []
    return spec.index.retrieve(str(row[spec.input_field]), spec.retrieval.k)


def context_text(passages: list[Passage]) -> str:
    """The passages as the prompt shows them: one per line, best first."""
    return "\n".join(p.text for p in passages)


def gold_ids(value) -> set[str]:
    """The gold passage ids a row names (a string or integer, or a list of them)."""
    if value is None:
        return set()
    if isinstance(value, (list, tuple)):
        return {str(v) for v in value}
    return {str(value)}


def is_hit(passages: list[Passage], gold: set[str]) -> bool:
    """Whether a retrieved passage is gold (by passage id or by its document's id)."""
    return any(p.id in gold or p.doc in gold for p in passages)


def recall_at_k(index: Index, queries: list[str], gold: list, k: int) -> float:
    """Share of queries with a gold passage among the top ``k`` (rows without gold skipped)."""
    pairs = [(q, gold_ids(g)) for q, g in zip(queries, gold) if gold_ids(g)]
    if not pairs:
        raise ConfigError("recall@k: no row names a gold passage")
    return sum(is_hit(index.retrieve(q, k), g) for q, g in pairs) / len(pairs)


def retrieval_figures(spec: TaskSpec, rows: list[dict]) -> dict:
    """What the decision record shows of the retriever on ``rows``: k, passages, digest and,
    when the rows name their gold passage (``retrieval.gold_field``), recall@k and the rows
    it missed (a retrieval miss, not a model miss)."""
    r, index = spec.retrieval, spec.index
    out = {"retriever": r.retriever, "k": r.k, "source": r.source, "chunk": dataclasses.asdict(r.chunk),
           "n_passages": len(index.passages), "digest": index.digest,
           "recall_at_k": None, "gold_rows": 0, "missed_rows": []}
    if r.gold_field is None:
        return out
    hits = []
    for i, row in enumerate(rows):
        gold = gold_ids(row.get(r.gold_field))
        if gold:
            hits.append((i, is_hit(retrieve_for(spec, row), gold)))
    if hits:
        out.update(recall_at_k=sum(h for _, h in hits) / len(hits), gold_rows=len(hits),
                   missed_rows=[i for i, h in hits if not h])
    return out
