"""One chat turn with tracing on, its spans received over OTLP/HTTP by a tiny collector.

The run owns its Ray (Serve reads its tracing variables when its processes start, so they
are set before Ray starts, as an operator sets them where Ray runs), so it runs in a
process of its own: `tests/cluster/test_tracing.py` starts it and checks the tree.

The app: a fake OpenAI as the primary model that answers 503 twice (the retry policy's
two attempts) so the turn falls back to the self-hosted model (the simulated engine),
retrieval on (an empty knowledge-base folder: searched, nothing found), one shard, the
real PostgreSQL and Redis. One user searches their conversations, then posts one
streamed message; the collector waits until the turn's spans from every process have
arrived and writes every span it received (``--json``) with the turn's question and
conversation id.

    .venv/bin/python -m tests.cluster.traced_turn --database-url postgresql+asyncpg://... \
        --json /tmp/spans.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

QUESTION = "Which moon of Saturn has lakes of methane? (tracing test)"
# What must have arrived before the trace is complete: ChatApp's spans in the ingress, the
# shard and the router, the engine's, and Serve's root span of the HTTP request.
AWAITED = (
    "chat.turn",
    "chat.finish_turn",
    "shard.finish_turn",
    "llm.route",
    "llm.engine",
    "replica_handle_request ChatIngress __call__",
)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP trace receiver (protobuf `ExportTraceServiceRequest` on /v1/traces)
    keeping every span as a plain dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _keep(self, request: Any) -> None:
        kept = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    kept.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "service": resource.get("service.name"),
                            "pid": resource.get("process.pid"),
                            "scope": scope_spans.scope.name,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        with self._lock:
            self.spans.extend(kept)

    def names_in(self, trace_id: str) -> set[str]:
        with self._lock:
            return {s["name"] for s in self.spans if s["trace_id"] == trace_id}

    def trace_of(self, name: str) -> str | None:
        with self._lock:
            return next((s["trace_id"] for s in self.spans if s["name"] == name), None)

    def stop(self) -> None:
        self._server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--json", required=True, help="where the received spans are written")
    parser.add_argument("--wait-s", type=float, default=30, help="for the spans to arrive")
    args = parser.parse_args()

    began = time.monotonic()

    def progress(what: str) -> None:
        print(f"{time.monotonic() - began:6.1f} s  {what}", flush=True)

    receiver = OtlpReceiver()
    # As an operator sets them where Ray starts; spans leave each process within 100 ms.
    os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.port}"
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    os.environ["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = "otel,process"  # each span's pid
    # tests.conftest sets Serve's fast path (`use_serve_fast_path`, tracing included) and
    # free HAProxy ports as it is imported: after the variables above.
    import httpx
    import ray
    from ray import serve

    from actors.client import kill_shards
    from chatapp.config import Settings
    from deployments.app import build_app
    from tests.conftest import REDIS_URL, register_and_login, run_app
    from tests.fakes.providers import FakeOpenAI, Status
    from tests.integration.sse import iter_events

    openai = FakeOpenAI().start()
    openai.enqueue(Status(503), Status(503))
    overrides: dict[str, Any] = {
        "database": {"url": args.database_url},
        "redis": {"url": REDIS_URL, "key_prefix": f"chatapp-trace-{uuid.uuid4().hex[:8]}:"},
        "rag": {"index_dir": tempfile.mkdtemp(prefix="chatapp-trace-kb-")},
        "llm": {"engine": "simulated", "simulated_reply_tokens": 8},
        "shards": {"count": 1, "name_prefix": f"trace-shard-{uuid.uuid4().hex[:6]}"},
        "providers": {
            "openai_api_key": "sk-test",
            "openai_base_url": openai.base_url,
            "models": [
                {
                    "name": "gpt-fake",
                    "provider": "openai",
                    "provider_model": "gpt-x",
                    "context_window": 16000,
                }
            ],
            "primary": "gpt-fake",
            "retry_attempts": 2,
            "retry_initial_s": 0.05,
            "breaker_threshold": 1000,
        },
    }
    port = _free_port()
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        namespace="chatapp-trace",
        log_to_driver=False,
    )
    progress("ray started")
    result: dict[str, Any] = {"question": QUESTION}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = run_app(
            build_app(overrides),
            name="chatapp",
            route_prefix="/",
            base_url=f"http://127.0.0.1:{port}",
        )
        progress("app running")
        headers = register_and_login(url)
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            conversation = http.post("/api/conversations", json={}).json()["id"]
            # a search first (its spans leave the ingress before the turn's): FastAPI's
            # span of it must not carry the terms (`url.query`)
            assert http.get("/api/conversations", params={"q": "methane"}).status_code == 200
            events = []
            with http.stream(
                "POST",
                f"/api/conversations/{conversation}/messages",
                json={"content": QUESTION, "stream": True},
            ) as response:
                assert response.status_code == 200, response.read()
                events = [e.event for e in iter_events(response)]
        result.update(conversation_id=conversation, events=events)
        progress("turn answered")
        deadline = time.monotonic() + args.wait_s
        while time.monotonic() < deadline:
            turn = receiver.trace_of("chat.turn")
            if turn is not None and set(AWAITED) <= receiver.names_in(turn):
                break
            time.sleep(0.2)
        time.sleep(0.5)  # stragglers of the same batch
        progress(f"{len(receiver.spans)} spans received")
    finally:
        result["spans"] = receiver.spans
        with open(args.json, "w") as out:
            json.dump(result, out)
        serve.shutdown()
        kill_shards(Settings.from_overrides(overrides))
        ray.shutdown()
        openai.stop()
        receiver.stop()


if __name__ == "__main__":
    main()
