"""The container code, the hub-cache lookup and the doctor run on login nodes and in thin
images: importing them must not load torch, transformers or the environment stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "minigrid", "gymnasium")


def test_light_modules_import_no_heavy_stack() -> None:
    # A fresh interpreter: this test session has long imported torch.
    code = (
        "import json, sys\n"
        "import glamhpc.containers, glamhpc.policy.hubcache, glamhpc.launch.doctor\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
