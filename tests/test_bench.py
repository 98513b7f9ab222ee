"""The bench scripts the docs cite run as cited: the catch-up's baseline (an older commit's code)
still runs."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_the_catch_up_bench_runs_against_its_old_commit() -> None:
    # The old commit's catch-up reads the ledger as it was; a read dropped since fails every
    # attempt of it, which the bench says at once.
    done = subprocess.run(
        [sys.executable, "bench/catch_up.py", "--dms", "2", "--latency", "0.05"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [r[1] for r in rows if r and r[0] == "0.05s"] == ["old", "new"], done.stdout
