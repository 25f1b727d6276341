"""ChatApp on a 3-node Ray cluster on this machine (`ray.cluster_utils.Cluster`), users
chatting while Redis (the run's own) is down for 5 s, then while a worker node is removed:
no acknowledged reply lost, no sequence number duplicated, every user answered again after
each fault, shards on more than one node, and not one request failed while Redis was away
(first, so no request left over from another fault is counted in its row).
The scenario owns its Ray cluster, so it runs in a process of its own
(`tests/cluster/scenario.py`); `make chaos` runs every fault."""

from __future__ import annotations

from pathlib import Path

from tests.cluster import run_scenario


def test_redis_restarted_then_a_worker_node_removed_under_load_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    args = ["--database-url", pg_url, "--faults", "redis,node", "--window", "redis=10"]
    # the self-hosted model's replica on the removed node: ~20 s on a loaded machine
    args += ["--window", "node=30"]
    result, stdout = run_scenario(
        "tests.cluster.scenario", args, tmp_path / "result.json", timeout=600
    )
    print(stdout[-1500:])  # the per-fault table, in the test log
    assert result["acknowledged"] > 0
    assert result["lost"] == 0 and result["duplicated"] == 0
    redis, node = result["faults"]
    assert node["recovered_s"] is not None, node  # every user answered again
    assert redis["failed"] == 0 and redis["recovered_s"] is not None, redis  # chat went on
    assert len(set(result["placement"]["shards"].values())) > 1  # shards spread over nodes
