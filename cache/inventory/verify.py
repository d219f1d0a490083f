"""`cache verify`: read every byte of a store and check it as the reader would, collecting every
problem instead of stopping at the first (checksums, NaN/Inf, labels, ids, key, name)."""

import logging
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.paths import expected_location
from medprobe.cache.inventory.checks import nonfinite_rows
from medprobe.cache.key import STORE_DTYPES, StoreSpec
from medprobe.cache.layout.container import read_block_rows
from medprobe.cache.layout.schema import (
    CONTAINER_FORMAT,
    EMBEDDINGS_GROUP,
    HEADLINE_METRICS,
    TASK_KINDS,
    UNCHECKSUMMED_CONTAINER_FORMAT,
)
from medprobe.cache.opening import open_store
from medprobe.cache.reader import Store, damaged

logger = logging.getLogger(__name__)
KNOWN_CONTAINER_FORMATS = (UNCHECKSUMMED_CONTAINER_FORMAT, CONTAINER_FORMAT)

# Images per block when scanning tokens: 1024 images of 65 x 1024 float32 is 272 MiB at most.
TOKEN_SCAN_ROWS = 1024


def verify_store(path: Path) -> list[str]:
    """Problems found in a published store (an empty list means it is sound): its key and name,
    its complete flag, and every dataset read in full (checksums where the container has them,
    ids, labels, NaN/Inf in embeddings)."""
    path = Path(path)
    try:
        store = open_store(path, require_complete=False)
    except ToolkitError as error:
        return [str(error)]
    logger.info("verifying %s: splits %s, poolings %s", path, store.splits, store.poolings)
    problems = _metadata_problems(store)
    all_ids: list[str] = []
    checks: list[Callable[[], object]] = [store.skipped]
    for split in store.splits:
        checks += [partial(read, split) for read in (store.labels, store.label_mask, store.groups)]
        checks.append(partial(lambda split: all_ids.extend(store.ids(split)), split))
        checks += [partial(_scan_embeddings, store, split, p) for p in store.poolings]
        if store.has_tokens:  # every chunk of the token grid, block by block
            checks.append(partial(_scan_tokens, store, split))
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


def _format_problems(store: Store) -> list[str]:
    """The two version numbers (`cache.layout.schema`): the root attribute must repeat the spec's
    content version, and the container format must be one this toolkit reads."""
    problems = []
    attribute = store.attrs.get("format_version")
    if attribute is not None and attribute != store.spec.get("format_version", 1):
        problems.append(
            f"its 'format_version' attribute ({attribute!r}) is not its spec's "
            f"({store.spec.get('format_version', 1)!r}): the file was edited by hand"
        )
    if store.container_format not in KNOWN_CONTAINER_FORMATS:
        problems.append(
            f"container format {store.container_format!r} is none this toolkit reads "
            f"({list(KNOWN_CONTAINER_FORMATS)}); a newer toolkit wrote it, or it was edited"
        )
    return problems


def _task_problems(store: Store) -> list[str]:
    """The spec's task against what probes can score (`cache.layout.schema.TASK_KINDS`)."""
    task, problems = store.task, []
    if "kind" in task and task["kind"] not in TASK_KINDS:
        problems.append(
            f"its task kind {task['kind']!r} is none a probe scores; one of {list(TASK_KINDS)}"
        )
    if "headline_metric" in task and task["headline_metric"] not in HEADLINE_METRICS:
        problems.append(
            f"its headline metric {task['headline_metric']!r} is none of {list(HEADLINE_METRICS)}"
        )
    names = task.get("label_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"its label names {names!r} are not a list of strings")
    return problems


def _metadata_problems(store: Store) -> list[str]:
    problems = [*_format_problems(store), *_task_problems(store)]
    if store.spec.get("dtype") not in STORE_DTYPES:
        problems.append(f"its spec's dtype {store.spec.get('dtype')!r} is none of {STORE_DTYPES}")
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
        if dataset.dtype != np.dtype(store.spec["dtype"]):
            raise damaged(
                store.path,
                f"{store.path} {name} is stored as {dataset.dtype} but its spec says "
                f"{store.spec['dtype']}",
            )
        if dataset.ndim != 2 or dataset.shape[0] != store.n_rows[split]:
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


def _scan_tokens(store: Store, split: str) -> None:
    """Read a split's tokens block by block through the reader: every checksum, every value
    finite, one row per id."""
    for start in range(0, store.n_rows[split], TOKEN_SCAN_ROWS):
        store.tokens(split, slice(start, start + TOKEN_SCAN_ROWS))
