"""The OpenAI-compatible /v1/embeddings endpoint."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from chatapp.config.base import section


class EmbeddingsSettings(BaseSettings):
    """POST /v1/embeddings: texts embedded by the knowledge bases' model (RAG_EMBEDDING_MODEL)
    in the retrieval deployment."""

    model_config = section("EMBEDDINGS_")

    max_inputs: int = Field(256, ge=1, description="Most texts one request may embed (413 above).")
    max_input_tokens: int = Field(
        254,
        ge=1,
        description="Longest text in tokens of the embedding model (413 above): "
        "all-MiniLM-L6-v2 reads 256 with its two special tokens and would cut longer texts "
        "silently.",
    )
