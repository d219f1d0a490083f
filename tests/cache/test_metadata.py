"""Per-image metadata: written beside ids and labels, outside the key, added later by annotate."""

import hashlib

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from medprobe.cache import RowTable, ToolkitError, list_stores, open_store, store_path
from medprobe.cache.annotate import annotate_store
from medprobe.cache.cli import app
from medprobe.cache.inventory.frames import stores
from medprobe.cache.rows import metadata_value
from tests.cache.conftest import make_rows, make_spec, write_all

SEX = ["F", "M", "", "F", "M", "nan", "F", "M", "F", None]
AGE = [str(a) for a in (30, 45, 50, 61, 70, 82, 25, 38, 55, 66)]


def _with_metadata(rows: RowTable, **columns) -> RowTable:
    return RowTable(ids=rows.ids, splits=rows.splits, labels=rows.labels, metadata=columns or None)


def _embedding_digest(path) -> str:
    digest = hashlib.sha256()
    with h5py.File(path, "r") as handle:
        for split in ("train", "test"):
            for pooling in ("cls", "mean"):
                digest.update(handle[f"{split}/embeddings/{pooling}"][()].tobytes())
    return digest.hexdigest()


def test_metadata_is_outside_the_key_and_reads_back_with_missing_kept_missing(tmp_path) -> None:
    rows = make_rows()
    annotated = _with_metadata(rows, sex=[metadata_value(v) for v in SEX], age=AGE)
    assert annotated.fingerprint() == rows.fingerprint()
    assert make_spec(annotated).key() == make_spec(rows).key()
    path = store_path(tmp_path, make_spec(annotated))
    write_all(path, make_spec(annotated), annotated)
    store = open_store(path)
    assert store.metadata_columns == ("age", "sex")
    train, test = store.metadata("train"), store.metadata("test")
    assert train["sex"].tolist() == ["F", "M", "", "F", "M"]  # 'nan' and None are missing
    assert test["sex"].tolist() == ["", "F", "M", "F", ""]
    assert test["age"].tolist() == AGE[5:]
    assert [e.metadata for e in list_stores(tmp_path)] == [("age", "sex")]
    listed = CliRunner().invoke(app, ["ls", "--cache-dir", str(tmp_path)], terminal_width=250)
    assert "metadata" in listed.output and "age,sex" in listed.output
    assert stores(tmp_path)["metadata"].tolist() == ["age,sex"]


def test_annotate_adds_metadata_keeping_key_and_embeddings_byte_for_byte(tmp_path) -> None:
    rows = make_rows()
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    write_all(path, spec, rows)
    before = (open_store(path).key, _embedding_digest(path))
    # the table may list images the store does not hold, in any order
    ids = [*reversed(rows.ids), "img/extra.png"]
    store = annotate_store(path, ids, {"age": [*reversed(AGE), "99"]})
    assert (store.key, _embedding_digest(path)) == before
    assert store.metadata("train")["age"].tolist() == AGE[:5]
    table = tmp_path / "meta.csv"
    table.write_text(
        "image,sex\n" + "".join(f"{i},{s or ''}\n" for i, s in zip(rows.ids, SEX, strict=True))
    )
    result = CliRunner().invoke(
        app, ["annotate", str(path), "--table", str(table), "--id-column", "image"]
    )
    assert result.exit_code == 0, result.output
    store = open_store(path)
    assert store.metadata_columns == ("sex",)  # replaced, not merged
    assert (store.key, _embedding_digest(path)) == before


def test_annotate_refuses_a_table_missing_images(tmp_path) -> None:
    rows = make_rows()
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    write_all(path, spec, rows)
    with pytest.raises(ToolkitError, match="have no metadata row"):
        annotate_store(path, rows.ids[:3], {"age": AGE[:3]})
    with pytest.raises(ToolkitError, match="metadata column 'a/b'"):
        annotate_store(path, rows.ids, {"a/b": AGE})
    assert open_store(path).metadata_columns == ()
    assert np.array_equal(open_store(path).labels("train"), rows.labels[:5])
