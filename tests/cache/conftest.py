"""Small stores written through the real writer, and the damage a careless or hostile user does
to them (bytes flipped under h5py's feet, values overwritten through h5py, old-format files)."""

import json
from pathlib import Path

import h5py
import numpy as np

from medprobe.cache import RowTable, StoreSpec, StoreWriter
from medprobe.cache.key import canonical_json


def make_rows(n_rows: int = 10) -> RowTable:
    splits = ["train"] * (n_rows - n_rows // 2) + ["test"] * (n_rows // 2)
    return RowTable(
        ids=[f"img/{i:03d}.png" for i in range(n_rows)], splits=splits, labels=np.arange(n_rows) % 3
    )


def make_spec(rows: RowTable, **changes) -> StoreSpec:
    fields = dict(
        dataset={"name": "toy", "fingerprint": rows.fingerprint()},
        model={"name": "tiny", "source": "timm", "checkpoint": "x"},
        preprocessing={"input_size": 32, "mean": [0.5] * 3},
        poolings=("cls", "mean"),
        task={"kind": "multiclass", "label_names": ["a", "b", "c"]},
    )
    fields.update(changes)
    return StoreSpec(**fields)


def embeddings_for(rows: np.ndarray, dim: int = 4) -> dict[str, np.ndarray]:
    """Deterministic per-row values so a resumed store can be compared row by row."""
    base = rows[:, None].astype(np.float32) + np.arange(dim, dtype=np.float32)[None, :] / 10
    return {"cls": base, "mean": -base}


def write_all(path, spec, rows, *, flush_rows=3, batch=2, dim=4, info=None):
    with StoreWriter(path, spec, rows, flush_rows=flush_rows, info=info) as writer:
        for start in range(writer.next_row, len(rows), batch):
            stop = min(start + batch, len(rows))
            writer.append(
                start, np.ones(stop - start, bool), embeddings_for(np.arange(start, stop), dim)
            )
        return writer.finish()


def write_container2_store(path: Path, spec: StoreSpec, rows: RowTable, dim: int = 4) -> Path:
    """A store as the toolkit wrote it before checksums (container format 2): no
    `container_format` attribute, unfiltered contiguous datasets, variable-length strings."""
    text = h5py.string_dtype("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = np.asarray(rows.splits)
    with h5py.File(path, "w") as store:
        store.attrs["format_version"] = 2
        store.attrs["key"] = spec.key()
        store.attrs["spec"] = canonical_json(spec.as_dict())
        store.attrs["info"] = "{}"
        store.attrs["complete"] = True
        for split in ("train", "test"):
            positions = np.flatnonzero(splits == split)
            group = store.create_group(split)
            group.create_dataset("ids", data=[rows.ids[p] for p in positions], dtype=text)
            group.create_dataset("labels", data=rows.labels[positions].astype(np.int64))
            for pooling, values in embeddings_for(positions, dim).items():
                group.create_dataset(f"embeddings/{pooling}", data=values.astype(np.float16))
    return path


def flip_bytes(path: Path, dataset: str, n_bytes: int = 4) -> None:
    """Corrupt the first chunk of `dataset` on disk, as a bad sector or a stray `dd` would,
    without h5py knowing (so its checksum no longer matches). XOR with 0x5A, not 0xFF: Fletcher-32
    sums 16-bit words modulo 65535, where 0x0000 and 0xFFFF are the same, so inverting a zero
    word is the one damage it cannot see."""
    with h5py.File(path, "r") as handle:
        offset = handle[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset)
        original = raw.read(n_bytes)
        raw.seek(offset)
        raw.write(bytes(b ^ 0x5A for b in original))


def overwrite(path: Path, dataset: str, values) -> None:
    """Replace a dataset's values through h5py (the checksums follow: only the values lie)."""
    with h5py.File(path, "r+") as handle:
        handle[dataset][...] = values


def set_spec(path: Path, **changes) -> None:
    with h5py.File(path, "r+") as handle:
        handle.attrs["spec"] = json.dumps({**json.loads(handle.attrs["spec"]), **changes})
