"""bench_cli's CPU accounting: a process that outlives the measured child still counts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# Run in a fresh interpreter: adopt_orphans makes the process a subreaper for good, which a
# pytest session must not become.
MEASURE_AN_ORPHAN = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import bench_cli

    # The child starts a grandchild that burns 0.3 s of CPU, and ends without waiting for it.
    burn = "import time\\nwhile time.process_time() < 0.3:\\n    pass"
    child = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {burn!r}])"
    adopting = bench_cli.adopt_orphans()
    measured = bench_cli.measure(
        [sys.executable, "-c", child],
        env=None,
        logs=Path(tempfile.mkdtemp()),
        name="orphan",
        sampling={"interval": 0.05, "use_psutil": False},
        adopting=adopting,
    )
    print(json.dumps({"adopting": adopting, "cpu_s": measured.cpu_s,
                      "tree_cpu_s": measured.tree_cpu_s, "returncode": measured.returncode}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_tree_cpu_counts_a_process_that_outlives_the_child():
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_AN_ORPHAN, str(BENCHMARKS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["adopting"] and measured["returncode"] == 0
    # The child alone (what wait4 tells) leaves the grandchild out; the tree holds it.
    assert measured["tree_cpu_s"] >= 0.3
    assert measured["cpu_s"] < measured["tree_cpu_s"] - 0.2
