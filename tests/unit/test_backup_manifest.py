"""The nightly backup CronJob (cluster/backup-cronjob.yaml) runs `chatapp backup` in the
RayService's image, with the RayService's DATABASE_URL, into its own volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _docs() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "cluster/backup-cronjob.yaml").read_text())
    return {d["kind"]: d for d in docs}


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _docs()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def _ray_container() -> dict[str, Any]:
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    container: dict[str, Any] = head["containers"][0]
    return container


def test_it_runs_nightly_one_at_a_time() -> None:
    cronjob = _docs()["CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    minute, hour, *rest = cronjob["spec"]["schedule"].split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and rest == ["*", "*", "*"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod()["restartPolicy"] in ("Never", "OnFailure")


def test_it_runs_chatapp_backup_in_the_rayservices_image_with_its_database_url() -> None:
    (container,) = _pod()["containers"]
    assert container["image"] == _ray_container()["image"]
    command = container["command"]
    assert command[:2] == ["chatapp", "backup"]
    env = {e["name"]: e for e in container["env"]}
    ray_env = {e["name"]: e for e in _ray_container()["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == ray_env["DATABASE_URL"]["valueFrom"]
    assert "value" not in env["DATABASE_URL"]  # from the secret, never in the manifest


def test_it_backs_up_into_its_persistent_volume() -> None:
    (container,) = _pod()["containers"]
    target = Path(container["command"][2])
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    (volume,) = [name for name, path in mounts.items() if target.is_relative_to(path)]
    claim = {v["name"]: v for v in _pod()["volumes"]}[volume]["persistentVolumeClaim"]
    pvc = _docs()["PersistentVolumeClaim"]
    assert claim["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


def test_its_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest's command line, run as is with the volume's path moved here (and a
    SQLite database, as no PostgreSQL is at hand in unit tests), writes a backup."""
    import sqlite3
    from contextlib import closing

    (container,) = _pod()["containers"]
    mount = container["volumeMounts"][0]["mountPath"]
    (tmp_path / "var").mkdir()
    with closing(sqlite3.connect(tmp_path / "var" / "chatapp.db")) as db:
        db.execute("CREATE TABLE users (id TEXT)")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_VAR_DIR", str(tmp_path / "var"))
    volume = tmp_path / "backups"
    volume.mkdir()
    argv = [str(volume) if a == mount else a for a in container["command"][1:]]
    assert main(argv) == 0
    (backup,) = volume.iterdir()
    assert backup.name.startswith("chatapp-")
