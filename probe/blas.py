"""One BLAS thread for numpy products that sit among other parallel work.

OpenBLAS keeps its threads spinning for a while after a product; the torch operations (or the
sweep's other worker) that follow then wait on a core those threads hold. A product that is
small, or one of many in a loop, runs faster on one thread than the spin costs: an ISIC-sized
few-shot retrieval took 38 ms with two BLAS threads and 15 ms with one, and the bootstrap's
dense sums ran 100x slower with two under load.

The thread count is the process's, and threadpoolctl lets one Python thread at a time change
it: the limit another thread takes while one holds it changes nothing, nor does its release. So
code that runs numpy on several threads holds the limit in the thread that starts them (the
sweep's scoring does), and theirs are then no-ops under it."""

import functools
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController


def one_blas_thread() -> AbstractContextManager:
    """A context in which numpy's BLAS uses one thread (and as many as before after it)."""
    return _controller().limit(limits=1, user_api="blas")


@functools.cache  # threadpool_limits rescans every library per call (~7 ms); numpy's BLAS stays
def _controller() -> ThreadpoolController:
    return ThreadpoolController()
