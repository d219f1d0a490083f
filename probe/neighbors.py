"""Non-parametric probes: k-NN as in DINO's evaluation, and SimpleShot's nearest prototype.

Both work on a batch of support sets at once: one matrix product against the test set each.
"""

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

KNN_KS: tuple[int, ...] = (20,)
KNN_TEMPERATURE = 0.07  # DINO's


def _l2_normalise(values: "torch.Tensor") -> "torch.Tensor":
    return values / values.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def knn_scores(
    supports: "list[tuple[torch.Tensor, torch.Tensor]]",
    queries: "torch.Tensor",
    n_classes: int,
    *,
    k: int,
    vote: str = "weighted",
) -> "list[torch.Tensor]":
    """Class scores (Q, K) per support set, each row summing to 1.

    supports: (features (S, D), labels (S,) int64) per set; queries (Q, D). Cosine similarity on
    L2-normalised features; the k most similar support images vote, each with weight
    exp(similarity / 0.07) ('weighted', DINO) or 1 ('majority'); k is capped by S. All sets are
    compared with the queries in one matrix product.
    """
    import torch

    if vote not in ("weighted", "majority"):
        raise ValueError(f"vote={vote!r}; expected 'weighted' or 'majority'")
    similarity = _l2_normalise(queries) @ _l2_normalise(torch.cat([f for f, _ in supports])).T
    scores = []
    start = 0
    for features, labels in supports:
        block = similarity[:, start : start + len(features)]
        start += len(features)
        top_similarity, top_index = block.topk(min(k, len(features)), dim=1)
        weights = (
            (top_similarity / KNN_TEMPERATURE).exp()
            if vote == "weighted"
            else torch.ones_like(top_similarity)
        )
        votes = torch.zeros(len(queries), n_classes, device=queries.device)
        votes.scatter_add_(1, labels[top_index], weights)
        scores.append(votes / votes.sum(1, keepdim=True))
    return scores


def prototype_scores(
    supports: "list[tuple[torch.Tensor, torch.Tensor]]",
    queries: "torch.Tensor",
    n_classes: int,
) -> "list[torch.Tensor]":
    """Class scores (Q, K) per support set: softmax of negative distances to the class means,
    SimpleShot's CL2N (features centred on the support mean, then L2-normalised).

    The queries are centred and normalised per set without copying them: with c the centre and
    p a prototype, |q - c|, (q - c).p and so the distances follow from q.c and q.p, one matrix
    product for all sets. A class with no support image gets score 0.
    """
    import torch

    centres, prototypes, present = [], [], []
    for features, labels in supports:
        centre = features.mean(0)
        normalised = _l2_normalise(features - centre)
        sums = torch.zeros(n_classes, features.shape[1], device=features.device)
        sums.index_add_(0, labels, normalised)
        counts = torch.bincount(labels, minlength=n_classes)
        centres.append(centre)
        prototypes.append(sums / counts.clamp_min(1)[:, None])
        present.append(counts > 0)
    stacked = torch.cat([torch.stack(centres), torch.cat(prototypes)])  # (sets + sets*K, D)
    products = queries @ stacked.T
    query_norms = (queries**2).sum(1, keepdim=True)
    n_sets = len(supports)
    scores = []
    for i in range(n_sets):
        centre, protos = centres[i], prototypes[i]
        q_dot_c = products[:, i : i + 1]
        q_dot_p = products[:, n_sets + i * n_classes : n_sets + (i + 1) * n_classes]
        centred_norm = (query_norms - 2 * q_dot_c + centre @ centre).clamp_min(1e-24).sqrt()
        cosine_part = (q_dot_p - protos @ centre) / centred_norm
        squared = (1 - 2 * cosine_part + (protos**2).sum(1)).clamp_min(0)
        distances = squared.sqrt().masked_fill(~present[i], float("inf"))
        scores.append(torch.softmax(-distances, dim=1))
    return scores


def as_numpy(values: "torch.Tensor") -> np.ndarray:
    return values.detach().float().cpu().numpy()
