"""OpenAI's /v1/embeddings over the knowledge bases' embedding model.

The texts are checked here (the model's name, how many texts, token ids refused), counted
and embedded in the retrieval deployment (`Retrieval.embed`, through the `TextEmbedder`
port) exactly as knowledge-base chunks are: normalised float32 vectors. `base64` is the
vectors' little-endian float32 bytes, as OpenAI sends them."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from chatapp.config import EmbeddingsSettings, RagSettings
from chatapp.errors import InvalidRequest, NotFound, PayloadTooLarge, Unsupported
from chatapp.openai_api.protocol import _Wire
from chatapp.rag.embedder import Vectors, model_label


class EmbeddingRequest(_Wire):
    input: str | list[Any]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """The texts' vectors (one row each) and their lengths in tokens."""

    vectors: Vectors
    tokens: list[int]


class TextEmbedder(Protocol):
    async def embed(self, texts: list[str], *, max_input_tokens: int) -> EmbeddingResult:
        """`texts` embedded; `PayloadTooLarge` for one over `max_input_tokens`."""
        ...


def model_names(rag: RagSettings) -> tuple[str, ...]:
    """The names a request may give the embedding model: its label and its last part
    (`sentence-transformers/all-MiniLM-L6-v2` or `all-MiniLM-L6-v2`)."""
    label = model_label(rag.embedding_model)
    return (label, label.rstrip("/").rsplit("/", 1)[-1])


def texts_of(
    request: EmbeddingRequest, *, rag: RagSettings, limits: EmbeddingsSettings
) -> list[str]:
    """The texts to embed; `NotFound` for another model, `Unsupported` for token ids,
    `InvalidRequest` for no text or an empty one, `PayloadTooLarge` over
    EMBEDDINGS_MAX_INPUTS."""
    names = model_names(rag)
    if request.model not in names:
        raise NotFound(
            f"model {request.model!r} not found: embeddings come from the knowledge bases' "
            f"model, {names[0]!r}"
        )
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise InvalidRequest("input: at least one text is required")
    if len(texts) > limits.max_inputs:
        raise PayloadTooLarge(
            f"input: {len(texts)} texts, more than the {limits.max_inputs} a request may embed "
            "(EMBEDDINGS_MAX_INPUTS); send them in several requests"
        )
    for i, text in enumerate(texts):
        if isinstance(text, int | list):
            raise Unsupported(
                f"input[{i}]: token ids are not supported; send the text (a string or a list "
                "of strings)"
            )
        if not isinstance(text, str):
            raise InvalidRequest(f"input[{i}]: a string is required")
        if not text:
            raise InvalidRequest(f"input[{i}]: an empty string cannot be embedded")
    return texts


def check_lengths(tokens: list[int], *, max_input_tokens: int) -> None:
    """`PayloadTooLarge` for the first text longer than `max_input_tokens`."""
    for i, count in enumerate(tokens):
        if count > max_input_tokens:
            raise PayloadTooLarge(
                f"input[{i}]: {count} tokens, more than the {max_input_tokens} a text may have "
                "(EMBEDDINGS_MAX_INPUT_TOKENS); split it"
            )


def embedding_list(
    request: EmbeddingRequest, result: EmbeddingResult, *, model: str
) -> dict[str, Any]:
    """OpenAI's `list` of `embedding` objects, with usage."""
    size = int(result.vectors.shape[1])
    if request.dimensions is not None and request.dimensions != size:
        raise Unsupported(
            f"dimensions: {model} gives {size}-dimensional vectors; other sizes are not "
            "supported (leave dimensions out)"
        )
    rows: list[Any]
    if request.encoding_format == "base64":
        little = result.vectors.astype("<f4", copy=False)
        rows = [base64.b64encode(np.ascontiguousarray(v).tobytes()).decode() for v in little]
    else:
        rows = result.vectors.tolist()
    used = sum(result.tokens)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)
        ],
        "model": model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }
