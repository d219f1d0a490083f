"""Non-parametric probes: k-NN as in DINO's evaluation, and SimpleShot's nearest prototype.

Both work on a batch of support sets at once, drawn from one pool of train rows by index, and
read the pool and the queries in chunks: memory is O(query chunk x support chunk), never
O(queries x supports) (20,000 test rows against 200,000 train rows would be 16 GB at once).
Sets that read the same rows (the labels of a multi-label store, each with its unknown rows
labelled -1) share every pass over them; a full budget's rows (every pool row) are read in
place, without a copy.
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


def _sources(supports) -> list[tuple["torch.Tensor | None", list[int]]]:
    """(rows, the sets reading them) per distinct rows tensor (by identity; None: the pool)."""
    groups: dict[int, tuple[torch.Tensor | None, list[int]]] = {}
    for index, (rows, _) in enumerate(supports):
        groups.setdefault(id(rows), (rows, []))[1].append(index)
    return list(groups.values())


def _pieces(source: int, size: int, chunk: int) -> list[tuple[int, int, int]]:
    """(source, start, stop) pieces of at most `chunk` rows covering a source of `size` rows."""
    return [(source, start, min(size, start + chunk)) for start in range(0, size, chunk)]


def _blocks(sizes: list[int], chunk: int) -> list[list[tuple[int, int, int]]]:
    """Blocks of at most `chunk` rows: many small sources share one product, a large one is
    split across several."""
    blocks, current, held = [], [], 0
    for source, size in enumerate(sizes):
        for piece in _pieces(source, size, chunk):
            length = piece[2] - piece[1]
            if held + length > chunk and current:
                blocks.append(current)
                current, held = [], 0
            current.append(piece)
            held += length
    if current:
        blocks.append(current)
    return blocks


def _gather(pool: "torch.Tensor", sources, pieces) -> "torch.Tensor":
    """The pool rows of `pieces`, stacked; a single piece of the pool itself is a view."""
    import torch

    parts = []
    for source, start, stop in pieces:
        rows = sources[source][0]
        parts.append(pool[start:stop] if rows is None else pool[rows[start:stop]])
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _size(pool: "torch.Tensor", rows: "torch.Tensor | None") -> int:
    return len(pool) if rows is None else len(rows)


def top_k_lowest_index_first(
    values: "torch.Tensor", k: int, kth: "torch.Tensor | None" = None
) -> "tuple[torch.Tensor, torch.Tensor]":
    """The k largest of each row of values (Q, C) and their columns, in column order; among
    equal values the lower column wins (torch.topk leaves ties to the kernel, so an all-zero
    query or duplicate support rows would vote differently with another chunk size). Chunks
    that are merged in column order therefore select exactly what one pass over all would.
    kth (Q, 1): each row's k-th largest value, when the caller has it (else one more top-k)."""
    if kth is None:
        kth = values.topk(k, dim=1, sorted=False).values.min(1, keepdim=True).values
    greater = values > kth
    tied = values == kth
    needed = k - greater.sum(1, keepdim=True)
    chosen = greater | (tied & (tied.cumsum(1) <= needed))
    columns = chosen.nonzero()[:, 1].view(len(values), k)
    return values.gather(1, columns), columns


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
    pool row in order; labels (S,) int64, -1 for a row the set leaves out); queries (Q, D).
    Cosine similarity on L2-normalised features; the k most similar support images vote, each
    with weight exp(similarity / 0.07) ('weighted', DINO) or 1 ('majority'); k is capped by the
    set's size. Among equally similar support rows the lower row wins (`top_k_lowest_index_first`),
    so ties vote the same whatever the chunk sizes. Queries go in chunks; for each, the support
    rows go in blocks and a running top-k per set keeps the k best seen so far (the same k as
    one top-k over all of them).
    """
    import torch

    if vote not in ("weighted", "majority"):
        raise ValueError(f"vote={vote!r}; expected 'weighted' or 'majority'")
    sources = _sources(supports)
    sizes = [_size(pool, rows) for rows, _ in sources]
    # Support norms once (N floats) per source: similarities are scaled by them instead of
    # copying every support row into a normalised array.
    inverse_norms = [
        1.0
        / torch.cat(
            [_gather(pool, sources, [p]).norm(dim=1) for p in _pieces(s, size, support_chunk)]
        ).clamp_min(1e-12)
        for s, size in enumerate(sizes)
    ]
    left_out = [labels < 0 for _, labels in supports]
    keep = [min(k, int((~out).sum())) for out in left_out]
    any_left_out = [bool(out.any()) for out in left_out]
    scores: list[list[torch.Tensor]] = [[] for _ in supports]
    for query_start in range(0, len(queries), query_chunk):
        chunk = _l2_normalise(queries[query_start : query_start + query_chunk])
        best: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(supports)
        for pieces in _blocks(sizes, support_chunk):
            similarity = chunk @ _gather(pool, sources, pieces).T
            column = 0
            for source, start, stop in pieces:
                block = similarity[:, column : column + stop - start]
                block = block * inverse_norms[source][start:stop]
                column += stop - start
                for index in sources[source][1]:
                    candidates = block
                    if any_left_out[index]:
                        out = left_out[index][start:stop]
                        candidates = block.masked_fill(out, float("-inf"))
                    top_similarity, top_index = top_k_lowest_index_first(
                        candidates, min(keep[index], stop - start)
                    )
                    top_index += start
                    if best[index] is not None:  # earlier blocks hold lower indices: first
                        top_similarity = torch.cat([best[index][0], top_similarity], dim=1)
                        top_index = torch.cat([best[index][1], top_index], dim=1)
                        top_similarity, order = top_k_lowest_index_first(
                            top_similarity, min(keep[index], top_similarity.shape[1])
                        )
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


def _class_means(pool, sources, source, supports, n_classes, support_chunk):
    """Centres (S, D) and prototypes (S, K, D) of the sets reading one source, in two chunked
    passes shared by all of them.

    With c0 the mean of the source's rows and d = c - c0 a set's centre offset, a row's distance
    to the centre is |z - d| with z = x - c0, and |z - d|^2 = |z|^2 - 2 z.d + |d|^2: one product
    z @ d' per chunk gives every set's row norms (no cancellation, since d is small next to z),
    and one product z' @ W the sums of every set's normalised rows per class.
    """
    import torch

    rows, members = sources[source]
    size = _size(pool, rows)
    pieces = _pieces(source, size, support_chunk)
    labels = torch.stack([supports[i][1] for i in members], dim=1)  # (S_rows, sets)
    known = (labels >= 0).to(pool.dtype)
    total = torch.zeros(pool.shape[1], dtype=torch.float64, device=pool.device)
    known_sums = torch.zeros(pool.shape[1], len(members), dtype=torch.float64, device=pool.device)
    for piece in pieces:
        values = _gather(pool, sources, [piece])
        total += values.sum(0, dtype=torch.float64)
        known_sums += (values.T @ known[piece[1] : piece[2]]).double()
    reference = total / size
    centres = (known_sums / known.sum(0).double()).T  # (sets, D)
    offsets = (centres - reference).to(pool.dtype)
    reference = reference.to(pool.dtype)
    offset_norms = (offsets**2).sum(1)
    sums = torch.zeros(pool.shape[1], len(members) * n_classes, device=pool.device)
    weight_sums = torch.zeros(len(members) * n_classes, device=pool.device)
    one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), n_classes).to(pool.dtype)
    one_hot *= known[..., None]
    for piece in pieces:
        z = _gather(pool, sources, [piece]) - reference
        squared = (z * z).sum(1, keepdim=True) - 2 * (z @ offsets.T) + offset_norms
        inverse_norm = squared.clamp_min(1e-24).rsqrt()  # (rows, sets)
        weights = (one_hot[piece[1] : piece[2]] * inverse_norm[..., None]).flatten(1)
        sums += z.T @ weights
        weight_sums += weights.sum(0)
    sums = sums.T.view(len(members), n_classes, -1)
    weight_sums = weight_sums.view(len(members), n_classes, 1)
    counts = one_hot.sum(0)  # (sets, K)
    prototypes = (sums - weight_sums * offsets[:, None, :]) / counts.clamp_min(1)[..., None]
    return centres.to(pool.dtype), prototypes, counts > 0


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

    pool, supports, queries as in `knn_scores`. The queries are centred and normalised per set
    without copying them: with c the centre and p a prototype, |q - c|, (q - c).p and so the
    distances follow from q.c and q.p, one matrix product for all sets per query chunk. A class
    with no support image gets score 0.
    """
    import torch

    sources = _sources(supports)
    centres: list[torch.Tensor | None] = [None] * len(supports)
    prototypes: list[torch.Tensor | None] = [None] * len(supports)
    present: list[torch.Tensor | None] = [None] * len(supports)
    for source, (_, members) in enumerate(sources):
        source_centres, source_prototypes, source_present = _class_means(
            pool, sources, source, supports, n_classes, support_chunk
        )
        for position, index in enumerate(members):
            centres[index] = source_centres[position]
            prototypes[index] = source_prototypes[position]
            present[index] = source_present[position]
    # float64 from here: the distance comes from 1 - 2·cos + |p|², which cancels to ~0 for a
    # query next to a prototype, and its square root turns float32's 1e-7 there into 1e-4 (a
    # query equal to a one-image class's row was 1.6e-4 from it); in float64 it is ~1e-8.
    centres = [centre.double() for centre in centres]
    prototypes = [protos.double() for protos in prototypes]
    stacked = torch.cat([torch.stack(centres), torch.cat(prototypes)])  # (sets + sets*K, D)
    n_sets = len(supports)
    scores: list[list[torch.Tensor]] = [[] for _ in supports]
    for query_start in range(0, len(queries), query_chunk):
        chunk = queries[query_start : query_start + query_chunk].double()
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
            scores[i].append(torch.softmax(-distances, dim=1).to(queries.dtype))
    return [torch.cat(parts) for parts in scores]


def as_numpy(values: "torch.Tensor") -> np.ndarray:
    return values.detach().float().cpu().numpy()
