"""One thread for numpy's linear algebra (OpenBLAS) in each process that reads or hears notes.

OpenBLAS starts a helper thread per core in every process that uses it: the bot process, which
reads what notes mean, and each hearing worker. Notes already run side by side, one per worker
and turn slot, so those helpers only fight them for the same cores. On two cores a raid of four
players answered 16-50% fewer notes per second with them (`bench/offline.py`, docs/offline-
engine.md). An operator who sets OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS keeps
their own choice."""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

CHOSEN_BY_OPERATOR = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """For the rest of this process, unless the environment says otherwise."""
    if any(name in os.environ for name in CHOSEN_BY_OPERATOR):
        return
    threadpool_limits(limits=1, user_api="blas")
