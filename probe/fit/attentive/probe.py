"""The attentive probe over frozen tokens (`model`, `training`), under the protocol the linear
probes follow (`protocol`): its weight decay, and nothing else, is chosen without the test split.

- A support set with >= 2 images of every class (a multi-label one with a label having >= 2 of each
  value) is split into the same stratified folds as logistic regression's (`cv_folds`,
  `multilabel_cv_folds`); every (fold, weight decay) of every seed is one model of one batched
  training; the weight decay with the lowest mean held-out loss is kept (near-ties to the larger),
  and one final model per seed, fitted on all the support at that decay (a second batched
  training, from the same initial draw), scores the test split. Fewer images: the final model at
  `DEFAULT_WEIGHT_DECAY`.
- A full budget with a val split: one model per weight decay on the train split, chosen on val.
- A multi-label store is one model whose head has one sigmoid output per label (the queries are
  shared), its unknown labels (-1) out of the loss; the weight decay is chosen on the mean held-out
  binary cross-entropy over the known labels. (Logistic regression fits one probe per label; an
  attentive probe per label would multiply the cost by the number of labels.)

Small supports (at most `STREAM_ROWS` rows) are read once, kept as float32 and trained full-batch
for `FEW_SHOT_STEPS` steps, seeds batched together up to `BATCH_FLOATS`. Larger ones (full
budgets, large fractions) stream their rows from the store in shuffled mini-batches of `BATCH_ROWS`
for `EPOCHS` epochs; the test and val splits are read in chunks of `CHUNK_ROWS`: no run holds a
split's tokens in memory. Randomness (inits, fold splits, batch order) comes from each support's
seed only, so the numbers do not depend on workers or on the other seeds in the batch.
"""

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

import medprobe.probe.fit.attentive.model as model
import medprobe.probe.fit.attentive.training as training
from medprobe.probe.fit.attentive.plan import (
    BATCH_ROWS,
    CHUNK_ROWS,
    DEFAULT_WEIGHT_DECAY,
    EPOCHS,
    FEW_SHOT_STEPS,
    LEARNING_RATE,
    STREAM_ROWS,
    Group,
    batches,
    best_decay,
    choose,
    entry_weights,
    mean_losses,
    n_outputs,
    plan,
    reader,
    stacked_targets,
    targets_of,
)
from medprobe.probe.fit.protocol import ProbeInputs, TokenSource, warn_if_no_val

if TYPE_CHECKING:
    import torch


def attentive_scores(
    inputs: ProbeInputs,
    tokens: TokenSource,
    device: "torch.device | str" = "cpu",
    dtype: "torch.dtype | None" = None,
) -> list[np.ndarray]:
    """Test scores per support set: (M, K) class probabilities, or (M, L) positive-class
    probabilities for a multi-label store. dtype: of the training products (None: the device's
    `training.compute_dtype`)."""
    import torch

    device = torch.device(device)
    dtype = dtype or training.compute_dtype(device)
    warn_if_no_val(inputs)
    use_val = inputs.use_val and inputs.val is not None
    groups = [
        plan(inputs, support, seed, folds_allowed=not use_val)
        for support, seed in zip(inputs.supports, inputs.seeds, strict=True)
    ]
    chosen: list[model.AttentiveWeights | None] = [None] * len(groups)
    small = [g for g, group in enumerate(groups) if len(group.rows) <= STREAM_ROWS and not use_val]
    n_tokens, dim = tokens.shape
    per_row = n_tokens * dim * model.N_QUERIES  # multiply-adds of a row's attention per model
    for part in batches(small, groups, tokens.shape):
        work = sum(len(groups[g].rows) * len(groups[g].decay) for g in part) * per_row
        with training.threads_for(work):
            trained = _train_in_memory(inputs, tokens, [groups[g] for g in part], device, dtype)
        for g, weights in zip(part, trained, strict=True):
            chosen[g] = weights
    for g, group in enumerate(groups):
        if chosen[g] is None:
            work = min(BATCH_ROWS, len(group.rows)) * max(len(group.decay), 1) * per_row
            with training.threads_for(work):
                chosen[g] = _train_streamed(inputs, tokens, group, use_val, device, dtype)
    every = model.AttentiveWeights(
        *(torch.cat(parts) for parts in zip(*(w.tensors() for w in chosen), strict=True))
    )
    with training.threads_for(min(CHUNK_ROWS, len(inputs.test)) * len(groups) * per_row):
        probabilities = training.predict(
            reader(tokens, "test", np.arange(len(inputs.test)), device),
            len(inputs.test),
            every,
            chunk_rows=CHUNK_ROWS,
            multilabel=inputs.multilabel,
        )
    return [probabilities[g, 0].cpu().numpy() for g in range(len(groups))]


def _train_in_memory(
    inputs: ProbeInputs, tokens: TokenSource, groups: list[Group], device, dtype
) -> list[model.AttentiveWeights]:
    """Small supports, read once, standardised per support (`model.standardised`) and trained
    full-batch together: their candidates (when they have folds), then each one's final model at
    its chosen weight decay, as raw weights (1, 1, ...)."""
    import torch

    n_tokens, dim = tokens.shape
    n_rows = max(len(g.rows) for g in groups)
    stacked = torch.zeros(len(groups), n_rows, n_tokens, dim, device=device)
    for g, group in enumerate(groups):
        stacked[g, : len(group.rows)] = torch.as_tensor(tokens.read("train", group.rows))
    row_sums = stacked.sum(2, dtype=torch.float64)
    row_squares = torch.stack([(x * x).sum(1, dtype=torch.float64) for x in stacked])
    sizes = torch.as_tensor([len(g.rows) for g in groups], device=device)
    group_mean, group_std = model.token_moments(
        row_sums.sum(1), row_squares.sum(1), sizes, n_tokens
    )
    stacked = model.standardised(stacked, group_mean, group_std, dtype)

    def fitted(members: list[Group]) -> tuple[model.AttentiveWeights, "torch.Tensor"]:
        """The members' models trained full-batch -> raw weights and held-out losses (G, m)."""
        targets, known, fit, held = stacked_targets(members, n_rows, device)
        fit64 = fit.double()
        mean, std = model.token_moments(fit64 @ row_sums, fit64 @ row_squares, fit.sum(2), n_tokens)
        relative = model.relative_moments(mean, std, group_mean, group_std)
        weights = model.initial_weights(
            [np.random.default_rng(g.seed) for g in members],
            fit.shape[1],
            dim,
            n_outputs(inputs),
            device,
        )
        training.train(
            weights,
            training.repeated(training.Batch(stacked, None)),
            FEW_SHOT_STEPS,
            targets=targets,
            entry_weights=entry_weights(fit, known),
            weight_decay=torch.as_tensor(np.stack([g.decay for g in members]), device=device),
            learning_rate=LEARNING_RATE,
            mean=relative[0],
            std=relative[1],
            multilabel=inputs.multilabel,
        )
        raw = model.raw_weights(weights, mean, std)
        if not held.any():
            return raw, None
        with torch.no_grad():
            out = model.logits(stacked, model.raw_weights(weights, *relative))
        probabilities = out.sigmoid() if inputs.multilabel else out.softmax(3)
        held_weights = entry_weights(held, known)
        return raw, mean_losses(probabilities, targets, held_weights, inputs.multilabel)

    decays = [DEFAULT_WEIGHT_DECAY] * len(groups)
    if groups[0].cross_validated:  # a part's groups have the same number of candidates
        _, losses = fitted(groups)
        decays = [choose(g, losses[i]) for i, g in enumerate(groups)]
    finals, _ = fitted([g.final(wd) for g, wd in zip(groups, decays, strict=True)])
    return [
        model.AttentiveWeights(*(t[i : i + 1] for t in finals.tensors()))
        for i in range(len(groups))
    ]


def _fit_streamed(
    inputs: ProbeInputs, tokens: TokenSource, group: Group, device, dtype
) -> model.AttentiveWeights:
    """A group's models trained in shuffled mini-batches read from the store, each standardised
    by the group's moments (`model.standardised`) -> raw weights."""
    import torch

    n_tokens, dim = tokens.shape
    n_rows = len(group.rows)
    read = reader(tokens, "train", group.rows, device)
    targets, known, fit, _ = stacked_targets([group], n_rows, device)
    every = torch.ones(1, n_rows, dtype=torch.float64, device=device)
    fit64 = torch.cat([fit[0].double(), every])  # each model's fit rows, then the group's
    sums = torch.zeros(len(fit64), dim, dtype=torch.float64, device=device)
    squares = torch.zeros_like(sums)
    for start in range(0, n_rows, CHUNK_ROWS):
        positions = np.arange(start, min(n_rows, start + CHUNK_ROWS))
        chunk = read(positions)
        sums += fit64[:, positions] @ chunk.sum(1, dtype=torch.float64)
        squares += fit64[:, positions] @ (chunk * chunk).sum(1, dtype=torch.float64)
    mean, std = model.token_moments(sums[None], squares[None], fit64.sum(1)[None], n_tokens)
    group_mean, group_std = mean[:, -1], std[:, -1]
    mean, std = mean[:, :-1], std[:, :-1]
    rng = np.random.default_rng(group.seed)
    weights = model.initial_weights([rng], fit.shape[1], dim, n_outputs(inputs), device)
    per_epoch = math.ceil(n_rows / BATCH_ROWS)
    epochs = max(EPOCHS, math.ceil(FEW_SHOT_STEPS / per_epoch))

    def batches() -> Iterator[training.Batch]:
        for _ in range(epochs):
            order = rng.permutation(n_rows)
            for start in range(0, n_rows, BATCH_ROWS):
                positions = np.sort(order[start : start + BATCH_ROWS])
                batch = model.standardised(read(positions)[None], group_mean, group_std, dtype)
                yield training.Batch(batch, torch.as_tensor(positions, device=device))

    relative = model.relative_moments(mean, std, group_mean, group_std)
    training.train(
        weights,
        batches(),
        epochs * per_epoch,
        targets=targets,
        entry_weights=entry_weights(fit, known),
        weight_decay=torch.as_tensor(group.decay[None], device=device),
        learning_rate=LEARNING_RATE,
        mean=relative[0],
        std=relative[1],
        multilabel=inputs.multilabel,
    )
    return model.raw_weights(weights, mean, std)


def _train_streamed(
    inputs: ProbeInputs, tokens: TokenSource, group: Group, use_val: bool, device, dtype
) -> model.AttentiveWeights:
    """A large support (or a full budget) trained streamed: its candidates (folds x weight
    decays, scored on their held-out rows, then the final at the chosen one; or one per weight
    decay, chosen on val) -> the chosen model's raw weights (1, 1, ...)."""
    import torch

    if not use_val and not group.cross_validated:
        return _fit_streamed(inputs, tokens, group.final(DEFAULT_WEIGHT_DECAY), device, dtype)
    raw = _fit_streamed(inputs, tokens, group, device, dtype)
    if use_val:
        val_rows = np.arange(len(inputs.val))
        probabilities = training.predict(
            reader(tokens, "val", val_rows, device),
            len(val_rows),
            raw,
            chunk_rows=CHUNK_ROWS,
            multilabel=inputs.multilabel,
        )
        val_targets, val_known = targets_of(inputs.val_labels, inputs.multilabel)
        losses = mean_losses(
            probabilities,
            torch.as_tensor(val_targets[None], device=device),
            entry_weights(
                torch.ones(1, len(group.decay), len(val_rows), device=device),
                None if val_known is None else torch.as_tensor(val_known[None], device=device),
            ),
            inputs.multilabel,
        )[0]
        return raw.select(torch.as_tensor([best_decay(losses)], device=device))
    targets, known, _, held = stacked_targets([group], len(group.rows), device)
    read = reader(tokens, "train", group.rows, device)
    probabilities = training.predict(
        read, len(group.rows), raw, chunk_rows=CHUNK_ROWS, multilabel=inputs.multilabel
    )
    losses = mean_losses(probabilities, targets, entry_weights(held, known), inputs.multilabel)
    final = group.final(choose(group, losses[0]))
    return _fit_streamed(inputs, tokens, final, device, dtype)
