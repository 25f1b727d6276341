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
