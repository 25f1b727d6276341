"""The KubeRay manifests (the RayService and the index RayJob) are valid against KubeRay's
CRDs and agree with the application: serve_config.yaml, the settings they set, the index
pipeline's command line, the probes' endpoints."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# the CRDs kept with the manifests, and KubeRay's own beside this checkout when present
CRD_DIRS = [d for d in (ROOT / "cluster/crds", ROOT.parent / "shared/kuberay-crds") if d.is_dir()]
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML


@functools.cache
def _schema(kind: str = "rayservices", crds: Path = ROOT / "cluster/crds") -> dict[str, Any]:
    crd = yaml.load((crds / f"ray.io_{kind}.yaml").read_text(), Loader=Loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("manifest", "kind"),
    [("cluster/rayservice.yaml", "rayservices"), ("cluster/rayjob-index.yaml", "rayjobs")],
)
@pytest.mark.parametrize("crds", CRD_DIRS, ids=lambda d: d.parent.name + "/" + d.name)
def test_manifests_are_valid_against_kuberays_crds(manifest: str, kind: str, crds: Path) -> None:
    if not (crds / f"ray.io_{kind}.yaml").exists():
        pytest.skip(f"no {kind} CRD in {crds}")
    jsonschema.validate(_load(manifest), _schema(kind, crds))


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


# -- probes ------------------------------------------------------------------------------

RAY_NODE_HEALTH = {"path": "/api/healthz", "port": 52365}  # the dashboard agent (Ray >= 2.53)


def _containers(rayservice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group, Ray container) of the head and every worker group."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    for _, group in groups:  # the agent's port moved would need the probes to follow
        assert "dashboard-agent-listen-port" not in group.get("rayStartParams", {})
    return [(name, g["template"]["spec"]["containers"][0]) for name, g in groups]


def test_probes_keep_kuberays_ray_checks_and_add_the_apps_healthz_on_workers() -> None:
    from deployments.ingress.routes.health import router

    assert "/healthz" in {route.path for route in router.routes}  # type: ignore[attr-defined]
    rayservice = _load("cluster/rayservice.yaml")
    for group, container in _containers(rayservice):
        # KubeRay injects its probes only where none is set: each one here is complete
        readiness, liveness = container["readinessProbe"], container["livenessProbe"]
        # liveness restarts a wedged Ray node, never an app failure (nor a node without
        # replicas, which has no Serve proxy to answer on port 8000)
        assert liveness["httpGet"] == RAY_NODE_HEALTH, group
        assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 300, group
        if group == "head":
            # KubeRay deploys the app only once the head is Ready: never wait for the app
            assert readiness["httpGet"] == RAY_NODE_HEALTH
            continue
        script = readiness["exec"]["command"][-1]
        urls = [word for word in shlex.split(script) if word.startswith("http://")]
        assert urls == [
            "http://localhost:52365/api/healthz",  # the Ray node (KubeRay's check)
            "http://localhost:8000/-/healthz",  # Serve's proxy here, 503 while draining
            "http://localhost:8000/healthz",  # ChatApp answers through this pod's port
        ], group
        assert script.count("&&") == len(urls) - 1, group  # every check must pass
        assert readiness["failureThreshold"] == 1, group  # out of the service at once
        wget_timeouts = 2 * len(urls)
        assert readiness["timeoutSeconds"] >= wget_timeouts, group
        serve_port = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert serve_port.get("serve", 8000) == 8000, group


def test_a_probe_on_a_missing_port_is_caught() -> None:
    rayservice = _load("cluster/rayservice.yaml")
    probe = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]["livenessProbe"]
    probe["httpGet"] = {"path": "/api/healthz"}  # no port
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rayservice, _schema())


# -- the index RayJob -------------------------------------------------------------------


def _job_env(rayjob: dict[str, Any]) -> dict[str, str]:
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    return {k: str(v) for k, v in runtime_env["env_vars"].items()}


def test_the_index_job_runs_the_pipelines_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from pipelines import build_index

    rayjob = _load("cluster/rayjob-index.yaml")
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.build_index"]
    calls: list[dict[str, Any]] = []

    def record(sources: list[str], **kwargs: Any) -> Any:
        calls.append({"sources": sources, **kwargs})
        return build_index.BuildReport("kb", 1, False, 0, [], [], [], 0, 0, "flat", 0.0)

    # the job's command line through the pipeline's own parser, without Ray or a build
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(build_index, "build_index", record)
    for name, value in _job_env(rayjob).items():
        monkeypatch.setenv(name, value)
    assert build_index.main(argv[3:]) == 0
    (call,) = calls
    assert call["sources"] and call["kb"]
    rag = call["rag"]
    assert str(rag.index_dir) == "/mnt/indexes"
    assert rag.embed_num_gpus >= 1  # embeddings on the GPUs


def test_the_index_job_embeds_on_the_gpu_group_and_writes_where_retrieval_reads() -> None:
    from chatapp.config import RagSettings

    rayjob, rayservice = _load("cluster/rayjob-index.yaml"), _load("cluster/rayservice.yaml")
    spec = rayjob["spec"]
    env = _job_env(rayjob)
    unknown = {k for k in env if k.startswith("RAG_")} - {
        f"RAG_{f.upper()}" for f in RagSettings.model_fields
    }
    assert not unknown, f"not RagSettings fields: {unknown}"
    # the cluster is the job's own, gone when it ends; a failed build is not retried
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 0
    cluster = spec["rayClusterSpec"]
    service_cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == service_cluster["rayVersion"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # work on workers
    (gpu,) = cluster["workerGroupSpecs"]
    service_gpu = next(g for g in service_cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    container = gpu["template"]["spec"]["containers"][0]
    # the GPU image the RayService names (Dockerfile.gpu), on every pod of the job
    image = service_gpu["template"]["spec"]["containers"][0]["image"]
    pods = [cluster["headGroupSpec"], gpu]
    assert {p["template"]["spec"]["containers"][0]["image"] for p in pods} == {image}
    gpus_per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    wanted = int(env["RAG_EMBED_CONCURRENCY"]) * float(env["RAG_EMBED_NUM_GPUS"])
    assert gpus_per_pod >= 1 and gpu["replicas"] * gpus_per_pod >= wanted
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "template"
    ]["spec"]["tolerations"]

    # the driver (on the head) writes to the volume the RayService's pods read
    claim = _load("cluster/indexes-pvc.yaml")
    assert (
        claim["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in claim["spec"]["accessModes"]
    )

    def mounts_claim(template: dict[str, Any], path: str) -> bool:
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in template["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        mounts = template["spec"]["containers"][0].get("volumeMounts", [])
        return any(
            m["mountPath"] == path and volumes.get(m["name"]) == claim["metadata"]["name"]
            for m in mounts
        )

    # every pod of the job, the submitter included, is one NetworkPolicy lets reach the
    # head's dashboard (the submitter runs `ray job submit` against it)
    policy = _load("cluster/networkpolicy.yaml")
    for template in [*(p["template"] for p in pods), spec["submitterPodTemplate"]]:
        assert _selects(policy["spec"]["podSelector"], template["metadata"]["labels"])

    index_dir = env["RAG_INDEX_DIR"]
    assert mounts_claim(cluster["headGroupSpec"]["template"], index_dir)
    for template in _pod_templates(rayservice):
        assert mounts_claim(template, index_dir), template["spec"]["containers"][0]["name"]
        container_env = {
            e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]
        }
        assert container_env["RAG_INDEX_DIR"] == index_dir


def test_pods_wait_for_their_replicas_to_finish_streaming() -> None:
    """A drained pod's replicas let their streams finish (SERVE_GRACEFUL_SHUTDOWN_TIMEOUT_S):
    Kubernetes must not kill the pod before."""
    from chatapp.config import Settings

    wait = Settings.from_overrides({}).serve.graceful_shutdown_timeout_s
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    for template in _pod_templates(rayservice):
        assert template["spec"]["terminationGracePeriodSeconds"] > wait
