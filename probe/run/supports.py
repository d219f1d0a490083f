"""The support sets of a run: drawn once per (dataset, budget, seed) from the first store of each
dataset, by image id, and shared by every model of that dataset, so comparisons are paired."""

from collections.abc import Sequence

import numpy as np

from medprobe.cache import ToolkitError, open_store
from medprobe.probe.budgets import Budget, draw_support
from medprobe.probe.run.settings import ProbeSettings
from medprobe.probe.targets import ProbeTarget, task_of

SupportSets = dict[tuple[str, Budget, int], np.ndarray]


def draw_supports(targets: Sequence[ProbeTarget], settings: ProbeSettings) -> SupportSets:
    """Support ids per (dataset, budget, seed), drawn once from each dataset's train split."""
    supports: SupportSets = {}
    for dataset in dict.fromkeys(t.dataset for t in targets):
        store = open_store(next(t.path for t in targets if t.dataset == dataset))
        ids, labels = store.ids("train"), store.labels("train")
        mask = store.label_mask("train")
        if mask is not None:
            labels = np.where(mask, labels, -1)
        names = task_of(store)["label_names"]
        if labels.ndim == 1 and len(np.unique(labels)) < 2:
            only = names[labels[0]] if len(labels) and labels[0] < len(names) else labels[:1]
            raise ToolkitError(
                f"dataset {dataset!r}: every training image is of one class ({only!r}), so "
                "there is nothing to tell apart and every probe would score perfectly; check "
                "the labels (or the split) of the dataset and extract again"
            )
        for budget in settings.budgets:
            for seed in settings.seeds_for(budget):
                supports[(dataset, budget, seed)] = draw_support(
                    ids,
                    labels,
                    budget,
                    dataset=dataset,
                    seed=seed,
                    label_names=names,
                    allow_fewer=settings.allow_fewer,
                )
    return supports
