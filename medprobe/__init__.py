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
sit at the top of the checkout). `mp.extract(...)` and `mp.probe(...)` call those packages:
`import medprobe.probe` binds the name `medprobe.probe` to the package whatever this file
defines, so each of the two packages is made callable (`FrontDoor`), and `help(mp.probe)` and a
notebook's `mp.probe?` show the function's signature and documentation first.
"""

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from medprobe import cache, extract, probe
from medprobe.cache.errors import ToolkitError
from medprobe.cache.inventory.frames import load, stores
from medprobe.extract.api import extract as _extract
from medprobe.probe.run.results import Results
from medprobe.probe.run.runner import probe as _probe
from medprobe.probe.similarity.compare import similarity


class FrontDoor(types.ModuleType):
    """A stage package that is also its front function: `package(...)` calls `__wrapped__`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


def _front_door(package: types.ModuleType, function: Callable[..., Any]) -> None:
    """Make `package` call `function`, with the function's signature and documentation leading
    its own (what `help()`, `inspect.signature` and `?` read)."""
    signature = inspect.signature(function)
    package.__class__ = FrontDoor
    package.__wrapped__ = function
    package.__signature__ = signature
    package.__doc__ = (
        f"{function.__name__}{signature}\n\n{inspect.getdoc(function)}\n\n"
        f"The package {package.__name__}: {inspect.getdoc(package) or ''}"
    )


_front_door(sys.modules["medprobe.extract"], _extract)
_front_door(sys.modules["medprobe.probe"], _probe)

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
