"""The whole fit: ``TAC.fit`` against a faithful re-statement of the authors' pipeline, on one planted set.

The authors' code (github.com/XLearning-SCU/2024-ICML-TAC) is four scripts run one after the other; restated
here step by step, on the same embeddings and device, in float32 (their scripts cast to half on the GPU):

1. ``filter_nouns.py`` -- ``faiss.Kmeans(d, k_c, spherical=True, niter=300, nredo=10)`` on the images
   (faiss's default subsample of 256 points per centre), each image's centre by a search, the centres as
   normalised member means;
2. the same script -- every noun's softmax over the centres, its best centre, and per centre the ``topK = 5``
   most confident nouns;
3. ``retrieve_text.py`` -- each image's counterpart: ``softmax(sim / 0.005) @ nouns``, normalised, in batches
   of 8,192;
4. ``data_utils.mine_nearest_neighbors`` -- a flat inner-product index searched for 51 neighbours, the first
   dropped, for the images and the counterparts;
5. ``train_head.py`` -- the DataLoader loop over ``NeighborsDataset``, one neighbour drawn per sample and
   modality (:func:`benchmarks.bench_heads.train_original`).

The engine's ``TAC.fit`` runs the same stages (plus its novelty thresholds). The two alternate ``--rounds``
times (3); the script prints each side's median, their ratio, the median seconds of every stage, the
iterations of each k-means restart, and both sides' ACC on the planted labels (they must agree). A second
part times the two k-means backends of the engine alone on the same images (the choice of ``backend="auto"``
on the CPU)::

    python -m benchmarks.bench_fit                  # N = 10,000, d = 512, K = 20, 82,115 nouns
    python -m benchmarks.bench_fit --n 2000 --nouns 5000 --rounds 1   # a quick look

Not a test: one run on a noisy machine proves no speed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

# The estimator imports what a fit needs (torch._dynamo for Adam included) when it is imported, as a user's
# process does; the re-statement below gets the same warm process.
from tac_pipeline.tac import TAC, HeadTrainingConfig, cluster_metrics, predict_proba, semantic_center_count

#: The authors' noun vocabulary: 82,115 WordNet nouns (``nouns_embedding_ensemble.npy``).
AUTHORS_NOUNS = 82_115
STAGES = ("centers", "nouns", "counterparts", "knn", "heads")


def planted(n: int, d: int, k: int, m: int, seed: int = 0):
    """``n`` unit image vectors of ``k`` classes (planted centres plus noise), their labels, and ``m`` unit
    noun vectors: three near each class centre, the rest random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    labels = rng.integers(0, k, size=n)
    images = centres[labels] + 1.2 * rng.normal(size=(n, d))
    near = np.repeat(centres, 3, axis=0) + 0.6 * rng.normal(size=(3 * k, d))
    nouns = np.concatenate([near, rng.normal(size=(m - 3 * k, d))])
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(images), labels, unit(nouns)


def authors_fit(
    images: np.ndarray, nouns: np.ndarray, k: int, n_centers: int, seed: int
) -> tuple[dict, object]:
    """The authors' four scripts on ``images`` and ``nouns`` (module docstring); the seconds of each stage and
    the trained image head."""
    import faiss
    import torch.nn.functional as F

    from benchmarks.bench_heads import train_original

    seconds = {}
    start = time.perf_counter()
    # 1. filter_nouns.kmeans: faiss defaults otherwise (256 points per centre, at least 39).
    km = faiss.Kmeans(
        images.shape[1], n_centers, spherical=True, niter=300, nredo=10, seed=seed, verbose=False
    )
    km.train(images)
    _, assigned = km.index.search(images, 1)
    assigned = assigned.reshape(-1)
    v = torch.from_numpy(images)
    centers = torch.zeros((n_centers, images.shape[1]))
    for c in range(n_centers):
        centers[c] = v[torch.from_numpy(assigned == c)].mean(dim=0)
    centers = F.normalize(centers, dim=1)
    seconds["centers"] = time.perf_counter() - start

    # 2. filter_nouns: softmax of every noun over the centres, top 5 nouns of each centre.
    start = time.perf_counter()
    t_all = torch.from_numpy(nouns)
    softmax_nouns = torch.softmax(centers @ t_all.T, dim=0)
    class_pred = torch.argmax(softmax_nouns, dim=0)
    selected = torch.zeros_like(class_pred, dtype=torch.bool)
    for c in range(n_centers):
        if (class_pred == c).sum() == 0:
            continue
        members = torch.where(class_pred == c)[0]
        confidence = softmax_nouns[:, members].max(dim=0)[0]
        selected[members[torch.argsort(confidence, descending=True)[:5]]] = True
    text_space = t_all[selected]
    seconds["nouns"] = time.perf_counter() - start

    # 3. retrieve_text.py: batches of 8,192 images.
    start = time.perf_counter()
    parts = []
    for first in range(0, len(v), 8192):
        weights = torch.softmax(v[first : first + 8192] @ text_space.T / 0.005, dim=1)
        parts.append(weights @ text_space)
    counterparts = F.normalize(torch.cat(parts), dim=1).numpy()
    seconds["counterparts"] = time.perf_counter() - start

    # 4. mine_nearest_neighbors, topk = 50, for both modalities.
    start = time.perf_counter()

    def mine(features: np.ndarray) -> np.ndarray:
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features)
        _, found = index.search(features, 51)
        return found[:, 1:]

    knn_text, knn_image = mine(counterparts), mine(images)
    seconds["knn"] = time.perf_counter() - start

    # 5. train_head.py.
    start = time.perf_counter()
    cfg = HeadTrainingConfig.for_clusters(k)
    image_head, _ = train_original(
        images, counterparts, knn_image, knn_text, k, cfg, torch.device("cpu"), seed
    )
    seconds["heads"] = time.perf_counter() - start
    return seconds, image_head


def engine_fit(images: np.ndarray, nouns: np.ndarray, k: int, seed: int) -> tuple[dict, TAC]:
    model = TAC(n_clusters=k, seed=seed, device="cpu").fit(images, nouns)
    stages = dict(model.stage_seconds_)
    seconds = {stage: stages.pop(stage) for stage in STAGES}
    seconds["other"] = sum(stages.values())  # choose_k (nothing with K given) and the novelty thresholds
    return seconds, model


def kmeans_backends(images: np.ndarray, n_centers: int, rounds: int) -> None:
    from tac_pipeline.tac import spherical_kmeans

    times = {"faiss": [], "torch": []}
    for _ in range(rounds):
        for backend in times:
            start = time.perf_counter()
            centers, labels, n_iter = spherical_kmeans(
                images, n_centers, device="cpu", backend=backend, return_n_iter=True
            )
            times[backend].append(time.perf_counter() - start)
            objective = float((images * centers[labels]).sum())
            if len(times[backend]) == 1:
                print(f"  {backend}: iterations per restart {n_iter.tolist()}, objective {objective:.1f}")
    for backend, seconds in times.items():
        print(f"  {backend}: median {statistics.median(seconds):.2f} s of {[round(s, 2) for s in seconds]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--nouns", type=int, default=AUTHORS_NOUNS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images, labels, nouns = planted(args.n, args.d, args.k, args.nouns, args.seed)
    n_centers = semantic_center_count(args.n, args.k)
    print(
        f"planted set: N={args.n} d={args.d} K={args.k} nouns={args.nouns} semantic centres={n_centers}; "
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    # Warm-up, untimed: faiss's and torch's thread pools and first allocations land on neither side.
    small = slice(0, min(args.n, 2000))
    engine_fit(images[small], nouns[:2000], args.k, args.seed)
    authors_fit(
        images[small], nouns[:2000], args.k, semantic_center_count(len(images[small]), args.k), args.seed
    )

    runs = {"engine": [], "authors": []}
    accuracy = {}
    iterations = None
    for _ in range(args.rounds):
        start = time.perf_counter()
        stages, model = engine_fit(images, nouns, args.k, args.seed)
        runs["engine"].append((time.perf_counter() - start, stages))
        iterations = model.center_n_iter_.tolist()
        accuracy["engine"] = cluster_metrics(labels, model.labels_)["acc"]
        start = time.perf_counter()
        stages, head = authors_fit(images, nouns, args.k, n_centers, args.seed)
        runs["authors"].append((time.perf_counter() - start, stages))
        accuracy["authors"] = cluster_metrics(labels, predict_proba(head, images).argmax(axis=1))["acc"]

    median = {side: statistics.median(total for total, _ in done) for side, done in runs.items()}
    print(f"\n{'stage':<14}{'engine s':>10}{'authors s':>11}")
    for stage in (*STAGES, "other"):
        ours = statistics.median(s.get(stage, 0.0) for _, s in runs["engine"])
        theirs = statistics.median(s.get(stage, 0.0) for _, s in runs["authors"])
        print(f"{stage:<14}{ours:>10.2f}{theirs:>11.2f}")
    print(f"{'total':<14}{median['engine']:>10.2f}{median['authors']:>11.2f}")
    print(
        f"\nengine median {median['engine']:.2f} s of {[round(t, 2) for t, _ in runs['engine']]}; "
        f"authors median {median['authors']:.2f} s of {[round(t, 2) for t, _ in runs['authors']]}"
    )
    print(f"authors / engine: {median['authors'] / median['engine']:.2f}x")
    print(f"engine's semantic-centre k-means: iterations per restart {iterations} (cap 300)")
    print(f"ACC on the planted labels: engine {accuracy['engine']:.1f}, authors {accuracy['authors']:.1f}")
    print(
        f"\nk-means of the {n_centers} semantic centres alone, best of 10, each backend ({args.rounds} rounds):"
    )
    kmeans_backends(images, n_centers, args.rounds)


if __name__ == "__main__":
    main()
