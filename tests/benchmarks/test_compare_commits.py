"""compare_commits: two commits' runs side by side, and nothing left behind in the repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _worktrees() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in listed.stdout.splitlines() if line.startswith("worktree ")]


def test_a_commit_against_the_checkout_is_reported_and_its_worktree_removed(tmp_path):
    before = _worktrees()
    results = tmp_path / "compare.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "compare_commits.py"),
            "--before",
            "HEAD",
            "--records-per-partner",
            "3",
            "--pairs",
            "1",
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = results.read_text().splitlines()
    summary = json.loads(line)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert summary["before"] == head
    (size,) = summary["sizes"]
    assert size["records_per_partner"] == 3 and size["pairs"] == 1
    assert len(size["before_s"]) == len(size["after_s"]) == 1
    assert min(size["before_s"] + size["after_s"]) > 0
    assert _worktrees() == before  # the worktree it made is gone
