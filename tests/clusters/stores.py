"""A store compared with another as bytes: every dataset and every attribute but the times."""

from pathlib import Path

import h5py
import numpy as np

# Attributes that record when, not what: a joined store is written later than a single run's.
TIME_ATTRIBUTES = frozenset({"created_at", "finished_at"})


def _contents(path: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]]]:
    datasets: dict[str, np.ndarray] = {}
    attributes: dict[str, dict[str, object]] = {}
    with h5py.File(path, "r") as file:
        attributes["/"] = dict(file.attrs)

        def visit(name: str, item: object) -> None:
            attributes[name] = dict(item.attrs)
            if isinstance(item, h5py.Dataset):
                datasets[name] = item[()]

        file.visititems(visit)
    return datasets, attributes


def assert_same_store(path: Path, reference: Path) -> None:
    """Same datasets (names, dtypes, shapes, bytes) and attributes, times left out."""
    datasets, attributes = _contents(path)
    expected_datasets, expected_attributes = _contents(reference)
    assert sorted(datasets) == sorted(expected_datasets)
    for name, expected in expected_datasets.items():
        value = datasets[name]
        assert value.dtype == expected.dtype and value.shape == expected.shape, name
        assert np.asarray(value).tobytes() == np.asarray(expected).tobytes(), name
    assert sorted(attributes) == sorted(expected_attributes)
    for name, expected in expected_attributes.items():
        kept = {k: v for k, v in attributes[name].items() if k not in TIME_ATTRIBUTES}
        wanted = {k: v for k, v in expected.items() if k not in TIME_ATTRIBUTES}
        assert sorted(kept) == sorted(wanted), name
        for key, value in wanted.items():
            assert np.array_equal(np.asarray(kept[key]), np.asarray(value)), f"{name}@{key}"
