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
