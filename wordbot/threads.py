"""How many threads the serving commands compute with: one BLAS thread, set once at
start for the whole process (threadpoolctl's limits are process-wide). A suggestion's
products are small and bound by reading memory, so a second thread buys little on an
idle machine and, on a busy one, makes every word wait for a core (3x slower, measured
by benchmarks/bench_engine.py). `wordbot train` keeps every core."""

from __future__ import annotations

SERVING = ("next", "continue", "eval", "repl", "discord")  # the commands that serve a model

_limits: list = []  # the limit, once set (kept so it is never undone)


def one_blas_thread() -> None:
    """Limit BLAS (OpenBLAS, MKL, ...) to one thread for the rest of the process."""
    if _limits:
        return
    import numpy  # noqa: F401  (loads the BLAS library the limit applies to)
    from threadpoolctl import threadpool_limits

    _limits.append(threadpool_limits(limits=1, user_api="blas"))


def serving(args):
    """`args` of a command line, after giving a serving command its one BLAS thread."""
    if getattr(args, "command", None) in SERVING:
        one_blas_thread()
    return args
