"""Asset checks: what must hold for every materialization, shown on each asset's "Checks" tab.

Most checks run inside the step of the asset they check: the asset declares ``check_specs=[<spec>]`` (the
specs below) and returns ``MaterializeResult(value=table, check_results=[<rule>(table, ...)])``, so a check
costs no step process of its own and sees the table in memory. Selecting an asset (UI,
``dagster asset materialize``, the ``cluster_dataset`` job, in-process ``materialize``) selects its checks
too. The two embedding checks are still standalone, partitioned ``@asset_check`` s (:func:`build_asset_checks`)
that read the stored Parquet through the IO manager, unless their asset declares
:func:`embeddings_check_spec`, their spec for folding them in the same way. The rules are plain functions returning ``AssetCheckResult`` so they
can be tested on crafted tables.

- ``image_embeddings`` / ``wordnet_noun_embeddings``: every embedding finite and unit-norm (error).
- ``text_space``: every non-empty semantic centre has at least one selected noun (warning).
- ``cluster_labels``: no empty cluster beyond what the balance loss allows (warning); the novel share of the
  images assigned since the fit below the refit threshold (warning).
- ``metrics``: every method has NMI / ACC / ARI whenever labels exist, and a balance always (error).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetsDefinition,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from tac_pipeline.common.messages import listed
from tac_pipeline.common.tables import column_matrix
from tac_pipeline.defs.assets.common import METHODS, report_indices
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.tac.validation import row_norms

SCORES = ("nmi", "acc", "ari")


def embeddings_check(table: pa.Table, column: str = "embedding") -> AssetCheckResult:
    """Every row finite and of unit L2 norm (the row rule of :mod:`tac_pipeline.tac.validation`)."""
    x = column_matrix(table, column, dtype=np.float32)
    rows = row_norms(x)
    off = np.flatnonzero(rows.off_unit)
    bad = np.flatnonzero(rows.non_finite)
    deviation = rows.max_deviation
    problems = []
    if len(bad):
        problems.append(f"{len(bad)} row(s) hold NaN or infinite values (rows {listed(bad)})")
    if len(off):
        problems.append(f"{len(off)} row(s) are not unit-norm (rows {listed(off)})")
    if not len(x):
        problems.append("no rows")
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{len(x)} rows, all finite and unit-norm",
        metadata={
            "rows": len(x),
            "width": int(x.shape[1]) if x.ndim == 2 else 0,
            "non_finite_rows": len(bad),
            "not_unit_norm_rows": len(off),
            "max_norm_deviation": deviation,
        },
    )


def nouns_per_center_check(text_space: pa.Table, semantic_centers: pa.Table) -> AssetCheckResult:
    """At least one selected noun for every semantic centre that holds images (a warning otherwise)."""
    sizes = dict(
        zip(semantic_centers["center"].to_pylist(), semantic_centers["size"].to_pylist(), strict=True)
    )
    with_nouns = set(text_space["center"].to_pylist())
    non_empty = sorted(c for c, s in sizes.items() if s > 0)
    missing = [c for c in non_empty if c not in with_nouns]
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{len(missing)} of {len(non_empty)} non-empty semantic centres received no noun "
            f"(centres {listed(np.array(missing))}): their images fall back on other centres' nouns"
            if missing
            else f"all {len(non_empty)} non-empty semantic centres have at least one noun"
        ),
        metadata={
            "non_empty_centers": len(non_empty),
            "centers_without_nouns": len(missing),
            "without_nouns": MetadataValue.json([int(c) for c in missing[:100]]),
            "nouns_selected": text_space.num_rows,
        },
    )


def allowed_empty_clusters(n_images: int, n_clusters: int) -> int:
    """Empty clusters the balance loss cannot prevent.

    L_bal maximises the entropy of the mean prediction, which is largest when every cluster is used; so a
    trained head leaves no cluster empty unless there are fewer images than clusters.
    """
    return max(0, n_clusters - n_images)


def empty_clusters_check(cluster_labels: pa.Table, n_clusters: int) -> AssetCheckResult:
    """No empty cluster (image head) beyond :func:`allowed_empty_clusters` (a warning otherwise)."""
    sizes = np.bincount(cluster_labels["cluster"].to_numpy(), minlength=n_clusters)
    empty = np.flatnonzero(sizes == 0)
    allowed = allowed_empty_clusters(cluster_labels.num_rows, n_clusters)
    p = sizes / max(sizes.sum(), 1)
    entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(n_clusters)) if n_clusters > 1 else 1.0
    passed = len(empty) <= allowed
    return AssetCheckResult(
        check_name=NO_EMPTY_CLUSTERS.name,
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{len(empty)} of {n_clusters} clusters are empty"
            + (f" ({allowed} allowed)" if allowed else "")
            + ("" if passed else f": clusters {listed(empty)}; the heads collapsed or K is too large")
        ),
        metadata={
            "n_clusters": n_clusters,
            "empty_clusters": len(empty),
            "allowed_empty": allowed,
            "smallest_cluster": int(sizes.min()),
            "largest_cluster": int(sizes.max()),
            "size_entropy": round(entropy, 4),  # 1: perfectly even sizes
        },
    )


def novel_share_check(cluster_labels: pa.Table, threshold: float) -> AssetCheckResult:
    """The share of novel images among those assigned since the fit stays below the refit policy's
    ``refit_novel_share`` (a warning otherwise: the next run refits under ``refit = "auto"``)."""
    novel = cluster_labels["novel"].to_numpy(zero_copy_only=False)
    assigned = cluster_labels["assigned"].to_numpy(zero_copy_only=False)
    share = float(novel[assigned].mean()) if assigned.any() else 0.0
    passed = share < threshold
    return AssetCheckResult(
        check_name=NOVEL_SHARE.name,
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{100 * share:.0f} % of the {int(assigned.sum())} images assigned since the fit are novel "
            f"(threshold {100 * threshold:.0f} %)"
            + ("" if passed else ': they fit no fitted cluster; the next run refits (refit = "auto")')
        ),
        metadata={
            "novel_images": int(novel.sum()),
            "assigned_since_fit": int(assigned.sum()),
            "novel_share_of_assigned": round(share, 4),
            "refit_novel_share": threshold,
        },
    )


def metrics_check(metrics: pa.Table, cluster_labels: pa.Table) -> AssetCheckResult:
    """Every method reported; NMI / ACC / ARI finite whenever the reported images carry labels."""
    report, _ = report_indices(cluster_labels)
    truth = cluster_labels["label"].take(pa.array(report, type=pa.int64()))
    unlabelled = truth.null_count
    labelled = len(report) > unlabelled
    methods = metrics["method"].to_pylist() if "method" in metrics.column_names else []
    problems = []
    missing_methods = [m for m in METHODS if m not in methods]
    if missing_methods:
        problems.append(f"methods missing: {', '.join(missing_methods)}")
    for name in (*SCORES, "cluster_size_ratio") if labelled else ("cluster_size_ratio",):
        if name not in metrics.column_names:
            problems.append(f"column {name} missing")
            continue
        values = np.asarray(metrics[name].to_pylist(), dtype=object)
        bad = [m for m, v in zip(methods, values, strict=False) if v is None or not np.isfinite(v)]
        if bad:
            problems.append(f"{name} missing for {', '.join(bad)}")
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(problems)
        or (
            "labels exist and every method has NMI / ACC / ARI and a balance"
            + (f" ({unlabelled} unlabelled image(s) not scored)" if unlabelled else "")
            if labelled
            else "no labels: every method has its cluster size balance"
        ),
        metadata={"labelled": labelled, "unlabelled": int(unlabelled), "methods": len(methods)},
    )


def check_spec(
    name: str, asset: str, description: str, *, partitioned: bool = True, blocking: bool = False
) -> AssetCheckSpec:
    """The spec of a check that runs inside its asset's step (partitioned like ``datasets`` by default).

    Partitioned checks are a preview feature of Dagster 1.13 (they work in the UI, the CLI and
    ``materialize``); its warning is silenced here and in :func:`build_asset_checks`, nowhere else.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(
            name,
            asset=asset,
            description=description,
            blocking=blocking,
            partitions_def=datasets_partitions if partitioned else None,
        )


EMBEDDINGS_CHECK = "embeddings_finite_and_unit_norm"
_EMBEDDINGS_DESCRIPTIONS = {
    "image_embeddings": "Every image embedding is finite and L2-normalised.",
    "wordnet_noun_embeddings": "Every noun embedding is finite and L2-normalised.",
}

NOUN_FOR_EVERY_CENTER = check_spec(
    "noun_for_every_center",
    "text_space",
    "At least one noun is selected for every semantic centre that holds images (warning).",
)
NO_EMPTY_CLUSTERS = check_spec(
    "no_empty_clusters",
    "cluster_labels",
    "No cluster is empty beyond what the balance loss allows (warning).",
)
NOVEL_SHARE = check_spec(
    "novel_share_below_refit_threshold",
    "cluster_labels",
    "The share of novel images among those assigned since the fit is below dataset.toml's refit_novel_share "
    "(warning).",
)
#: Not blocking: ``metrics`` is a leaf, so blocking would only fail the run (and ``make cluster``) after
#: the table is stored; a failed check shows red on the asset while the metrics stay readable.
METRICS_PRESENT = check_spec(
    "metrics_present",
    "metrics",
    "NMI / ACC / ARI for every method whenever labels exist; the size balance always.",
)


def embeddings_check_spec(asset: str) -> AssetCheckSpec:
    """The finite-and-unit-norm check of ``image_embeddings`` (partitioned) or ``wordnet_noun_embeddings``.

    Blocking: folded into its asset, a failed check (ERROR) fails that step after the table is stored and
    the failed check recorded, so no downstream step of the run computes on NaN or unnormalised vectors.
    It costs no extra step. (A standalone blocking check would put a step of its own in front of every
    downstream step, so the standalone checks of :func:`build_asset_checks` are not blocking.)
    """
    return check_spec(
        EMBEDDINGS_CHECK,
        asset,
        _EMBEDDINGS_DESCRIPTIONS[asset],
        partitioned=asset == "image_embeddings",
        blocking=True,
    )


def build_asset_checks(assets: Iterable[AssetsDefinition] = ()) -> list[AssetChecksDefinition]:
    """The standalone checks: each embedding asset's finite-and-unit-norm check, unless one of ``assets``
    declares it already (``check_specs=[embeddings_check_spec(name)]``: it then runs in the asset's step).

    Pass the graph's assets, so that folding a check into its asset (or not, as in a variant such as a
    sharded ``image_embeddings``) needs no change here. The checks of ``text_space``, ``cluster_labels`` and
    ``metrics`` always live in those assets' steps. Partitioned checks are a preview feature of Dagster 1.13;
    its warning is silenced here and in :func:`check_spec`.
    """
    declared = {key for a in assets for key in a.check_keys}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [c for c in _checks() if not set(c.check_keys) & declared]


def _checks() -> list[AssetChecksDefinition]:

    @asset_check(
        asset="image_embeddings",
        name=EMBEDDINGS_CHECK,
        partitions_def=datasets_partitions,
        description=_EMBEDDINGS_DESCRIPTIONS["image_embeddings"],
    )
    def image_embeddings_finite_and_unit_norm(image_embeddings: pa.Table) -> AssetCheckResult:
        return embeddings_check(image_embeddings)

    @asset_check(
        asset="wordnet_noun_embeddings",
        name=EMBEDDINGS_CHECK,
        description=_EMBEDDINGS_DESCRIPTIONS["wordnet_noun_embeddings"],
    )
    def noun_embeddings_finite_and_unit_norm(wordnet_noun_embeddings: pa.Table) -> AssetCheckResult:
        return embeddings_check(wordnet_noun_embeddings)

    return [image_embeddings_finite_and_unit_norm, noun_embeddings_finite_and_unit_norm]
