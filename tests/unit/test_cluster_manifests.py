"""The KubeRay manifest is valid against the RayService CRD and serves serve_config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "cluster/crds/ray.io_rayservices.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_rayservice_is_valid_and_embeds_serve_config() -> None:
    manifest = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    jsonschema.validate(manifest, _schema())
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def test_a_typo_in_the_manifest_is_caught() -> None:
    manifest = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    try:
        jsonschema.validate(manifest, _schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("an invalid replicas value passed validation")


def test_scrape_config_targets_every_ray_pod_metrics_port() -> None:
    """ChatApp's series come through each node's Ray metrics agent (the dashboard's
    queries are checked in tests/unit/test_monitoring.py and against a real Prometheus
    in tests/integration/test_prometheus.py): one PodMonitor on every Ray pod."""
    docs = list(yaml.safe_load_all((ROOT / "cluster/monitoring/servicemonitor.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["PodMonitor"]
    monitor = docs[0]
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # KubeRay gives every Ray container the metrics port (8080); the head declares it
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in head["spec"]["containers"] for p in c["ports"]}
    assert ports["metrics"] == 8080


def _pod_templates(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"] for g in groups]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def test_network_policy_admits_only_the_serve_port_from_outside_ray() -> None:
    policy = yaml.safe_load((ROOT / "cluster/networkpolicy.yaml").read_text())
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    assert policy["kind"] == "NetworkPolicy" and "Ingress" in policy["spec"]["policyTypes"]
    selector = policy["spec"]["podSelector"]
    assert selector["matchLabels"], "the policy selects the Ray pods, not everything"
    # every Ray pod (head and each worker group) is covered by the policy
    for template in _pod_templates(rayservice):
        assert _selects(selector, template["metadata"]["labels"]), template

    ports_from_outside: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        peers = rule.get("from")
        assert peers, "no rule admits traffic from everywhere"
        ray_pods_only = all(
            set(p) == {"podSelector"} and p["podSelector"] == selector for p in peers
        )
        if ray_pods_only:
            continue  # Ray's own traffic between its pods
        ports = {p["port"] for p in rule.get("ports", [])}
        assert ports, f"a rule from outside the Ray pods opens every port: {rule}"
        operator = all(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            == "kuberay-operator"
            for p in peers
        )
        if operator:
            assert ports == {8265}, "the operator needs the dashboard's Serve API only"
            continue
        ports_from_outside |= ports
    # users and Prometheus: Serve's port and Ray's metrics port; never the dashboard or GCS
    assert 8000 in ports_from_outside
    assert ports_from_outside <= {8000, 8080}, ports_from_outside


def test_the_dashboard_is_not_on_a_public_service() -> None:
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    serve_service = rayservice["spec"]["serveService"]["spec"]
    assert [p["port"] for p in serve_service["ports"]] == [8000]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head.get("enableIngress", False) is False
    # in production the app hides /docs and wants a token for /metrics
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["CHATAPP_ENVIRONMENT"]["value"] == "production"
    assert "SERVE_METRICS_TOKEN" in env and "SERVE_DOCS_ENABLED" not in env
    assert env["SERVE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "chatapp-secrets"


def test_workers_spread_over_zones_and_hosts_and_drain_one_at_a_time() -> None:
    manifest = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in cluster["workerGroupSpecs"]:
        spread = group["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in spread}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, group
        labels = group["template"]["metadata"]["labels"]
        for constraint in spread:  # each selects the group's own pods
            assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = yaml.safe_load((ROOT / "cluster/pdb.yaml").read_text())
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    # KubeRay labels worker pods ray.io/node-type=worker on top of the template's labels
    for group in cluster["workerGroupSpecs"]:
        selected = {**group["template"]["metadata"]["labels"], "ray.io/node-type": "worker"}
        assert pdb["spec"]["selector"]["matchLabels"].items() <= selected.items()


def _dockerfile(name: str) -> tuple[str, str]:
    """(the base image, the whole text) of Dockerfile `name`."""
    text = (ROOT / name).read_text()
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    return base, text


def test_the_images_are_ray_of_the_pinned_version_with_every_package() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    ray_version = ray_pin.split("==")[1]
    manifest = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == ray_version
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for name, suffix, install in (
        ("Dockerfile", "", "pip install --no-cache-dir ."),
        ("Dockerfile.gpu", "-gpu", 'pip install --no-cache-dir ".[gpu]"'),
    ):
        base, text = _dockerfile(name)
        assert base == f"rayproject/ray:{ray_version}-py311{suffix}", name
        for package in packages:
            assert f"COPY --chown=ray:users {package} ./{package}" in text, (name, package)
        assert install in text, name
