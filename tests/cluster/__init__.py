"""Scenarios that own a Ray cluster, each run in its own process by a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from deployments.serve_env import use_busy_node_deadlines

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(
    module: str, args: list[str], out: Path, *, timeout: int
) -> tuple[dict[str, Any], str]:
    """`python -m module args --json out` without this session's Ray, Serve and tracing
    settings (they are not the scenario cluster's), but with the deadlines of a busy
    node (`use_busy_node_deadlines`); its JSON result and its stdout."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    for name in list(env):
        if name.startswith(("RAY_SERVE_", "RAY_ADDRESS", "OTEL_")):
            del env[name]
    use_busy_node_deadlines(env)
    run = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result, run.stdout
