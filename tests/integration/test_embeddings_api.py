"""The official openai SDK's `client.embeddings` against ChatApp's /v1/embeddings: the
vectors are the knowledge bases' own (the same embedder, computed here for comparison)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from chatapp.config import Settings
from chatapp.rag.chunking import chunker_for
from chatapp.rag.embedder import Embedder, embedder_for
from tests.conftest import expect_error

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["The quokka is a small marsupial.", "Ray Serve batches requests.", "Bonjour!"]


@pytest.fixture(scope="module")
def rag(app_overrides: dict[str, Any]) -> Any:
    return Settings.from_overrides(app_overrides).rag


@pytest.fixture(scope="module")
def embedder(rag: Any) -> Embedder:
    """The embedder the retrieval deployment builds for the knowledge bases."""
    return embedder_for(rag)


@pytest.fixture
def sdk(chat_app: str, auth_headers: dict[str, str]) -> openai.OpenAI:
    token = auth_headers["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(base_url=f"{chat_app}/v1", api_key=token, max_retries=0)


def post(chat_app: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return httpx.post(f"{chat_app}/v1/embeddings", json=body, headers=headers, timeout=120)


def test_a_string_as_floats_is_the_knowledge_base_embedding(
    sdk: openai.OpenAI, embedder: Embedder, rag: Any
) -> None:
    result = sdk.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert result.model == MODEL and len(result.data) == 1
    vector = np.array(result.data[0].embedding, dtype=np.float32)
    assert vector.shape == (embedder.dimension,)
    np.testing.assert_allclose(vector, embedder.encode([TEXTS[0]])[0], atol=1e-5)
    chunker = chunker_for(rag.embedding_model, rag.chunk_tokens, rag.chunk_overlap)
    assert result.usage.prompt_tokens == chunker.count_tokens(TEXTS[0]) == result.usage.total_tokens


def test_a_list_as_base64_decodes_to_the_same_vectors(
    sdk: openai.OpenAI, embedder: Embedder, chat_app: str, auth_headers: dict[str, str]
) -> None:
    expected = embedder.encode(TEXTS)
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    result = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    assert [d.index for d in result.data] == [0, 1, 2]
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # On the wire: little-endian float32, as OpenAI sends it.
    raw = post(chat_app, auth_headers, model=MODEL, input=TEXTS, encoding_format="base64")
    assert raw.status_code == 200, raw.text
    for row, want in zip(raw.json()["data"], expected, strict=True):
        decoded = np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, want, atol=1e-5)
    # Different texts, different vectors: nothing is a constant.
    assert float(got[0] @ got[1]) < 0.9


def test_unknown_model_and_dimensions(sdk: openai.OpenAI, embedder: Embedder) -> None:
    with pytest.raises(openai.NotFoundError, match="all-MiniLM-L6-v2"):
        sdk.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.BadRequestError, match=f"{embedder.dimension}-dimensional"):
        sdk.embeddings.create(model=MODEL, input="hi", dimensions=128)
    same = sdk.embeddings.create(model=MODEL, input="hi", dimensions=embedder.dimension)
    assert len(same.data[0].embedding) == embedder.dimension


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"input": [[101, 102]]}, 400, "token ids"),
        ({"input": [1, 2, 3]}, 400, "token ids"),
        ({"input": ["fine", ""]}, 422, "input[1]: an empty string"),
        ({"input": []}, 422, "at least one text"),
        ({"input": ["x"] * 257}, 413, "256"),
        ({"input": ["short", "word " * 300]}, 413, "input[1]: 300 tokens, more than the 254"),
        ({"input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
    ],
)
def test_bad_input_and_limits(
    chat_app: str, auth_headers: dict[str, str], body: dict[str, Any], status: int, says: str
) -> None:
    error = expect_error(post(chat_app, auth_headers, model=MODEL, **body), status)
    assert says in error["message"], error


def test_embeddings_need_credentials(chat_app: str) -> None:
    expect_error(post(chat_app, {}, model=MODEL, input="hi"), 401)
