"""Vector search for TAC: spherical k-means (semantic centres, baseline) and inner-product kNN.

Two interchangeable backends, chosen by ``backend="auto"``:

* ``faiss`` -- ``faiss.Kmeans`` / ``IndexFlatIP``, on the GPU when faiss was built with GPU support
  and the device is CUDA, otherwise on the CPU (the default on CPU).
* ``torch`` -- blockwise matrix products on ``device`` (Lloyd iterations, top-k). Picked on CUDA
  when faiss has no GPU support, so a GPU without faiss-gpu still runs these steps fast. It can be
  forced on the CPU (tests use this to check that both backends agree).

Both operate on L2-normalised rows, so "distance" is the cosine ``sim`` of the spec throughout.

kNN is exact (spec §6) unless the rows are many: ``knn_inner_product(method="auto")`` switches to an
approximate faiss inverted-file index above ``APPROXIMATE_KNN_ABOVE`` rows on the CPU (see
:func:`pick_knn_method`; measurements in docs/SCALING.md). The torch backend is always exact.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from tac_pipeline.common.devices import ArrayLike, DeviceLike, as_tensor, resolve_device

from .params import DEFAULTS
from .validation import validate_embeddings

try:  # faiss is the CPU workhorse; a GPU machine without it runs everything through the torch path
    import faiss
except ImportError:  # pragma: no cover - exercised on machines without faiss
    faiss = None

Backend = Literal["auto", "faiss", "torch"]

# Elements of one (rows x columns) similarity block: 2**26 float32 = 256 MiB keeps blockwise
# products well inside any GPU's memory while staying large enough to saturate it.
_BLOCK_ELEMENTS = 2**26


def faiss_has_gpu() -> bool:
    """True when the installed faiss was built with GPU support and sees at least one GPU."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _pick_backend(backend: Backend, device: torch.device) -> str:
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if backend == "faiss" and faiss is None:
        raise ValueError("backend='faiss' needs the faiss package: pip install faiss-cpu (or faiss-gpu)")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "faiss" if faiss_has_gpu() else "torch"
    return "faiss" if faiss is not None else "torch"


def _rows_per_block(n_cols: int, block_size: int | None) -> int:
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return block_size
    return max(1, _BLOCK_ELEMENTS // max(n_cols, 1))


# --------------------------------------------------------------------------------------------
# Spherical k-means
# --------------------------------------------------------------------------------------------


def _assign(x: torch.Tensor, centers: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre by inner product for every row of x: (assignments (N,), best sim (N,))."""
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    best = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        sim, idx = (x[start:stop] @ centers.T).max(dim=1)
        best[start:stop] = sim
        labels[start:stop] = idx
    return labels, best


def _member_means(
    x: torch.Tensor, labels: torch.Tensor, n_clusters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(n_clusters, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=n_clusters)
    return sums, counts


def _normalise(c: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(c, dim=1)


def _torch_lloyd(
    x: torch.Tensor,
    n_clusters: int,
    n_iter: int,
    n_restarts: int,
    seed: int,
    rows: int,
    *,
    stop_early: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Best-of-restarts spherical Lloyd on x's device: the trained centres (k, d) and the iterations each
    restart ran.

    A restart stops at its fixed point: once an iteration leaves every assignment as the previous one did (and
    no centre is empty), its centres are the means of the same members again, so each further iteration up to
    ``n_iter`` would return exactly the same centres. ``stop_early=False`` runs all ``n_iter`` (the tests
    compare the two). Host synchronisation once per iteration (the convergence test) is fine here: k-means
    runs a few hundred iterations in total, unlike the head training loop.
    """
    n = x.shape[0]
    gen = torch.Generator(device=x.device)
    best_centers, best_obj, iterations = None, -math.inf, []
    for restart in range(n_restarts):
        gen.manual_seed(seed + restart)
        # Random distinct points as initial centres, like faiss's default initialisation.
        centers = x[torch.randperm(n, generator=gen, device=x.device)[:n_clusters]].clone()
        previous, done = None, 0
        for done in range(1, n_iter + 1):  # noqa: B007 - the count is the result
            labels, sim = _assign(x, centers, rows)
            sums, counts = _member_means(x, labels, n_clusters)
            empty = counts == 0
            n_empty = int(empty.sum())
            if n_empty:
                # Re-seed empty clusters with the points their current centre serves worst, so
                # every centre keeps a direction (faiss instead splits the largest clusters).
                sums[empty] = x[torch.topk(sim, n_empty, largest=False).indices]
            elif stop_early and previous is not None and torch.equal(labels, previous):
                break  # assignments stable -> centres are a fixed point; more iterations change nothing
            centers = _normalise(sums)
            previous = labels
        iterations.append(done)
        _, sim = _assign(x, centers, rows)
        objective = float(sim.double().sum())
        if objective > best_obj:
            best_obj, best_centers = objective, centers
    assert best_centers is not None
    return best_centers, iterations


#: faiss's seed step between restarts (``Clustering::train``): restart r starts from seed + 1 + r * this.
_FAISS_REDO_STEP = 15486557


def _faiss_kmeans(
    x: np.ndarray,
    n_clusters: int,
    n_iter: int,
    n_restarts: int,
    seed: int,
    use_gpu: bool,
    max_points_per_centroid: int | None,
    *,
    stop_early: bool = True,
) -> tuple[np.ndarray, list[int]]:
    """Best-of-restarts spherical k-means with faiss: the trained centres (k, d) and the iterations each
    restart ran.

    faiss stops a restart when an iteration leaves the objective exactly unchanged (``early_stop_threshold``
    0, its default); ``stop_early=False`` runs all ``n_iter``. The restarts run one at a time with the seeds
    faiss's own ``nredo`` loop gives them, and the best objective wins as there (the first on a tie), so the
    centres are those of ``nredo=n_restarts``; run separately, each restart's iteration count is known.
    """
    n, d = x.shape
    if max_points_per_centroid is None:
        # faiss subsamples to 256 points per centre by default; the spec clusters every image.
        max_points_per_centroid = -(-n // n_clusters) + 1
    best, best_obj, iterations = None, -math.inf, []
    for restart in range(n_restarts):
        km = faiss.Kmeans(
            d,
            n_clusters,
            niter=n_iter,
            nredo=1,
            spherical=True,
            seed=seed + restart * _FAISS_REDO_STEP,
            verbose=False,
            gpu=bool(use_gpu),
            # Only silences faiss's "please provide at least 39*k points" warning; no effect on the result.
            min_points_per_centroid=1,
            max_points_per_centroid=int(max_points_per_centroid),
            # A relative change of the objective <= this ends a restart; -1 never does.
            early_stop_threshold=0.0 if stop_early else -1.0,
        )
        km.train(x)
        iterations.append(len(km.iteration_stats))
        objective = float(km.obj[-1])
        if objective > best_obj:
            best_obj, best = objective, np.asarray(km.centroids, dtype=np.float32)
    assert best is not None
    return best, iterations


def spherical_kmeans(
    x: ArrayLike,
    n_clusters: int,
    *,
    n_iter: int = DEFAULTS.kmeans_iter,
    n_restarts: int = DEFAULTS.kmeans_restarts,
    seed: int = DEFAULTS.seed,
    device: DeviceLike = None,
    backend: Backend = "auto",
    max_points_per_centroid: int | None = None,
    block_size: int | None = None,
    return_n_iter: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) on the rows of x, best of ``n_restarts`` by total similarity.

    Args:
        x: (N, d) embeddings (normalised here; non-finite or zero rows raise ValueError).
        n_clusters: k, 1 <= k <= N.
        n_iter: Lloyd iterations per restart at most (spec: 300). A restart stops at its fixed point, where
            the remaining iterations could not move a centre: the torch backend when no assignment changed,
            faiss when the objective did not change.
        n_restarts: independent initialisations, the best objective is kept (spec: 10 for the
            semantic centres, 20 for the training-free baseline).
        seed: fixes the initialisations; deterministic on CPU.
        device: where the torch backend (or faiss-gpu) runs; None or "auto" = CUDA when available.
        backend: "auto" | "faiss" | "torch" (see module docstring).
        max_points_per_centroid: faiss backend only; None uses every point (faiss's own default
            would subsample to 256 per centre, as the original scripts did implicitly).
        block_size: rows per similarity block for the torch backend; None sizes it automatically.
        return_n_iter: also return the iterations each restart ran, as scikit-learn's ``k_means`` does.

    Returns:
        centers: (k, d) float32 numpy, each the L2-normalised mean of its members (spec §3),
            recomputed from the final assignments; a centre left without members keeps its
            trained direction.
        assignments: (N,) int64 numpy, index of each row's most similar trained centre.
        n_iter: with ``return_n_iter``, (n_restarts,) int64 numpy, the iterations of each restart.
    """
    if not isinstance(n_clusters, int | np.integer) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    dev = resolve_device(device)
    xt = as_tensor(validate_embeddings(as_tensor(x, dev), "k-means input"), dev)
    n, _ = xt.shape
    if n_clusters > n:
        raise ValueError(f"cannot form {n_clusters} clusters from {n} points (more centres than points)")
    if n_iter < 1 or n_restarts < 1:
        raise ValueError(f"n_iter and n_restarts must be >= 1, got {n_iter} and {n_restarts}")
    rows = _rows_per_block(n_clusters, block_size)

    if _pick_backend(backend, dev) == "faiss":
        trained, iterations = _faiss_kmeans(
            xt.cpu().numpy(),
            int(n_clusters),
            n_iter,
            n_restarts,
            seed,
            use_gpu=dev.type == "cuda" and faiss_has_gpu(),
            max_points_per_centroid=max_points_per_centroid,
        )
        trained_t = _normalise(torch.from_numpy(trained).to(dev))
    else:
        trained_t, iterations = _torch_lloyd(xt, int(n_clusters), n_iter, n_restarts, seed, rows)

    labels, _ = _assign(xt, trained_t, rows)
    sums, counts = _member_means(xt, labels, int(n_clusters))
    # Spec §3: centre = mean of its members, then normalised. Empty ones keep the trained centre.
    centers = torch.where((counts > 0).unsqueeze(1), _normalise(sums), trained_t)
    result = centers.cpu().numpy().astype(np.float32), labels.cpu().numpy().astype(np.int64)
    return (*result, np.asarray(iterations, dtype=np.int64)) if return_n_iter else result


def assign_to_centers(
    x: ArrayLike, centers: ArrayLike, *, device: DeviceLike = None, block_size: int | None = None
) -> np.ndarray:
    """Index of the most similar centre (cosine) for every row of x.

    Args:
        x: (N, d) embeddings.  centers: (k, d) centres, e.g. from :func:`spherical_kmeans`.

    Returns:
        (N,) int64 numpy. Extends a clustering fitted on one split to other rows.
    """
    dev = resolve_device(device)
    xt = as_tensor(validate_embeddings(as_tensor(x, dev), "embeddings"), dev)
    ct = as_tensor(validate_embeddings(as_tensor(centers, dev), "centres"), dev)
    if xt.shape[1] != ct.shape[1]:
        raise ValueError(f"embeddings are {xt.shape[1]} wide but centres are {ct.shape[1]} wide")
    labels, _ = _assign(xt, ct, _rows_per_block(ct.shape[0], block_size))
    return labels.cpu().numpy()


# --------------------------------------------------------------------------------------------
# Inner-product kNN: exact, or approximate through a faiss inverted-file index
# --------------------------------------------------------------------------------------------

KnnMethod = Literal["auto", "exact", "approximate"]

# ``method="auto"`` switches to the approximate search above this many rows, and only on the CPU with
# faiss. Measured on a (busy) 2-core CPU, d = 512 (docs/SCALING.md): exact search grows as N^2 (2 minutes
# per modality at 100,000, so ~8 at 200,000 and ~5.6 hours projected for ImageNet's 1.28 M), the IVF
# search below as N^1.5 (~1 hour projected at 1.28 M, recall@50 0.92-0.99 measured). Every dataset of the
# paper but ImageNet-1K (N <= 50,000) stays exact, as the spec has it. On a GPU exact search of 1.28 M
# rows is about a minute per modality (a FLOP projection), so ``auto`` stays exact there.
APPROXIMATE_KNN_ABOVE = 200_000
# Inverted lists: about 4 sqrt(N) cells (faiss's usual 4-16 sqrt(N)), at least 39 rows per cell.
IVF_LISTS_PER_SQRT_N = 4
IVF_MIN_ROWS_PER_LIST = 39
# Rows sampled (seeded) to train the cells: 64 per cell, at most N.
IVF_TRAINING_ROWS_PER_LIST = 64
# Cells scanned per query. Chosen from the recall measured in docs/SCALING.md; at most nlist.
APPROXIMATE_KNN_NPROBE = 64
# Queries per search call, taken in cell order (bounds the per-call result buffers).
_QUERY_CHUNK = 65_536


def ivf_list_count(n: int) -> int:
    """Number of inverted lists (cells) of the approximate index for n rows: ~4 sqrt(n), >= 39 rows each."""
    return int(max(1, min(round(IVF_LISTS_PER_SQRT_N * math.sqrt(n)), n // IVF_MIN_ROWS_PER_LIST)))


def pick_knn_method(
    n: int, method: KnnMethod = "auto", *, device: DeviceLike = None, backend: Backend = "auto"
) -> str:
    """Which search :func:`knn_inner_product` runs for n rows: ``"exact"`` or ``"approximate"``.

    ``"auto"`` is approximate only with the faiss backend on the CPU and n > ``APPROXIMATE_KNN_ABOVE``;
    the torch backend (a machine without faiss, or a GPU without faiss-gpu) is always exact.
    ``"approximate"`` needs faiss (it runs faiss's CPU index, or its GPU index with faiss-gpu on CUDA)
    and is refused with ``backend="torch"``.
    """
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approximate', got {method!r}")
    dev = resolve_device(device)
    chosen = _pick_backend(backend, dev)
    if method == "approximate":
        if faiss is None:
            raise ValueError(
                "method='approximate' needs the faiss package: pip install faiss-cpu (or faiss-gpu)"
            )
        if backend == "torch":
            raise ValueError("method='approximate' runs a faiss index; the torch backend is exact only")
        return "approximate"
    if method == "auto" and chosen == "faiss" and dev.type == "cpu" and n > APPROXIMATE_KNN_ABOVE:
        return "approximate"
    return "exact"


def drop_self(indices: np.ndarray, k: int) -> np.ndarray:
    """From (N, k+1) neighbour lists, drop each row's own index wherever it appears.

    Duplicated embeddings tie with the query, so the query is not necessarily the first hit
    (or, with more than k duplicates, not a hit at all -- then the last entry goes).
    Returns (N, k) int64 with the remaining neighbours in their original order.
    """
    is_self = indices == np.arange(indices.shape[0])[:, None]
    # Stable sort on the boolean mask moves self (True) behind the others, order otherwise kept.
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(indices, order, axis=1).astype(np.int64)


def _faiss_ivf_search(
    xs: np.ndarray, n_results: int, nlist: int, nprobe: int, seed: int, gpu: int | None
) -> np.ndarray:
    """Approximate (N, n_results) inner-product neighbours of every row of xs among the rows of xs.

    An ``IndexIVFFlat``: ``nlist`` cells from spherical k-means on a seeded sample, vectors stored
    uncompressed (similarities are exact, only cells left unscanned can lose a neighbour). Each row is
    stored in its most similar cell and that cell is its first probe, so a query always scans its own
    cell. Queries run in cell order (neighbouring queries scan the same lists, ~2x faster on a CPU than
    input order; results identical). Rows whose ``nprobe`` cells hold fewer than ``n_results`` vectors
    are searched exactly instead.
    """
    n, d = xs.shape
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # only silences faiss's "provide at least 39*k points" note
    index.cp.max_points_per_centroid = IVF_TRAINING_ROWS_PER_LIST
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, IVF_TRAINING_ROWS_PER_LIST * nlist), replace=False))
    index.train(xs[sample])
    coarse_sim, coarse = index.quantizer.search(xs, nprobe)  # (N, nprobe) cells by decreasing sim
    cells = np.ascontiguousarray(coarse[:, 0], dtype=np.int64)
    index.add_core(n, faiss.swig_ptr(xs), None, faiss.swig_ptr(cells))
    index.nprobe = nprobe
    if gpu is not None:  # pragma: no cover - needs faiss-gpu
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    order = np.argsort(cells, kind="stable")
    found = np.empty((n, n_results), dtype=np.int64)
    for start in range(0, n, _QUERY_CHUNK):
        rows = order[start : start + _QUERY_CHUNK]
        if gpu is None:
            _, found[rows] = index.search_preassigned(xs[rows], n_results, coarse[rows], coarse_sim[rows])
        else:  # pragma: no cover
            _, found[rows] = index.search(xs[rows], n_results)
    short = np.flatnonzero((found < 0).any(axis=1))
    if short.size:  # too few vectors in the scanned cells: exact search for these rows
        _, found[short] = faiss.knn(xs[short], xs, n_results, metric=faiss.METRIC_INNER_PRODUCT)
    return found


def knn_inner_product(
    x: ArrayLike,
    k: int,
    *,
    exclude_self: bool = True,
    device: DeviceLike = None,
    backend: Backend = "auto",
    block_size: int | None = None,
    method: KnnMethod = "auto",
    nprobe: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The k nearest neighbours of every row of x among the rows of x, by cosine similarity.

    Exact by default (spec §6); approximate (a faiss inverted-file index) for large N, see ``method``.

    Args:
        x: (N, d) embeddings (normalised here).
        k: neighbours per row; at most N-1 with ``exclude_self`` (N otherwise).
        exclude_self: leave each row's own index out of its list (by index, so duplicates of the
            row are still returned as neighbours). Both methods search k+1 and drop the row itself
            wherever it appears (or the last hit when more than k duplicates crowd it out).
        device, backend, block_size: as in :func:`spherical_kmeans`; ``block_size`` is the number
            of query rows per (rows x N) similarity block in the torch backend.
        method: ``"exact"`` -- every pair is compared (faiss ``IndexFlatIP`` or blockwise torch
            products), O(N^2 d). ``"approximate"`` -- faiss ``IndexIVFFlat``: the rows are split into
            ``ivf_list_count(N)`` ~ 4 sqrt(N) cells by spherical k-means on a seeded sample, and each
            row's neighbours are looked for in its ``nprobe`` most similar cells only, O(N^1.5 d);
            similarities of the returned neighbours are exact, a neighbour in an unscanned cell is
            missed (recall@50 measured in docs/SCALING.md). Needs faiss. ``"auto"`` (default) --
            approximate when :func:`pick_knn_method` says so (faiss on the CPU and
            N > ``APPROXIMATE_KNN_ABOVE``), else exact. The torch backend is always exact.
        nprobe: cells scanned per query by the approximate search (default
            ``APPROXIMATE_KNN_NPROBE``, capped at the number of cells); more is slower and closer to
            exact. Ignored by the exact search.
        seed: fixes the approximate search's training sample and k-means (deterministic on CPU).

    Returns:
        (N, k) int64 numpy, neighbours by decreasing similarity.
    """
    dev = resolve_device(device)
    xt = as_tensor(validate_embeddings(as_tensor(x, dev), "kNN input"), dev)
    n, d = xt.shape
    limit = n - 1 if exclude_self else n
    if not 1 <= k <= limit:
        raise ValueError(f"k must be between 1 and {limit} for {n} points, got {k}")
    if nprobe is not None and nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    n_results = k + 1 if exclude_self else k

    if pick_knn_method(n, method, device=dev, backend=backend) == "approximate":
        nlist = ivf_list_count(n)
        probes = min(nlist, nprobe or APPROXIMATE_KNN_NPROBE)
        gpu = (dev.index or 0) if dev.type == "cuda" and faiss_has_gpu() else None
        xs = np.ascontiguousarray(xt.cpu().numpy())
        found = _faiss_ivf_search(xs, n_results, nlist, probes, seed, gpu)
        return drop_self(found, k) if exclude_self else found

    if _pick_backend(backend, dev) == "faiss":
        xs = np.ascontiguousarray(xt.cpu().numpy())
        index = faiss.IndexFlatIP(d)
        if dev.type == "cuda" and faiss_has_gpu():
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, dev.index or 0, index)
        index.add(xs)
        _, found = index.search(xs, n_results)
        return drop_self(found, k) if exclude_self else found.astype(np.int64)

    rows = _rows_per_block(n, block_size)
    out = torch.empty(n, k, dtype=torch.int64, device=dev)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        sim = xt[start:stop] @ xt.T
        if exclude_self:
            local = torch.arange(stop - start, device=dev)
            sim[local, local + start] = -math.inf  # the query itself, by index
        out[start:stop] = torch.topk(sim, k, dim=1, largest=True, sorted=True).indices
    return out.cpu().numpy()
