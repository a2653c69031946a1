"""How many threads the serving commands compute with: one BLAS thread, set once at
start for the whole process (threadpoolctl's limits are process-wide). A suggestion's
products are small and bound by reading memory, so a second thread buys little on an
idle machine and, on a busy one, makes every word wait for a core (3x slower, measured
by benchmarks/bench_engine.py). `wordbot train` keeps every core."""

from __future__ import annotations

import os
import sys

SERVING = ("next", "continue", "eval", "repl", "discord")  # the commands that serve a model
# What OpenBLAS (NumPy's wheels) and MKL read when they are loaded.
_BLAS_THREADS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_limits: list = []  # the limit, once set (kept so it is never undone)


def one_blas_thread() -> None:
    """Limit BLAS (OpenBLAS, MKL, ...) to one thread for the rest of the process."""
    if _limits:
        return
    if "numpy" not in sys.modules:
        # Before NumPy loads its BLAS, that BLAS is told through its environment (and starts no
        # threads); threadpoolctl, which finds it among every loaded library, costs ~10 ms. The
        # environment is restored at once: what this process starts keeps its own threads.
        before = {name: os.environ.get(name) for name in _BLAS_THREADS_ENV}
        os.environ.update(dict.fromkeys(_BLAS_THREADS_ENV, "1"))
        try:
            import numpy
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        blas = str(((numpy.__config__.CONFIG.get("Build Dependencies") or {}).get("blas") or {}).get("name"))
        if "openblas" in blas or "mkl" in blas:
            _limits.append(f"{blas}, one thread from its environment")
            return
    from threadpoolctl import threadpool_limits

    _limits.append(threadpool_limits(limits=1, user_api="blas"))


def serving(args):
    """`args` of a command line, after giving a serving command its one BLAS thread."""
    if getattr(args, "command", None) in SERVING:
        one_blas_thread()
    return args
