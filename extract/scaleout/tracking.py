"""Where an extraction's shards stand, read from the cache alone: which shards are complete (so
`extract submit` submits only the others, and nothing over a complete store), and how many rows
each has embedded (the progress `extract submit --wait` prints).

It reads what the shard jobs publish: the joined store, each shard's store, and each unfinished
shard's journal (rows up to its last contiguous part). No job is asked anything, so it works for
any executor and across nodes that share the cache.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medprobe.cache import StoreSpec, find_complete_store, store_path
from medprobe.cache.files.paths import journal_dir
from medprobe.cache.journal import contiguous_parts
from medprobe.extract.config import ConfiguredDataset
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.options import ExtractionOptions
from medprobe.extract.plan import plan_store, select_rows, subset_rows
from medprobe.extract.scaleout.shards import shard_positions, shard_root, shard_spec


@dataclass(frozen=True)
class ShardLedger:
    """The stores `count` shards of one extraction write, one full spec per model.

    shard_rows: (count,) images each shard embeds (shard i: positions i, i+count, …).
    """

    cache_root: Path
    full_specs: tuple[StoreSpec, ...]
    shard_rows: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.shard_rows)

    @property
    def n_rows(self) -> int:
        return sum(self.shard_rows)

    def joined(self) -> list[Path] | None:
        """Every model's complete store, or None while one is missing."""
        paths = [find_complete_store(self.cache_root, spec) for spec in self.full_specs]
        return None if None in paths else [p for p in paths if p is not None]

    def _shard_store_complete(self, spec: StoreSpec, index: int) -> bool:
        shard = shard_spec(spec, index, self.count)
        return find_complete_store(shard_root(self.cache_root), shard) is not None

    def pending(self) -> list[int]:
        """The shards still to run: [] once every model's store is joined. When every shard is
        complete but the join is not (its job was killed while joining), shard 0 runs again: it
        finds its own store complete and joins."""
        if self.joined() is not None:
            return []
        if self.count == 1:
            return [0]
        done = [find_complete_store(self.cache_root, s) is not None for s in self.full_specs]
        pending = [
            index
            for index in range(self.count)
            if not all(
                joined or self._shard_store_complete(spec, index)
                for spec, joined in zip(self.full_specs, done, strict=True)
            )
        ]
        return pending or [0]

    def rows_done(self) -> int:
        """Rows embedded so far, over every shard, averaged over the models (one pass embeds an
        image for every model at once)."""
        if not self.full_specs:
            return 0
        total = 0
        for spec in self.full_specs:
            if find_complete_store(self.cache_root, spec) is not None:
                total += self.n_rows
                continue
            for index, rows in enumerate(self.shard_rows):
                total += self._shard_rows_done(spec, index, rows)
        return total // len(self.full_specs)

    def _shard_rows_done(self, spec: StoreSpec, index: int, rows: int) -> int:
        if self.count == 1:
            path = store_path(self.cache_root, spec)
        elif self._shard_store_complete(spec, index):
            return rows
        else:
            path = store_path(shard_root(self.cache_root), shard_spec(spec, index, self.count))
        journal = journal_dir(path)
        if path.is_file():
            return rows
        if not journal.is_dir():
            return 0
        try:
            parts = contiguous_parts(journal)
        except OSError:  # the journal was published and removed between the check and the read
            return 0
        return min(parts[-1][1], rows) if parts else 0


def shard_ledger(
    dataset: ConfiguredDataset,
    models: Sequence[str],
    cache_root: Path,
    options: ExtractionOptions,
    count: int,
) -> ShardLedger:
    """The ledger of an extraction run as `count` shards: its stores' specs computed as the
    jobs compute them (`plan_store`), without building a model."""
    loaded = build_dataset(dataset.name, dataset.path, **dataset.options)
    positions = select_rows(len(loaded.rows), options.limit)
    full_rows = subset_rows(loaded.rows, positions)
    sources = loaded.sources_fingerprint(positions)
    specs = tuple(
        plan_store(loaded, full_rows, resolve_model(name), options, sources=sources)
        for name in models
    )
    shard_rows = tuple(len(shard_positions(positions, i, count)) for i in range(count))
    return ShardLedger(Path(cache_root), specs, shard_rows)
