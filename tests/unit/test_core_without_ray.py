"""The core library imports and works with Ray absent."""

from __future__ import annotations

import subprocess
import sys


def test_chatapp_imports_without_ray() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import pkgutil, importlib, chatapp\n"
        "for m in pkgutil.walk_packages(chatapp.__path__, 'chatapp.'):\n"
        "    if '.migrations' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_module_of_the_core_reaches_for_the_ray_side() -> None:
    """Not even lazily, inside a function: the Ray adapters depend on the core, never the
    other way round (the CLI lives in deployments/)."""
    import re
    from pathlib import Path

    import chatapp

    pattern = re.compile(r"^\s*(import|from)\s+(ray|deployments|actors|pipelines)\b", re.M)
    offenders = [
        f"{path.relative_to(Path(chatapp.__file__).parent.parent)}: {match.group(0).strip()}"
        for path in Path(chatapp.__file__).parent.rglob("*.py")
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []
