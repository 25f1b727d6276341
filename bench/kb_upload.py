"""Knowledge-base upload benchmark: from a user's upload to an answer that cites it.

Baseline, in the same run on the same files: the Ray Data pipeline called directly
(`pipelines.build_index.build_index` on a warm local Ray: what `chatapp index build`
does, without Ray's start-up). Then ChatApp (`chatapp run`: simulated model, SQLite, no
default knowledge base, its own Ray) as a user sees it: create a knowledge base, upload
the files over HTTP (multipart), follow the index job until it is done, ask a question
and check that the answer cites an uploaded file. Printed: each phase's seconds, and the
upload-to-answer time as a ratio of the direct build (the background job's overhead:
claiming the job, the indexer's own pipeline run, loading the index in retrieval).

The corpus is the project's README.md and docs/*.md (`--copies` times); the model's
ONNX export is made before anything is timed.

    .venv/bin/python bench/kb_upload.py [--copies 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/kb_upload.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.procs import ROOT, Supervisor
from bench.systems import ChatAppOptions, new_account, settings_fields, start_chatapp

QUESTION = "How do I deploy ChatApp on KubeRay?"


def corpus(copies: int) -> list[tuple[str, bytes]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        (f"copy{i}-{f.name}" if copies > 1 else f.name, f.read_bytes())
        for i in range(copies)
        for f in files
    ]


def direct_build(files: list[tuple[str, bytes]], tmp: Path) -> float:
    """Seconds of the pipeline alone on `files` (Ray already up, model exported)."""
    import ray

    from chatapp.config import RagSettings
    from chatapp.rag.embedder import embedder_for
    from pipelines.build_index import build_index

    folder = tmp / "direct"
    folder.mkdir()
    for name, data in files:
        (folder / name).write_bytes(data)
    rag = RagSettings(index_dir=tmp / "direct-indexes", model_cache_dir=ROOT / "var" / "models")
    embedder_for(rag)  # the ONNX export, once, before anything is timed
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        started = time.perf_counter()
        report = build_index([str(folder)], kb="direct", rag=rag, relative_names=True)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    print(f"  direct pipeline: {report.chunks} chunks of {report.documents} files, {seconds:.1f} s")
    return seconds


def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read() or b"null")


def _upload(url: str, headers: dict[str, str], files: list[tuple[str, bytes]]) -> Any:
    boundary = uuid.uuid4().hex
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    )
    request = urllib.request.Request(
        url, data=parts + f"--{boundary}--\r\n".encode(), method="POST", headers=dict(headers)
    )
    request.add_header("content-type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def through_chatapp(files: list[tuple[str, bytes]], tmp: Path) -> dict[str, float]:
    """Seconds of each phase a user waits for, through `chatapp run`."""
    options = ChatAppOptions(
        src=ROOT,
        settings_fields=settings_fields(ROOT),
        tokens_per_s=2000,
        reply_tokens=8,
        database_url=None,
        overrides={
            "rag": {
                "enabled": True,  # the chat benchmarks' defaults switch it off
                "build_on_start": False,
                "default_kb": "none-here",
                "index_dir": str(tmp / "indexes"),
                "upload_dir": str(tmp / "uploads"),
                "model_cache_dir": str(ROOT / "var" / "models"),
            }
        },
        start_timeout_s=600,
    )
    with Supervisor() as supervisor:
        server = start_chatapp(supervisor, tmp, "chatapp", {}, options)
        base = server.urls["proxy"]
        headers = server.headers or new_account(base)  # knowledge bases are per user
        kb = _call("POST", f"{base}/api/knowledge-bases", headers, {"name": "bench"})["id"]
        started = time.perf_counter()
        _upload(f"{base}/api/knowledge-bases/{kb}/files", headers, files)
        uploaded = time.perf_counter()
        while True:
            job = _call("GET", f"{base}/api/knowledge-bases/{kb}", headers)["job"]
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        indexed = time.perf_counter()
        if job["status"] != "done":
            raise RuntimeError(f"the index job failed: {job}")
        conv = _call("POST", f"{base}/api/conversations", headers, {})["id"]
        reply = _call(
            "POST",
            f"{base}/api/conversations/{conv}/messages",
            headers,
            {"content": QUESTION, "knowledge_base_id": kb, "stream": False, "rag": "always"},
        )
        answered = time.perf_counter()
    sources = reply["message"]["sources"]
    if not sources:
        raise RuntimeError("the answer cites nothing")
    print(f"  first source of the answer: {sources[0]['source']}")
    return {
        "upload": uploaded - started,
        "index job": indexed - uploaded,
        "first answer": answered - indexed,
        "upload to answer": answered - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of README + docs/")
    args = parser.parse_args()
    files = corpus(args.copies)
    size = sum(len(d) for _, d in files)
    print(f"corpus: {len(files)} files, {size / 1024:.0f} KiB; load average {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="kb-upload-"))
    try:
        baseline = direct_build(files, tmp)
        phases = through_chatapp(files, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n| phase | seconds |\n| --- | --- |\n| direct pipeline (baseline) | {baseline:.1f} |")
    for name, seconds in phases.items():
        print(f"| {name} | {seconds:.1f} |")
    ratio = phases["upload to answer"] / baseline
    print(f"\nupload to a cited answer: {ratio:.2f}x the direct pipeline's time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
