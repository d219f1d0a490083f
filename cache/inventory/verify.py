"""`cache verify`: read every byte of a store and check it as the reader would, collecting every
problem instead of stopping at the first (checksums, NaN/Inf, labels, ids, key, name)."""

from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from medprobe.cache.container import read_block_rows
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.paths import expected_location
from medprobe.cache.inventory.checks import nonfinite_rows
from medprobe.cache.key import StoreSpec
from medprobe.cache.reader import Store, damaged, open_store
from medprobe.cache.schema import EMBEDDINGS_GROUP


def verify_store(path: Path) -> list[str]:
    """Problems found in a published store (an empty list means it is sound): its key and name,
    its complete flag, and every dataset read in full (checksums where the container has them,
    ids, labels, NaN/Inf in embeddings)."""
    path = Path(path)
    try:
        store = open_store(path, require_complete=False)
    except ToolkitError as error:
        return [str(error)]
    problems = _metadata_problems(store)
    all_ids: list[str] = []
    checks: list[Callable[[], object]] = [store.skipped]
    for split in store.splits:
        checks += [partial(read, split) for read in (store.labels, store.label_mask, store.groups)]
        checks.append(partial(lambda split: all_ids.extend(store.ids(split)), split))
        checks += [partial(_scan_embeddings, store, split, p) for p in store.poolings]
    problems += [message for check in checks if (message := _failure(check))]
    duplicates = [i for i, n in Counter(all_ids).items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate ids, e.g. {duplicates[:3]}")
    return problems


def verify_notes(path: Path) -> list[str]:
    """What a user should know about a sound store that is no problem: a store written before
    checksums (container format 2) is read as it is, but damage to it would go unnoticed."""
    try:
        store = open_store(path, require_complete=False)
    except ToolkitError:
        return []
    if store.checksummed:
        return []
    return [
        f"container format {store.container_format} carries no checksums, so damaged bytes go "
        f"unnoticed; `cache rm {path}` and extract again to get them"
    ]


def _metadata_problems(store: Store) -> list[str]:
    problems = []
    if not store.complete:
        problems.append("the 'complete' flag is not set")
    if store.outdated:
        problems.append(store.outdated)  # its key hashes an older format: nothing to recompute
    else:
        try:
            fields = {k: v for k, v in store.spec.items() if k != "format_version"}
            if StoreSpec(**fields).key() != store.key:
                problems.append("the 'key' attribute does not match the hash of its 'spec'")
        except (TypeError, ToolkitError) as error:
            problems.append(f"the 'spec' attribute is malformed: {error}")
    expected = expected_location(store.path, store.dataset_name, store.model_id, store.key)
    if expected != store.path:
        problems.append(
            f"its name does not match its key: it should be {expected} (renamed or copied by "
            "hand; probes go by the key inside)"
        )
    return problems


def _failure(read: Callable[[], object]) -> str | None:
    """None when `read()` succeeds, else its error: one problem per dataset, then go on."""
    try:
        read()
    except ToolkitError as error:
        return str(error)
    return None


def _scan_embeddings(store: Store, split: str, pooling: str) -> None:
    """Read one pooling block by block (any size of store in bounded memory): every checksum,
    every value finite, one row per id."""
    name = f"{split}/{EMBEDDINGS_GROUP}/{pooling}"
    with store.h5() as handle:
        if name not in handle:
            raise damaged(store.path, f"{store.path} lacks {name}")
        dataset = handle[name]
        if dataset.shape[0] != store.n_rows[split]:
            raise damaged(
                store.path,
                f"{store.path} {name} has {dataset.shape[0]} rows for {store.n_rows[split]} ids",
            )
        try:
            n_bad = nonfinite_rows(dataset, read_block_rows(dataset))
        except OSError as error:
            raise store.read_failure(name, error) from error
    if n_bad:
        raise damaged(store.path, f"{store.path} {name}: {n_bad} rows hold NaN or Inf")
