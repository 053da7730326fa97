"""Run a fine-tune in a fresh process, so that its memory goes back to the OS when it ends.

Why: after a LoRA fine-tune on CPU, glibc keeps fragmented heap and thread arenas that
`malloc_trim` cannot return. Measured on the quickstart's first fine-tune (2026-12-06, 2 Intel
Xeon cores): RSS 305 MiB before, 1,114 MiB after `release_memory` with no live tensor (heap
102 -> 556 MiB, anonymous maps 78 -> 363 MiB), and the second fine-tune in the same process
peaked 1.3 GiB higher than the first (max RSS 6.29 vs 4.95 GiB). A spawned child gives all of
it back when it exits, so a run's peak is one fine-tune's, however many it trains.

`spawn`, not `fork`: a forked child would inherit the parent's heap (and, on a GPU machine, a
CUDA context it must not use). The child re-imports emkit (a few seconds per fine-tune).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")


def _child_setup(level: int, parent: int) -> None:
    """In the child: die with the parent (Linux `PR_SET_PDEATHSIG`), so a killed run never
    leaves an orphan training on and later renaming its adapter into place beside a restarted
    run; then log at the parent's level. A parent that died while the child started (before
    the signal was armed) is caught by comparing the parent pid."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL)) != 0:  # 1 = PR_SET_PDEATHSIG
            logging.getLogger(__name__).warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)",
                                                ctypes.get_errno())
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the child outlives a killed parent
    if os.getppid() != parent:
        os._exit(1)
    logging.basicConfig(level=level, format="%(levelname)s:%(name)s:%(message)s")


class ChildDied(RuntimeError):
    """The child process ended without a result (killed, e.g. out of memory)."""


def in_fresh_process(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """`fn(*args, **kwargs)` in a spawned child; its result, or its exception raised here
    (with the child's traceback as the cause). `fn` and its arguments must pickle: a
    module-level function and plain data (paths, pydantic settings).

    Interrupted here (Ctrl-C, a cancelled task), the child is killed before this returns: it
    must not finish a fine-tune nobody waits for. A child that dies without a result (killed,
    out of memory) is one `ChildDied` error with its exit code."""
    level = logging.getLogger("emkit").getEffectiveLevel()
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_child_setup, initargs=(level, os.getpid()))
    workers: set = set()
    try:
        future = pool.submit(fn, *args, **kwargs)  # starts the worker
        workers = set(multiprocessing.active_children()) - before
        return future.result()
    except BrokenProcessPool:
        # The pool's manager thread reaps the dead worker too; reading its exit code while
        # that thread is mid-reap gave None (seen once in CI). Its shutdown joins that thread,
        # after which every worker's exit code is set.
        pool.shutdown(wait=True, cancel_futures=True)
        for w in workers:
            w.join(5)
        codes = sorted(str(w.exitcode) for w in workers) or ["unknown"]
        raise ChildDied(f"{getattr(fn, '__name__', fn)}: its process ended without a result "
                        f"(exit code {', '.join(codes)}; a negative code is the signal that "
                        "killed it, -9 often the out-of-memory killer)") from None
    except BaseException:
        for w in workers:
            w.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
