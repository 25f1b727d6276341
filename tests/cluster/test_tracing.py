"""Tracing: one chat turn is one trace, across the ingress, retrieval, the shard, the
router, the provider attempts and the self-hosted engine, as an OTLP collector receives it.

The turn runs in a process of its own with its own Ray (`tests/cluster/traced_turn.py`:
tracing is configured by `OTEL_*` variables set before Ray starts); its primary model
fails twice (503) and the self-hosted model answers, so retries and the fallback show."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.cluster import run_scenario

SERVER = 2  # OTLP SpanKind: SPAN_KIND_SERVER
ERROR = 2  # OTLP StatusCode: STATUS_CODE_ERROR


class Tree:
    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self.spans = spans
        self.by_id = {s["span_id"]: s for s in spans}
        self.children: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in sorted(spans, key=lambda s: s["start"]):
            self.children[s["parent_id"]].append(s)

    def one(self, name: str) -> dict[str, Any]:
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}"
        return found[0]

    def kids(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        return self.children[span["span_id"]]

    def under(self, span: dict[str, Any], name: str) -> dict[str, Any]:
        """The one descendant of `span` named `name` (Serve's spans may lie between)."""
        found, todo = [], list(self.kids(span))
        while todo:
            s = todo.pop()
            if s["name"] == name:
                found.append(s)
            todo.extend(self.kids(s))
        assert len(found) == 1, f"{len(found)} {name!r} under {span['name']!r}"
        return found[0]

    def draw(self, span: dict[str, Any], depth: int = 0) -> list[str]:
        a = span["attributes"]
        notes = [
            f"{k.split('.')[-1]}={a[k]}"
            for k in (
                "gen_ai.provider.name",
                "gen_ai.request.model",
                "chatapp.attempt",
                "chatapp.outcome",
                "error.type",
                "gen_ai.usage.output_tokens",
            )
            if k in a
        ]
        line = f"{'  ' * depth}{span['name']}  [{span['service']} pid {span['pid']}] " + " ".join(
            notes
        )
        return [line] + [ln for k in self.kids(span) for ln in self.draw(k, depth + 1)]


def _run_turn(pg_url: str, out: Path) -> dict[str, Any]:
    result, stdout = run_scenario(
        "tests.cluster.traced_turn", ["--database-url", pg_url], out, timeout=300
    )
    print(stdout[-1000:])  # how long each phase took
    return result


def test_one_turn_is_one_trace_from_the_http_request_to_the_engine(
    pg_url: str, tmp_path: Path
) -> None:
    result = _run_turn(pg_url, tmp_path / "spans.json")
    assert result.get("events", [])[-1:] == ["done"], result.get("events")
    received: list[dict[str, Any]] = result["spans"]
    turn = next(s for s in received if s["name"] == "chat.turn")
    tree = Tree([s for s in received if s["trace_id"] == turn["trace_id"]])
    chain = [turn]
    while chain[-1]["parent_id"]:
        chain.append(tree.by_id[chain[-1]["parent_id"]])
    root = chain[-1]
    print("\n".join(tree.draw(root)))

    # One trace: Serve's span of the HTTP request in the ingress replica is its root, then
    # FastAPI's span of the route and its endpoint's, then the turn; and no span of the
    # turn went astray into a trace of its own (a context lost on the way).
    assert [s["name"] for s in reversed(chain)] == [
        "replica_handle_request ChatIngress __call__",
        "POST /api/conversations/{conversation_id}/messages",
        "fastapi.endpoint",
        "chat.turn",
    ]
    assert root["attributes"]["http.status_code"] == "200"
    assert [s for s in tree.spans if not s["parent_id"]] == [root]
    ours = {"shard.begin_turn", "shard.finish_turn", "llm.route", "llm.attempt", "llm.engine"}
    strays = [
        s["name"] for s in received if s["name"] in ours and s["trace_id"] != turn["trace_id"]
    ]
    assert strays == []
    # Every request is one trace (FastAPI's own span joins Serve's instead of starting one).
    for serve_span in (s for s in received if s["name"].startswith("replica_handle_request Chat")):
        assert any(s["parent_id"] == serve_span["span_id"] for s in received), serve_span

    # The turn's parts, in order, under it.
    parts = [s["name"] for s in tree.kids(turn) if s["name"].startswith("chat.")]
    assert parts == ["chat.retrieve", "chat.begin_turn", "chat.generate", "chat.finish_turn"]
    retrieve = tree.one("chat.retrieve")
    assert tree.under(retrieve, "replica_handle_request Retrieval search")
    assert retrieve["attributes"]["chatapp.retrieval.hits"] == 0  # an empty knowledge base

    # The shard's spans come from the shard actor's process, under the turn's own calls.
    ingress_pid = turn["pid"]
    for step in ("begin_turn", "finish_turn"):
        [shard] = tree.kids(tree.one(f"chat.{step}"))
        assert shard["name"] == f"shard.{step}" and shard["kind"] == SERVER
        assert shard["pid"] != ingress_pid and shard["service"] == "chatapp"

    # The model call: through Serve to the router replica, one span per attempt there,
    # the primary's two failures (retried once) then the fallback, whose engine answered.
    route = tree.under(tree.one("chat.generate"), "llm.route")
    assert route["pid"] != ingress_pid
    attempts = [
        (a["attributes"]["gen_ai.provider.name"], a["attributes"]["chatapp.attempt"],
         a["attributes"]["chatapp.outcome"])
        for a in tree.kids(route)
        if a["name"] == "llm.attempt"
    ]  # fmt: skip
    assert attempts == [("openai", 1, "error"), ("openai", 2, "error"), ("self-hosted", 1, "ok")]
    failed = [a for a in tree.kids(route) if a["status"] == ERROR]
    assert [a["attributes"]["error.type"] for a in failed] == ["service_unavailable"] * 2
    fallback = tree.kids(route)[-1]
    engine = tree.under(fallback, "llm.engine")
    assert engine["pid"] not in (ingress_pid, route["pid"])
    assert engine["attributes"]["gen_ai.usage.output_tokens"] > 0

    # What ops read on the turn: who answered, after which failure, what it cost.
    a = turn["attributes"]
    assert a["chatapp.outcome"] == "complete" and turn["status"] != ERROR
    assert a["gen_ai.provider.name"] == "self-hosted" and a["chatapp.fallback_from"] == "gpt-fake"
    assert a["gen_ai.usage.output_tokens"] == engine["attributes"]["gen_ai.usage.output_tokens"]
    assert route["attributes"]["chatapp.fallback_from"] == "gpt-fake"

    # Never the conversation's content, anywhere: not the question, not a search's terms.
    values = json.dumps([s["attributes"] for s in received])
    assert "methane" not in values and "Saturn" not in values
    search = [s for s in received if s["attributes"].get("url.query")]
    assert [s["attributes"]["url.query"] for s in search] == ["q=REDACTED"]
