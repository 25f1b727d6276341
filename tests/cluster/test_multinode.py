"""ChatApp on a 3-node Ray cluster on this machine (`ray.cluster_utils.Cluster`), users
chatting while Redis (the run's own) is down for 5 s, then while a worker node is removed:
no acknowledged reply lost, no sequence number duplicated, every user answered again after
each fault, shards on more than one node, and not one request failed while Redis was away
(first, so no request left over from another fault is counted in its row).
The scenario owns its Ray cluster, so it runs in a process of its own
(`tests/cluster/scenario.py`); `make chaos` runs every fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_redis_restarted_then_a_worker_node_removed_under_load_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    for name in list(env):  # this session's Ray and Serve settings are not the cluster's
        if name.startswith(("RAY_SERVE_", "RAY_ADDRESS")):
            del env[name]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.cluster.scenario",
            "--database-url",
            pg_url,
            "--faults",
            "redis,node",
            "--window",
            "redis=10",
            "--window",  # the self-hosted model's replica on the removed node: ~20 s, loaded
            "node=30",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    print(run.stdout[-1500:])  # the per-fault table, in the test log
    assert result["acknowledged"] > 0
    assert result["lost"] == 0 and result["duplicated"] == 0
    redis, node = result["faults"]
    assert node["recovered_s"] is not None, node  # every user answered again
    assert redis["failed"] == 0 and redis["recovered_s"] is not None, redis  # chat went on
    assert len(set(result["placement"]["shards"].values())) > 1  # shards spread over nodes
