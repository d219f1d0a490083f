"""The one-BLAS-thread limit as the sweep's scoring holds it: in the thread that starts the
scoring threads, around theirs."""

import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from medprobe.probe.blas import one_blas_thread


def _blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


@pytest.fixture
def two_blas_threads():
    if not _blas_threads():
        pytest.skip("numpy links no BLAS that threadpoolctl can limit")
    with threadpool_limits(limits=2, user_api="blas"):
        yield


def test_threads_under_the_starting_threads_limit_keep_one_blas_thread(two_blas_threads):
    """Inside: A takes the limit, B takes it, A releases it (B still computes), B releases it;
    one thread throughout. After the starting thread releases it: two again."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}

    def first() -> None:
        with one_blas_thread():
            a_in.set()
            b_in.wait()
        a_out.set()

    def second() -> None:
        a_in.wait()
        with one_blas_thread():
            b_in.set()
            a_out.wait()
            seen["B alone"] = _blas_threads()
        seen["after both"] = _blas_threads()

    with one_blas_thread():
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen == {"B alone": {1}, "after both": {1}}
    assert _blas_threads() == {2}
