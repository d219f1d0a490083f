"""The attentive probe against direct references: its pooling against softmax(QK^T/sqrt(d))V
written out, its batched training against models trained one at a time, and its protocol."""

import numpy as np
import pytest
import torch

from medprobe.probe.fit.attentive import ArrayTokens, attentive_scores
from medprobe.probe.fit.attentive import model as attentive_model
from medprobe.probe.fit.attentive import training as attentive_training
from medprobe.probe.fit.attentive.plan import (
    DEFAULT_WEIGHT_DECAY,
    WEIGHT_DECAYS,
    best_decay,
    choose,
    plan,
)
from medprobe.probe.fit.protocol import ProbeInputs


def _random_weights(rng, groups, models, queries, dim, outputs):
    return attentive_model.AttentiveWeights(
        torch.as_tensor(rng.normal(size=(groups, models, queries, dim)), dtype=torch.float32),
        torch.as_tensor(
            rng.normal(size=(groups, models, queries, dim, outputs)), dtype=torch.float32
        ),
        torch.as_tensor(rng.normal(size=(groups, models, outputs)), dtype=torch.float32),
    )


def test_logits_are_softmax_attention_pooling_written_out():
    rng = np.random.default_rng(0)
    groups, rows, n_tokens, dim, models, outputs = 2, 3, 5, 8, 2, 3
    tokens = rng.normal(size=(groups, rows, n_tokens, dim)).astype(np.float32)
    weights = _random_weights(rng, groups, models, 4, dim, outputs)
    got = attentive_model.logits(torch.as_tensor(tokens), weights).numpy()
    queries, heads, bias = (t.numpy().astype(np.float64) for t in weights.tensors())
    for g in range(groups):
        for j in range(models):
            for n in range(rows):
                x = tokens[g, n].astype(np.float64)  # (T, D): keys and values
                scores = queries[g, j] @ x.T / np.sqrt(dim)  # (M, T)
                attention = np.exp(scores - scores.max(1, keepdims=True))
                attention /= attention.sum(1, keepdims=True)
                pooled = attention @ x  # (M, D)
                expected = bias[g, j] + np.einsum("md,mdk->k", pooled, heads[g, j])
                np.testing.assert_allclose(got[g, j, n], expected, rtol=1e-4, atol=1e-4)


def test_raw_weights_on_raw_tokens_are_the_model_on_standardised_tokens():
    rng = np.random.default_rng(1)
    tokens = (3.0 + 2.0 * rng.normal(size=(1, 4, 6, 5))).astype(np.float32)
    weights = _random_weights(rng, 1, 1, 2, 5, 2)
    mean = torch.as_tensor(rng.normal(size=(1, 1, 5)), dtype=torch.float32)
    std = torch.as_tensor(rng.uniform(0.5, 2.0, size=(1, 1, 5)), dtype=torch.float32)
    standardised = (torch.as_tensor(tokens) - mean[0, 0]) / std[0, 0]
    expected = attentive_model.logits(standardised, weights)
    got = attentive_model.logits(
        torch.as_tensor(tokens), attentive_model.raw_weights(weights, mean, std)
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multilabel", [False, True])
def test_written_out_gradients_are_autograds(multilabel):
    rng = np.random.default_rng(5)
    groups, models, queries, rows, n_tokens, dim, outputs = 2, 3, 2, 5, 4, 6, 3

    def tensor(*shape):
        return torch.as_tensor(rng.normal(size=shape), dtype=torch.float64)

    tokens = tensor(groups, rows, n_tokens, dim)
    weights = attentive_model.AttentiveWeights(
        tensor(groups, models, queries, dim),
        tensor(groups, models, queries, dim, outputs),
        tensor(groups, models, outputs),
    )
    mean, std = tensor(groups, models, dim), 0.5 + tensor(groups, models, dim).abs()
    if multilabel:
        targets = torch.as_tensor(rng.integers(0, 2, (groups, rows, outputs)), dtype=torch.float64)
        entry = torch.as_tensor(rng.random((groups, models, rows, outputs)) > 0.3).double()
    else:
        targets = torch.as_tensor(rng.integers(0, outputs, (groups, rows)))
        entry = torch.as_tensor(rng.random((groups, models, rows)) > 0.3).double()
    leaves = [t.clone().requires_grad_(True) for t in weights.tensors()]
    raw = attentive_model.raw_weights(attentive_model.AttentiveWeights(*leaves), mean, std)
    out = attentive_model.logits(tokens, raw)
    if multilabel:  # binary cross-entropy, log(1 + e^z) - y z
        losses = torch.log1p(torch.exp(out)) - targets[:, None] * out
    else:  # cross-entropy, logsumexp(z) - z_y
        picked = out.gather(3, targets[:, None, :, None].expand(-1, models, -1, 1))[..., 0]
        losses = out.logsumexp(3) - picked
    objective = ((losses * entry).flatten(2).sum(2) / entry.flatten(2).sum(2)).sum()
    expected = torch.autograd.grad(objective, leaves)
    got = attentive_model.standardised_gradients(
        attentive_model.gradients(
            tokens, attentive_model.raw_weights(weights, mean, std), targets, entry, multilabel
        ),
        mean,
        std,
    )
    for a, b in zip(got.tensors(), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_model_on_group_standardised_tokens_with_relative_moments_is_the_model_on_its_own():
    rng = np.random.default_rng(11)
    tokens = torch.as_tensor(4.0 + 3.0 * rng.normal(size=(2, 5, 6, 7)), dtype=torch.float64)
    weights = _random_weights(rng, 2, 3, 2, 7, 3)
    weights = attentive_model.AttentiveWeights(*(t.double() for t in weights.tensors()))
    mean = torch.as_tensor(4.0 + rng.normal(size=(2, 3, 7)))
    std = torch.as_tensor(rng.uniform(2.0, 4.0, size=(2, 3, 7)))
    group_mean = torch.as_tensor(4.0 + rng.normal(size=(2, 7)))
    group_std = torch.as_tensor(rng.uniform(2.0, 4.0, size=(2, 7)))
    own = (tokens[:, None] - mean[:, :, None, None]) / std[:, :, None, None]  # (G, m, n, T, D)
    expected = torch.zeros(2, 3, 5, 3, dtype=torch.float64)
    for g in range(2):
        for j in range(3):
            alone = attentive_model.AttentiveWeights(
                *(t[g : g + 1, j : j + 1] for t in weights.tensors())
            )
            expected[g, j] = attentive_model.logits(own[g, j][None], alone)[0, 0]
    z = attentive_model.standardised(tokens.clone(), group_mean, group_std, torch.float64)
    relative = attentive_model.relative_moments(mean, std, group_mean, group_std)
    got = attentive_model.logits(z, attentive_model.raw_weights(weights, *relative))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_bfloat16_products_give_float32_gradients_to_their_rounding():
    rng = np.random.default_rng(12)
    groups, models, rows, n_tokens, dim, outputs = 2, 3, 12, 16, 32, 4
    tokens = torch.as_tensor(rng.normal(size=(groups, rows, n_tokens, dim)), dtype=torch.float32)
    weights = _random_weights(rng, groups, models, 4, dim, outputs)
    targets = torch.as_tensor(rng.integers(0, outputs, (groups, rows)))
    entry = torch.ones(groups, models, rows)
    exact = attentive_model.gradients(tokens, weights, targets, entry, False)
    workspace = attentive_model.Workspace()
    for _ in range(2):  # a reused workspace changes nothing
        rounded = attentive_model.gradients(
            tokens.bfloat16(), weights, targets, entry, False, workspace
        )
        for a, b in zip(rounded.tensors(), exact.tensors(), strict=True):
            assert a.dtype == torch.float32
            assert (a - b).norm() <= 2e-2 * b.norm()  # bfloat16 keeps 8 bits: 2^-8 = 0.4 %


def _train(weights, tokens, targets, fit, decay, mean, std, multilabel=False):
    return attentive_training.train(
        weights,
        attentive_training.repeated(attentive_training.Batch(tokens, None)),
        15,
        targets=targets,
        entry_weights=fit,
        weight_decay=decay,
        learning_rate=1e-2,
        mean=mean,
        std=std,
        multilabel=multilabel,
    )


def test_batched_training_equals_each_model_trained_alone():
    rng = np.random.default_rng(2)
    groups, models, rows, n_tokens, dim, classes = 3, 2, 6, 4, 5, 3
    tokens = torch.as_tensor(rng.normal(size=(groups, rows, n_tokens, dim)), dtype=torch.float32)
    targets = torch.as_tensor(rng.integers(0, classes, (groups, rows)))
    fit = torch.as_tensor(rng.random((groups, models, rows)) > 0.3, dtype=torch.float32)
    decay = torch.as_tensor([[0.01, 1.0]] * groups, dtype=torch.float32)
    mean = torch.as_tensor(rng.normal(size=(groups, models, dim)), dtype=torch.float32)
    std = torch.as_tensor(rng.uniform(0.5, 2, (groups, models, dim)), dtype=torch.float32)
    start = _random_weights(rng, groups, models, 2, dim, classes)
    batched = _train(
        attentive_model.AttentiveWeights(*(t.clone() for t in start.tensors())),
        tokens,
        targets,
        fit,
        decay,
        mean,
        std,
    )
    for g in range(groups):
        for j in range(models):
            alone = _train(
                attentive_model.AttentiveWeights(
                    *(t[g : g + 1, j : j + 1].clone() for t in start.tensors())
                ),
                tokens[g : g + 1],
                targets[g : g + 1],
                fit[g : g + 1, j : j + 1],
                decay[g : g + 1, j : j + 1],
                mean[g : g + 1, j : j + 1],
                std[g : g + 1, j : j + 1],
            )
            for together, apart in zip(batched.tensors(), alone.tensors(), strict=True):
                torch.testing.assert_close(together[g, j], apart[0, 0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched.queries, start.queries)  # it trained


def _token_task(n, rng, means, n_tokens=16, where="one"):
    labels = rng.integers(0, len(means), n)
    tokens = rng.normal(size=(n, n_tokens, means.shape[1])).astype(np.float32)
    if where == "one":
        tokens[np.arange(n), rng.integers(0, n_tokens, n)] += means[labels]
    else:
        tokens += means[labels][:, None] / np.sqrt(n_tokens)
    return tokens, labels


def _inputs(train, train_labels, test, supports, n_classes, **extra):
    return ProbeInputs(
        train=train.mean(1),
        train_labels=train_labels,
        supports=supports,
        seeds=list(range(len(supports))),
        test=test.mean(1),
        n_classes=n_classes,
        **extra,
    )


@pytest.fixture(scope="module")
def one_token_task():
    rng = np.random.default_rng(3)
    means = 3.0 * rng.normal(size=(3, 16))
    train, train_labels = _token_task(120, rng, means)
    test, test_labels = _token_task(90, rng, means)
    supports = [
        np.concatenate(
            [
                np.random.default_rng(s).choice(np.flatnonzero(train_labels == c), 6, False)
                for c in range(3)
            ]
        )
        for s in range(2)
    ]
    return train, train_labels, test, test_labels, supports


def test_the_probe_finds_the_one_token_that_holds_the_class(one_token_task):
    train, train_labels, test, test_labels, supports = one_token_task
    inputs = _inputs(train, train_labels, test, supports, 3)
    scores = attentive_scores(inputs, ArrayTokens({"train": train, "test": test}))
    assert len(scores) == 2 and scores[0].shape == (90, 3)
    np.testing.assert_allclose(scores[0].sum(1), 1.0, rtol=1e-5)
    assert min((s.argmax(1) == test_labels).mean() for s in scores) > 0.9
    # a seed's numbers do not depend on the other seeds batched with it
    alone = attentive_scores(
        _inputs(train, train_labels, test, supports[:1], 3),
        ArrayTokens({"train": train, "test": test}),
    )
    np.testing.assert_allclose(alone[0], scores[0], rtol=1e-4, atol=1e-5)


def test_bfloat16_training_gives_the_float32_probes_answers(one_token_task):
    train, train_labels, test, _, supports = one_token_task
    inputs = _inputs(train, train_labels, test, supports, 3)
    source = ArrayTokens({"train": train, "test": test})
    exact = attentive_scores(inputs, source, dtype=torch.float32)
    rounded = attentive_scores(inputs, source, dtype=torch.bfloat16)
    for a, b in zip(rounded, exact, strict=True):
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.97
        assert np.abs(a - b).max() < 0.1


def test_one_and_two_threads_give_the_same_numbers():
    rng = np.random.default_rng(13)
    means = 2.0 * rng.normal(size=(3, 128))
    train, train_labels = _token_task(90, rng, means, n_tokens=32)
    test, _ = _token_task(30, rng, means, n_tokens=32)
    supports = [np.flatnonzero(train_labels < 3)[:60]]  # 60 rows x 20 models: 2 threads
    inputs = _inputs(train, train_labels, test, supports, 3)
    source = ArrayTokens({"train": train, "test": test})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = attentive_scores(inputs, source)
        torch.set_num_threads(2)
        paired = attentive_scores(inputs, source)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(alone[0], paired[0])


def test_bfloat16_only_where_the_device_multiplies_it(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert attentive_training.compute_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert attentive_training.compute_dtype("cpu") == torch.bfloat16


def test_a_full_budget_streams_its_rows_and_chooses_on_val(one_token_task, monkeypatch):
    from medprobe.probe.fit.attentive import probe as attentive_probe

    train, train_labels, test, _, _ = one_token_task
    val, val_labels = train[:40], train_labels[:40]
    read = []
    source = ArrayTokens({"train": train, "test": test, "val": val})
    monkeypatch.setattr(attentive_probe, "BATCH_ROWS", 32)
    monkeypatch.setattr(attentive_probe, "CHUNK_ROWS", 50)

    class Counting:
        shape = source.shape

        def read(self, split, rows):
            read.append((split, len(rows)))
            return source.read(split, rows)

    inputs = _inputs(
        train,
        train_labels,
        test,
        [np.arange(len(train))],
        3,
        val=val.mean(1),
        val_labels=val_labels,
        use_val=True,
    )
    scores = attentive_scores(inputs, Counting())
    assert scores[0].shape == (90, 3)
    assert {split for split, _ in read} == {"train", "val", "test"}
    assert max(n for _, n in read) <= 50  # never a whole split at once


def test_multilabel_unknown_labels_are_out_of_the_loss():
    rng = np.random.default_rng(4)
    means = 3.0 * rng.normal(size=(2, 8))
    train, first = _token_task(40, rng, means, n_tokens=6, where="spread")
    test, _ = _token_task(20, rng, means, n_tokens=6, where="spread")
    labels = np.stack([first, 1 - first, rng.integers(0, 2, 40)], 1).astype(np.int8)
    labels[rng.random(labels.shape) < 0.2] = -1
    supports = [np.arange(40)]
    source = ArrayTokens({"train": train, "test": test})
    scores = attentive_scores(_inputs(train, labels, test, supports, 2), source)
    assert scores[0].shape == (20, 3) and ((scores[0] >= 0) & (scores[0] <= 1)).all()
    # the value under an unknown label is never read: other values there train the same model
    tokens = torch.as_tensor(train[None, :10])
    known = torch.as_tensor(labels[None, :10] >= 0)
    targets = torch.as_tensor(np.clip(labels[None, :10], 0, 1), dtype=torch.float32)
    other = torch.where(known, targets, 1.0 - targets)
    fit = torch.ones(1, 1, 10)[..., None] * known[:, None].float()
    decay, mean, std = torch.full((1, 1), 0.1), torch.zeros(1, 1, 8), torch.ones(1, 1, 8)
    start = _random_weights(rng, 1, 1, 2, 8, 3)
    trained = [
        _train(
            attentive_model.AttentiveWeights(*(t.clone() for t in start.tensors())),
            tokens,
            values,
            fit,
            decay,
            mean,
            std,
            multilabel=True,
        )
        for values in (targets, other)
    ]
    for a, b in zip(trained[0].tensors(), trained[1].tensors(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_decay_ties_go_to_the_larger_decay():
    assert best_decay([0.5, 0.2, 0.2, 0.9]) == 2
    assert best_decay([np.nan] * len(WEIGHT_DECAYS)) == WEIGHT_DECAYS.index(DEFAULT_WEIGHT_DECAY)
    assert best_decay([0.1, 0.3, np.nan, 0.2]) == 0


def test_the_chosen_decay_has_the_lowest_mean_held_out_loss_and_the_final_fits_every_row():
    labels = np.repeat([0, 1, 2], 6)
    inputs = ProbeInputs(
        train=np.zeros((18, 2)),
        train_labels=labels,
        supports=[np.arange(18)],
        seeds=[0],
        test=np.zeros((1, 2)),
        n_classes=3,
    )
    group = plan(inputs, np.arange(18), seed=0, folds_allowed=True)
    assert len(group.decay) == 5 * len(WEIGHT_DECAYS) and group.cross_validated
    # every row is held out by exactly one fold, and fitted by the others
    np.testing.assert_array_equal(group.held.sum(0), len(WEIGHT_DECAYS))
    np.testing.assert_array_equal(group.fit + group.held, 1.0)
    losses = np.random.default_rng(6).random(len(group.decay))
    means = [losses[group.decay == np.float32(wd)].mean() for wd in WEIGHT_DECAYS]
    assert choose(group, losses) == WEIGHT_DECAYS[int(np.argmin(means))]
    final = group.final(0.3)
    np.testing.assert_array_equal(final.fit, np.ones((1, 18)))
    assert final.decay.tolist() == [np.float32(0.3)] and not final.cross_validated
    # too few images for folds: no candidates, the final at the default decay
    small = plan(inputs, np.array([0, 6, 12]), seed=0, folds_allowed=True)
    assert len(small.decay) == 0 and choose(small, np.array([])) == DEFAULT_WEIGHT_DECAY
