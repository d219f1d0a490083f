"""medprobe: which frozen vision model represents *this* medical imaging task best, with *this*
many labels? A resumable embedding cache of frozen models and fast, paired probes over it.

The Python front door, for notebooks (the CLIs call the same functions)::

    import medprobe as mp

    mp.extract("digits", "efficientnet-lite0")        # stores written or found complete
    mp.stores()                                       # one row per store, a DataFrame
    X, y, ids = mp.load(dataset="digits", model="efficientnet-lite0")
    results = mp.probe(shots=[1, 5, 10], seeds=5)     # a Results: .frame, .summary(), ...
    results.save("results/notebook")                  # the folder `probe run --out` writes
    mp.similarity(metrics=["cka"]).frame              # how alike the models' embeddings are

The stages install as `medprobe.extract`, `medprobe.cache` and `medprobe.probe` (their folders
sit at the top of the checkout). `mp.extract(...)` and `mp.probe(...)` are those packages
called: each stage package is callable, so the names serve both as the subpackage and as its
front function (`help(mp.probe.runner.probe)` shows the arguments).
"""

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from medprobe import cache, extract, probe
from medprobe.cache.errors import ToolkitError
from medprobe.cache.frames import load, stores
from medprobe.extract.api import extract as _extract
from medprobe.probe.results import Results
from medprobe.probe.runner import probe as _probe
from medprobe.probe.similarity_run import similarity


def _make_callable(package: types.ModuleType, function: Callable[..., Any]) -> None:
    """Let `package(...)` call `function`: `import medprobe.probe` binds `medprobe.probe` to the
    package, so a plain function of that name here could never survive that import."""

    class CallablePackage(types.ModuleType):
        __call__ = staticmethod(function)

    package.__class__ = CallablePackage
    package.__signature__ = inspect.signature(function)  # what a notebook's `mp.probe?` shows


_make_callable(sys.modules["medprobe.extract"], _extract)
_make_callable(sys.modules["medprobe.probe"], _probe)

__all__ = [
    "Results",
    "ToolkitError",
    "cache",
    "extract",
    "load",
    "probe",
    "similarity",
    "stores",
]
