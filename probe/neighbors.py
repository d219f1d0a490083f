"""Non-parametric probes: k-NN as in DINO's evaluation, and SimpleShot's nearest prototype.

Both work on a batch of support sets at once, drawn from one pool of train rows by index, and
read the pool and the queries in chunks: memory is O(query chunk x support chunk), never
O(queries x supports) (20,000 test rows against 200,000 train rows would be 16 GB at once).
A full budget's support (every pool row) is read in place, without a copy.
"""

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

KNN_KS: tuple[int, ...] = (20,)
KNN_TEMPERATURE = 0.07  # DINO's
QUERY_CHUNK = 4096  # queries compared at a time
SUPPORT_CHUNK = 16_384  # support rows compared at a time: 256 MB of similarities per block


def _l2_normalise(values: "torch.Tensor") -> "torch.Tensor":
    return values / values.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _pieces(index: int, size: int, chunk: int) -> list[tuple[int, int, int]]:
    """(set, start, stop) pieces of at most `chunk` rows covering set `index` of `size` rows."""
    return [(index, start, min(size, start + chunk)) for start in range(0, size, chunk)]


def _segments(supports, pool_rows: int, chunk: int):
    """Blocks of at most `chunk` support rows: each a list of (set, start, stop) pieces, so many
    small sets share one product and a large set is split across several."""
    blocks, current, held = [], [], 0
    for index, (rows, _) in enumerate(supports):
        for _, start, stop in _pieces(index, pool_rows if rows is None else len(rows), chunk):
            if held + stop - start > chunk and current:
                blocks.append(current)
                current, held = [], 0
            current.append((index, start, stop))
            held += stop - start
    if current:
        blocks.append(current)
    return blocks


def _gather(pool: "torch.Tensor", supports, pieces) -> "torch.Tensor":
    """The pool rows of `pieces`, stacked; a single piece of every-row set is a view."""
    import torch

    parts = []
    for index, start, stop in pieces:
        rows = supports[index][0]
        parts.append(pool[start:stop] if rows is None else pool[rows[start:stop]])
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def knn_scores(
    pool: "torch.Tensor",
    supports: "list[tuple[torch.Tensor | None, torch.Tensor]]",
    queries: "torch.Tensor",
    n_classes: int,
    *,
    k: int,
    vote: str = "weighted",
    query_chunk: int = QUERY_CHUNK,
    support_chunk: int = SUPPORT_CHUNK,
) -> "list[torch.Tensor]":
    """Class scores (Q, K) per support set, each row summing to 1.

    pool (N, D) float32; supports: per set, (rows (S,) int64 into the pool, or None for every
    pool row in order; labels (S,) int64); queries (Q, D).
    Cosine similarity on L2-normalised features; the k most similar support images vote, each
    with weight exp(similarity / 0.07) ('weighted', DINO) or 1 ('majority'); k is capped by the
    set's size. Queries go in chunks; for each, the support rows go in blocks and a running
    top-k per set keeps the k best seen so far (the same k as one top-k over all of them).
    """
    import torch

    if vote not in ("weighted", "majority"):
        raise ValueError(f"vote={vote!r}; expected 'weighted' or 'majority'")
    sizes = [len(pool) if rows is None else len(rows) for rows, _ in supports]
    blocks = _segments(supports, len(pool), support_chunk)
    # Support norms once (N floats): similarities are scaled by them instead of copying every
    # support row into a normalised array.
    inverse_norms = [
        1.0
        / torch.cat(
            [
                _gather(pool, supports, [piece]).norm(dim=1)
                for piece in _pieces(index, size, support_chunk)
            ]
        ).clamp_min(1e-12)
        for index, size in enumerate(sizes)
    ]
    scores = [[] for _ in supports]
    for query_start in range(0, len(queries), query_chunk):
        chunk = _l2_normalise(queries[query_start : query_start + query_chunk])
        best: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(supports)
        for pieces in blocks:
            similarity = chunk @ _gather(pool, supports, pieces).T
            column = 0
            for index, start, stop in pieces:
                block = similarity[:, column : column + stop - start]
                block = block * inverse_norms[index][start:stop]
                column += stop - start
                keep = min(k, sizes[index])
                top_similarity, top_index = block.topk(min(keep, stop - start), dim=1)
                top_index += start
                if best[index] is not None:
                    top_similarity = torch.cat([best[index][0], top_similarity], dim=1)
                    top_index = torch.cat([best[index][1], top_index], dim=1)
                    top_similarity, order = top_similarity.topk(keep, dim=1)
                    top_index = top_index.gather(1, order)
                best[index] = (top_similarity, top_index)
        for index, (_, labels) in enumerate(supports):
            top_similarity, top_index = best[index]
            weights = (
                (top_similarity / KNN_TEMPERATURE).exp()
                if vote == "weighted"
                else torch.ones_like(top_similarity)
            )
            votes = torch.zeros(len(chunk), n_classes, device=queries.device)
            votes.scatter_add_(1, labels[top_index], weights)
            scores[index].append(votes / votes.sum(1, keepdim=True))
    return [torch.cat(parts) for parts in scores]


def prototype_scores(
    pool: "torch.Tensor",
    supports: "list[tuple[torch.Tensor | None, torch.Tensor]]",
    queries: "torch.Tensor",
    n_classes: int,
    *,
    query_chunk: int = QUERY_CHUNK,
    support_chunk: int = SUPPORT_CHUNK,
) -> "list[torch.Tensor]":
    """Class scores (Q, K) per support set: softmax of negative distances to the class means,
    SimpleShot's CL2N (features centred on the support mean, then L2-normalised).

    pool, supports, queries as in `knn_scores`. Support rows are read in chunks (their mean
    first, then the per-class sums of their centred, normalised rows). The queries are centred
    and normalised per set without copying them: with c the centre and p a prototype,
    |q - c|, (q - c).p and so the distances follow from q.c and q.p, one matrix product for all
    sets per query chunk. A class with no support image gets score 0.
    """
    import torch

    dim = pool.shape[1]
    centres, prototypes, present = [], [], []
    for index, (rows, labels) in enumerate(supports):
        size = len(pool) if rows is None else len(rows)
        pieces = _pieces(index, size, support_chunk)
        total = torch.zeros(dim, dtype=torch.float64, device=pool.device)
        for piece in pieces:
            total += _gather(pool, supports, [piece]).sum(0, dtype=torch.float64)
        centre = (total / size).to(pool.dtype)
        sums = torch.zeros(n_classes, dim, device=pool.device)
        for piece in pieces:
            normalised = _l2_normalise(_gather(pool, supports, [piece]) - centre)
            sums.index_add_(0, labels[piece[1] : piece[2]], normalised)
        counts = torch.bincount(labels, minlength=n_classes)
        centres.append(centre)
        prototypes.append(sums / counts.clamp_min(1)[:, None])
        present.append(counts > 0)
    stacked = torch.cat([torch.stack(centres), torch.cat(prototypes)])  # (sets + sets*K, D)
    n_sets = len(supports)
    scores = [[] for _ in supports]
    for query_start in range(0, len(queries), query_chunk):
        chunk = queries[query_start : query_start + query_chunk]
        products = chunk @ stacked.T
        query_norms = torch.linalg.vector_norm(chunk, dim=1, keepdim=True) ** 2
        for i in range(n_sets):
            centre, protos = centres[i], prototypes[i]
            q_dot_c = products[:, i : i + 1]
            q_dot_p = products[:, n_sets + i * n_classes : n_sets + (i + 1) * n_classes]
            centred_norm = (query_norms - 2 * q_dot_c + centre @ centre).clamp_min(1e-24).sqrt()
            cosine_part = (q_dot_p - protos @ centre) / centred_norm
            squared = (1 - 2 * cosine_part + (protos**2).sum(1)).clamp_min(0)
            distances = squared.sqrt().masked_fill(~present[i], float("inf"))
            scores[i].append(torch.softmax(-distances, dim=1))
    return [torch.cat(parts) for parts in scores]


def as_numpy(values: "torch.Tensor") -> np.ndarray:
    return values.detach().float().cpu().numpy()
