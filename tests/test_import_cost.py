"""What importing escapelab costs: the package, its CLI and its runner load none of the heavy
optional libraries (scipy about 60 MiB, matplotlib), which are imported
where they are used, so every worker process and every CLI call starts without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import escapelab

HEAVY = ("scipy", "matplotlib")
SCRIPT = """
import json, sys
import escapelab, escapelab.cli, escapelab.runner.sweep, escapelab.experiments
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def test_importing_escapelab_loads_no_heavy_optional_library() -> None:
    env = dict(os.environ)
    src = str(Path(escapelab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *HEAVY],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(done.stdout) == []
