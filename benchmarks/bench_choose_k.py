"""Choosing K: the K each criterion picks on planted sets with known K, per seed.

Sets (tac_pipeline_tests/test_tac/planted_data.py): ``plain`` (10 classes, each its own image direction),
``pairs`` (10 classes in 5 look-alike pairs whose nouns differ), ``triples`` (15 classes in 5 look-alike
triples). Every criterion cuts one Ward tree of its features at every K of the default range and keeps the
K of best cosine silhouette; the text space is built as ``TAC(n_clusters="auto")`` builds it.

    python -m benchmarks.bench_choose_k                  # seeds 0-4, every criterion
    python -m benchmarks.bench_choose_k --nmi            # also NMI of TAC auto vs TAC told the true K
    python -m benchmarks.bench_choose_k --timing 60000   # TAC.fit auto vs told K on 60,000 x 512

Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tac_pipeline.tac import TAC, cluster_metrics, retrieve_counterparts, select_text_space, spherical_kmeans
from tac_pipeline.tac.choose_k import CRITERIA, choose_n_clusters
from tac_pipeline.tac.params import auto_k_range
from tac_pipeline.tac.text_space import semantic_center_count
from tac_pipeline_tests.test_tac.planted_data import K_SETS, planted_groups

#: Head training scaled to ~1,000 images, as test_planted.py does.
SMALL = {"n_neighbors": 10, "kmeans_iter": 100, "epochs": 30, "batch_size": 64}


def counterparts_for_auto(v: np.ndarray, nouns: np.ndarray, seed: int) -> np.ndarray:
    k_max = auto_k_range(len(v))[1]
    centers, _ = spherical_kmeans(v, semantic_center_count(len(v), k_max), n_iter=100, seed=seed)
    space = select_text_space(nouns, centers)
    return retrieve_counterparts(v, nouns[space.noun_indices])


def sweep_table(seeds: list[int], criteria: list[str]) -> None:
    print("set      truth  criterion      " + "  ".join(f"s{s:<3}" for s in seeds) + "  seconds")
    for name, kwargs in K_SETS.items():
        for criterion in criteria:
            chosen, seconds = [], 0.0
            for seed in seeds:
                v, nouns, y = planted_groups(seed, **kwargs)
                t = counterparts_for_auto(v, nouns, seed)
                sweep = choose_n_clusters(v, t, auto_k_range(len(v)), criterion=criterion, seed=seed)
                chosen.append(sweep.chosen)
                seconds += sweep.seconds
            truth = len(np.unique(y))
            print(
                f"{name:<8} {truth:>5}  {criterion:<13} "
                + "  ".join(f"{k:<4}" for k in chosen)
                + f"  {seconds / len(seeds):.2f}"
            )


def nmi_table(seeds: list[int]) -> None:
    print("set      seed  chosen  truth  NMI auto  NMI true K  difference")
    for name, kwargs in K_SETS.items():
        for seed in seeds:
            v, nouns, y = planted_groups(seed, **kwargs)
            truth = len(np.unique(y))
            auto = TAC("auto", seed=0, device="cpu", **SMALL).fit(v, nouns)
            told = TAC(truth, seed=0, device="cpu", **SMALL).fit(v, nouns)
            a, b = cluster_metrics(y, auto.labels_)["nmi"], cluster_metrics(y, told.labels_)["nmi"]
            print(
                f"{name:<8} {seed:>4}  {auto.n_clusters_:>6}  {truth:>5}  {a:8.1f}  {b:10.1f}  {a - b:+10.1f}"
            )


def timing(n: int, dim: int = 512, n_nouns: int = 20_000) -> None:
    """``TAC.fit`` told the true K against ``TAC("auto").fit`` on the ``pairs`` set grown to ``n`` images of
    ``dim`` (10 classes in 5 look-alike pairs, the tests' noise norm), its nouns padded with random ones to
    ``n_nouns``."""
    noise = 0.08 * (32 / dim) ** 0.5  # the noise norm of the 32-wide sets of the tests
    v, nouns, y = planted_groups(0, **{**K_SETS["pairs"], "n_per": n // 10, "dim": dim, "noise": noise})
    rng = np.random.default_rng(1)
    pad = rng.standard_normal((n_nouns - len(nouns), dim)).astype(np.float32)
    nouns = np.concatenate([nouns, pad / np.linalg.norm(pad, axis=1, keepdims=True)]).astype(np.float32)
    v = v.astype(np.float32)
    truth = len(np.unique(y))
    seconds = {}
    for label, n_clusters in ((f"K = {truth}", truth), ("auto", "auto")):
        start = time.perf_counter()
        fitted = TAC(n_clusters, seed=0, device="cpu").fit(v, nouns)
        seconds[label] = time.perf_counter() - start
        nmi = cluster_metrics(y, fitted.labels_)["nmi"]
        sweep = fitted.k_sweep_
        extra = (
            f"; sweep {sweep.seconds:.2f} s on {sweep.n_samples:,} rows, chose K = {fitted.n_clusters_}"
            if sweep
            else ""
        )
        print(
            f"TAC.fit {label:<7} {len(v):,} x {dim}, {len(nouns):,} nouns: {seconds[label]:6.1f} s, NMI {nmi:5.1f}{extra}"
        )
    fixed, auto = seconds[f"K = {truth}"], seconds["auto"]
    print(f"auto / told K: {auto / fixed:.2f} ({auto - fixed:+.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    parser.add_argument("--nmi", action="store_true")
    parser.add_argument("--timing", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.timing:
        timing(args.timing)
        return
    seeds = list(range(args.seeds))
    sweep_table(seeds, args.criteria)
    if args.nmi:
        nmi_table(seeds)


if __name__ == "__main__":
    main()
