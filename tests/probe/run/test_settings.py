"""Every error `ProbeSettings` (and so `mp.probe` and `probe run`) gives, word for word: each
names the argument and the value as the user wrote it, and the limit or the fix."""

import pytest

from medprobe.cache import ToolkitError
from medprobe.cache.console import cli_message
from medprobe.probe.cli import app
from medprobe.probe.run.settings import ProbeSettings

# (keywords beside shots=1, the whole message)
ERRORS = [
    ({"shots": "1,,5"}, "shots='1,,5': an empty item between commas; e.g. shots='1,5,10'"),
    ({"shots": 2.5}, "shots=2.5: 2.5 is not a whole number"),
    ({"shots": "a"}, "shots='a': 'a' is not a whole number; e.g. shots='1,5,10'"),
    ({"shots": 0}, "shots=[0]: shots must be whole numbers of at least 1, got 0"),
    ({"shots": True}, "shots=True: True is not a whole number"),
    ({"fractions": 1.5}, "fractions=[1.5]: 1.5 is not in (0, 1]"),
    ({"fractions": 0}, "fractions=[0.0]: 0.0 is not in (0, 1]"),
    ({"fractions": "x"}, "fractions='x': 'x' is not a number; e.g. fractions='0.01,0.1'"),
    (
        {"fractions": {0.1}},
        "fractions={0.1}: expected a number or a list of numbers, e.g. '0.01,0.1'",
    ),
    ({"seeds": 2.5}, "seeds=2.5: expected a whole number"),
    ({"seeds": "3"}, "seeds='3': expected a whole number"),
    ({"seeds": 0}, "seeds=0: must be at least 1 (support sets per budget)"),
    ({"seeds": 10**18}, f"seeds={10**18}: at most 10,000 (support sets per budget)"),
    (
        {"methods": "svm"},
        "methods=['svm']: choose one or more of "
        "['logreg', 'knn', 'prototype', 'retrieval', 'attentive']",
    ),
    (
        {"methods": ""},
        "methods=[]: choose one or more of "
        "['logreg', 'knn', 'prototype', 'retrieval', 'attentive']",
    ),
    ({"knn_k": 0}, "knn_k=[0]: every k must be at least 1"),
    (
        {"knn_k": "5,5"},
        "knn_k=[5, 5]: [5] given more than once (each k is one probe; a repeat would count its "
        "rows twice in the summary)",
    ),
    ({"knn_vote": "x"}, "knn_vote='x': choose one of weighted, majority"),
    ({"backend": "gpu"}, "backend='gpu': choose one of auto, torch, sklearn, cuml"),
    ({"jobs": 0}, "jobs=0: the number of parallel workers, at least 1 (-1: every core)"),
    ({"jobs": True}, "jobs=True: the number of parallel workers, at least 1 (-1: every core)"),
    ({"jobs": 1.5}, "jobs=1.5: the number of parallel workers, at least 1 (-1: every core)"),
    (
        {"cluster": "x"},
        "cluster='x': expected local:N (N worker processes here) or tcp://HOST:PORT (a running "
        "dask scheduler)",
    ),
    (
        {"bootstrap": 5},
        "bootstrap=5: use 0 (no test bootstrap) or at least 40 resamples, enough for the 2.5th "
        "and 97.5th percentiles",
    ),
    ({"bootstrap": -1}, "bootstrap=-1: must be at least 0 (test resamples; 0 turns them off)"),
    (
        {"bootstrap": 10**12},
        f"bootstrap={10**12}: at most 100,000 (test resamples; 0 turns them off)",
    ),
    ({"cache_dir": 123}, "cache_dir=123: expected a folder path (str or pathlib.Path)"),
    ({"out": 123}, "out=123: expected a folder path (str or pathlib.Path)"),
    ({"full": "yes"}, "full='yes': expected True or False"),
    ({"models": 3}, "models=3: expected a name, comma-separated names or a list of names"),
    (
        {"datasets": ["a", 3]},
        "datasets=['a', 3]: expected a name, comma-separated names or a list of names",
    ),
    ({"shots": ()}, "no label budget: pass shots=[1, 5, 10], fractions=[0.1] or full=True"),
]


@pytest.mark.parametrize(("keywords", "message"), ERRORS, ids=[m[:24] for _, m in ERRORS])
def test_every_settings_error_names_the_argument_its_value_and_the_fix(keywords, message):
    with pytest.raises(ToolkitError) as refused:
        ProbeSettings(**{"shots": 1, **keywords})
    assert str(refused.value) == message
    if refused.value.argument is not None:
        assert message.startswith(f"{refused.value.argument}=")


@pytest.mark.parametrize(
    ("keywords", "normalised"),
    [
        ({"shots": "1, 5"}, {"shots": (1, 5)}),
        ({"fractions": "0.1"}, {"fractions": (0.1,)}),
        ({"fractions": [0.1, 0.5]}, {"fractions": (0.1, 0.5)}),
        ({"seeds": 10_000}, {"seeds": 10_000}),
        ({"models": "a, b"}, {"models": ("a", "b")}),
        ({"cache_dir": "x"}, {"cache_dir": __import__("pathlib").Path("x")}),
    ],
)
def test_what_the_cli_accepts_the_library_accepts_too(keywords, normalised):
    settings = ProbeSettings(**{"shots": 1, **keywords})
    assert {name: getattr(settings, name) for name in normalised} == normalised


def test_the_cli_writes_the_same_errors_with_its_flags():
    with pytest.raises(ToolkitError) as refused:
        ProbeSettings(shots="1,,5")
    assert cli_message(refused.value, app).startswith("--shots '1,,5': an empty item")
