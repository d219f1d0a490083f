"""`cache verify` never passes what it could not read or what was edited by hand, and the listing
every command reads (`list_stores`) never skips a file or folder silently."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from medprobe.cache import store_path
from medprobe.cache.cli import app as cache_app
from medprobe.cache.console import EXIT_CHECK_FAILED, EXIT_USER_ERROR, run_app
from medprobe.cache.inventory.catalog import list_stores
from medprobe.cache.key import canonical_json
from tests.cache.conftest import make_rows, make_spec, write_all


def verify(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_app(cache_app, ["verify", *args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def write_store(root: Path) -> Path:
    rows = make_rows(12)
    spec = make_spec(rows)
    return write_all(store_path(root, spec), spec, rows)


def edit_spec(path: Path, **changes) -> None:
    """Change the spec as a careful hand-editor would: the key recomputed to match it."""
    with h5py.File(path, "r+") as handle:
        spec = {**json.loads(handle.attrs["spec"]), **changes}
        handle.attrs["spec"] = json.dumps(spec)
        handle.attrs["key"] = hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def set_attr(name, value):
    def edit(path: Path) -> None:
        with h5py.File(path, "r+") as handle:
            handle.attrs[name] = value

    return edit


def int32_embeddings(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        values = handle["train/embeddings/cls"][()]
        del handle["train/embeddings/cls"]
        handle["train/embeddings/cls"] = values.astype(np.int32)


# (what a hand-editor did to a sound store, what `cache verify` says)
HAND_EDITS = [
    (set_attr("complete", False), "the 'complete' flag is not set"),
    (set_attr("format_version", 99), "its 'format_version' attribute (99) is not its spec's (2)"),
    (set_attr("container_format", 99), "container format 99 is none this toolkit reads ([2, 3])"),
    (lambda p: edit_spec(p, format_version=99), "written in store format 99"),
    (
        lambda p: edit_spec(p, task={"kind": "regression", "label_names": ["a", "b", "c"]}),
        "its task kind 'regression' is none a probe scores",
    ),
    (
        lambda p: edit_spec(p, task={"kind": "binary", "headline_metric": "r2"}),
        "its headline metric 'r2' is none of",
    ),
    (lambda p: edit_spec(p, dtype="int32"), "its spec's dtype 'int32' is none of"),
    (int32_embeddings, "train/embeddings/cls is stored as int32 but its spec says float16"),
]


@pytest.mark.parametrize(("edit", "message"), HAND_EDITS, ids=[m[:36] for _, m in HAND_EDITS])
def test_a_hand_edited_store_fails_verify_naming_what_is_wrong(tmp_path, capsys, edit, message):
    path = write_store(tmp_path)
    edit(path)
    code, text = verify(capsys, "--cache-dir", str(tmp_path))
    assert code == EXIT_CHECK_FAILED, text
    assert f"FAIL {path}" in text and message in text


def test_a_store_placed_directly_in_the_root_is_listed_with_where_it_belongs(tmp_path, capsys):
    path = write_store(tmp_path / "elsewhere")
    moved = tmp_path / "root" / path.name
    moved.parent.mkdir()
    shutil.move(path, moved)
    (entry,) = list_stores(tmp_path / "root")
    belongs = tmp_path / "root" / "toy" / path.name
    assert entry.path == moved and entry.dataset == "toy" and not entry.usable
    assert entry.problem.endswith(f"cache root, so not probed: move it to {belongs}")
    code, text = verify(capsys, "--cache-dir", str(tmp_path / "root"))
    assert code == EXIT_CHECK_FAILED and f"FAIL {moved}" in text and str(belongs) in text


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.mkdir(), "not a store: a folder where a store file is expected"),
        (lambda p: p.symlink_to(p.parent / "gone.h5"), "not a regular file (a broken link?)"),
    ],
    ids=["folder", "broken-link"],
)
def test_what_stands_where_a_store_file_should_is_listed_and_fails(tmp_path, capsys, make, problem):
    write_store(tmp_path)
    odd = tmp_path / "toy" / "odd.h5"
    make(odd)
    entries = {e.path: e for e in list_stores(tmp_path)}
    assert problem in entries[odd].problem
    code, text = verify(capsys, "--cache-dir", str(tmp_path))
    assert code == EXIT_CHECK_FAILED and f"FAIL {odd}" in text and problem in text


def test_verify_of_a_file_that_is_no_store_never_advises_removing_it(tmp_path, capsys):
    foreign = tmp_path / "passwd"
    foreign.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, text = verify(capsys, "--cache-dir", str(tmp_path / "c"), str(foreign))
    assert code == EXIT_CHECK_FAILED
    assert f"{foreign} is not a store" in text and "cache rm" not in text


def test_verify_with_nothing_published_says_so(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    code, text = verify(capsys, "--cache-dir", str(tmp_path / "c"))
    assert code == EXIT_USER_ERROR and "no stores to verify under" in text


UNREADABLE_CHECK = """
import sys
from pathlib import Path
from medprobe.cache.console import run_app
from medprobe.cache.cli import app
from medprobe.cache.inventory.catalog import list_stores
for entry in list_stores(Path(sys.argv[1])):
    print("ENTRY", entry.path, "|", entry.problem)
run_app(app, ["verify", "--cache-dir", sys.argv[1]])
"""


def _as_another_user() -> list[str]:
    """The command prefix that runs a check without root's right to read anything: nothing when
    this process is no root, `setpriv` to user nobody when it is."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip(
            "running as root without setpriv: root reads any file, so nothing is unreadable"
        )
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_an_unreadable_folder_and_store_are_named_and_fail_verify():
    prefix = _as_another_user()
    # Under /tmp, not pytest's tmp_path: another user must be able to reach the cache root.
    root = Path(tempfile.mkdtemp(prefix="medprobe-unreadable-"))
    try:
        readable = write_store(root)
        hidden = root / "secret"
        hidden.mkdir()
        locked = readable.parent / "locked--0123456789abcdef.h5"
        shutil.copy(readable, locked)
        for folder in [root, *root.rglob("*")]:
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        hidden.chmod(0)
        locked.chmod(0)
        environment = {**os.environ, "COLUMNS": "1000"}
        run = subprocess.run(
            [*prefix, sys.executable, "-c", UNREADABLE_CHECK, str(root)],
            capture_output=True,
            text=True,
            env=environment,
            cwd=Path(__file__).parents[2],
            timeout=120,
        )
    finally:
        shutil.rmtree(root)
    text = run.stdout + run.stderr
    assert run.returncode == EXIT_CHECK_FAILED, text
    assert f"ENTRY {hidden} | cannot read this folder (Permission denied)" in text
    assert f"ENTRY {locked} | cannot be read (Permission denied)" in text
    assert f"FAIL {hidden}" in text and f"FAIL {locked}" in text and f"ok {readable}" in text
    assert "not a store" not in text
