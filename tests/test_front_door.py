"""`import medprobe as mp`: light to import, callable stages, and docs/python.md runs as written."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import medprobe as mp

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_importing_medprobe_does_not_import_torch():
    code = "import sys, medprobe; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.strip() == "False", completed.stderr


def test_stage_packages_are_callable_and_show_their_functions_signature():
    import medprobe.extract.pipeline  # a later import of a submodule must not undo the call
    import medprobe.probe.cli  # noqa: F401

    assert callable(mp.probe) and callable(mp.extract)
    assert (
        inspect.ismodule(mp.probe) and mp.probe.run.runner.__name__ == "medprobe.probe.run.runner"
    )
    assert list(inspect.signature(mp.probe).parameters)[:3] == ["cache_dir", "shots", "fractions"]
    assert list(inspect.signature(mp.extract).parameters)[:2] == ["dataset", "models"]


def test_extract_refuses_unknown_options_before_any_work():
    with pytest.raises(mp.ToolkitError, match=r"batchsize \(did you mean batch_size\?\)"):
        mp.extract("digits", "efficientnet-lite0", batchsize=8)


@pytest.mark.slow
def test_the_python_page_runs_as_written(tmp_path, monkeypatch):
    """Every ```python block of docs/python.md, in order, in one namespace, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)
    assert (tmp_path / "results" / "notebook" / "report.md").is_file()
    assert (tmp_path / "results" / "notebook" / "report.html").is_file()
    figure = namespace["figure"]  # saved above with a plain savefig: its legend is on the canvas
    for artist in (*figure.legends, figure._suptitle):
        box, canvas = artist.get_window_extent(), figure.bbox
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and box.y1 <= canvas.y1
    assert (tmp_path / "digits_accuracy.png").stat().st_size > 5000
    assert (tmp_path / "digits_cka.png").stat().st_size > 5000
    entries = {"efficientnet-lite0:pooled", "timm:resnet10t (random init):pooled"}
    paired = namespace["paired"]
    assert set(paired["entry"]) | set(paired["best"]) == entries
    assert set(namespace["summary"]["budget"]) == {"1-shot", "5-shot", "10-shot", "full"}


@pytest.mark.parametrize(
    ("stage", "function", "opening"),
    [
        ("probe", "medprobe.probe.run.runner", "Probe every complete store under the cache root"),
        ("extract", "medprobe.extract.api", None),
    ],
)
def test_help_shows_the_functions_documentation_first(stage, function, opening):
    """`help(mp.probe)` and a notebook's `mp.probe?` read `__doc__` and `pydoc`: both lead with
    the function's signature and documentation, not a package listing."""
    import importlib
    import pydoc

    package = getattr(mp, stage)
    wrapped = getattr(importlib.import_module(function), stage)
    documentation = inspect.getdoc(wrapped)
    opening = opening or documentation.splitlines()[0]
    assert package.__doc__ is not None
    assert package.__doc__.startswith(f"{stage}(") and opening in package.__doc__
    assert package.__doc__.index(opening) < package.__doc__.index(f"The package medprobe.{stage}")
    page = pydoc.render_doc(package, renderer=pydoc.plaintext)
    head = page[: page.index("PACKAGE CONTENTS")] if "PACKAGE CONTENTS" in page else page
    assert f"medprobe.{stage} - {stage}(" in head
    assert " ".join(opening.split()) in " ".join(head.split())
    if stage == "probe":  # every keyword is documented where users look
        assert "bootstrap: test resamples" in " ".join(head.split())
