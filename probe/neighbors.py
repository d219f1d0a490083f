"""Non-parametric probes: k-NN as in DINO's evaluation, and SimpleShot's nearest prototype.

Both work on a batch of support sets at once: one matrix product against the test set each.
"""

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside functions: `import probe` stays light
    import torch

KNN_KS: tuple[int, ...] = (20,)
KNN_TEMPERATURE = 0.07  # DINO's


def _l2_normalise(values: "torch.Tensor") -> "torch.Tensor":
    return values / values.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def knn_scores(
    support: "torch.Tensor",
    support_labels: "torch.Tensor",
    queries: "torch.Tensor",
    n_classes: int,
    *,
    k: int,
    vote: str = "weighted",
) -> "torch.Tensor":
    """Class scores (Q, K) summing to 1 per query.

    support (S, D), support_labels (S,) int64, queries (Q, D): cosine similarity on
    L2-normalised features; the k most similar support images vote, each with weight
    exp(similarity / 0.07) ('weighted', DINO) or 1 ('majority'). k is capped by S.
    """
    import torch

    similarity = _l2_normalise(queries) @ _l2_normalise(support).T
    k = min(k, support.shape[0])
    top_similarity, top_index = similarity.topk(k, dim=1)
    if vote == "weighted":
        weights = (top_similarity / KNN_TEMPERATURE).exp()
    elif vote == "majority":
        weights = torch.ones_like(top_similarity)
    else:
        raise ValueError(f"vote={vote!r}; expected 'weighted' or 'majority'")
    votes = torch.zeros(queries.shape[0], n_classes, device=queries.device)
    votes.scatter_add_(1, support_labels[top_index], weights)
    return votes / votes.sum(1, keepdim=True)


def prototype_scores(
    support: "torch.Tensor",
    support_labels: "torch.Tensor",
    queries: "torch.Tensor",
    n_classes: int,
) -> "torch.Tensor":
    """Class scores (Q, K): softmax of negative distances to the class means, SimpleShot's CL2N.

    Features are centred on the support mean and L2-normalised; a class with no support image
    gets score 0.
    """
    import torch

    centre = support.mean(0, keepdim=True)
    support_n = _l2_normalise(support - centre)
    queries_n = _l2_normalise(queries - centre)
    present = torch.bincount(support_labels, minlength=n_classes)
    sums = torch.zeros(n_classes, support.shape[1], device=support.device)
    sums.index_add_(0, support_labels, support_n)
    prototypes = sums / present.clamp_min(1)[:, None]
    distances = torch.cdist(queries_n, prototypes)
    distances[:, present == 0] = float("inf")
    return torch.softmax(-distances, dim=1)


def as_numpy(values: "torch.Tensor") -> np.ndarray:
    return values.detach().float().cpu().numpy()
