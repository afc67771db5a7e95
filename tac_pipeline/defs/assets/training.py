"""Training stage: ``knn_graphs`` → ``trained_heads`` (docs/METHOD.md §6–§7)."""

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from dagster import AssetExecutionContext, Config, MetadataValue, ResourceParam
from pydantic import Field

from tac_pipeline import tac
from tac_pipeline.common.tables import column_matrix, index_array
from tac_pipeline.defs.assets import figures
from tac_pipeline.defs.assets.common import (
    dataset_asset,
    dataset_run,
    embeddings,
    fit_indices,
    report_indices,
)
from tac_pipeline.defs.io_managers import StoreIOManager
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.drops.refit import FIT_RECORD_ENTRY
from tac_pipeline.tac.params import optional_field
from tac_pipeline.tac.vectors import APPROXIMATE_KNN_ABOVE, APPROXIMATE_KNN_NPROBE, pick_knn_method


class KnnConfig(Config):
    n_neighbors: int | None = optional_field("n_neighbors")
    knn_method: Literal["auto", "exact", "approximate"] = Field(
        default="auto",
        description=(
            "'exact' compares every pair (spec §6); 'approximate' searches a faiss IVF index (about "
            f"4·sqrt(N) cells, the {APPROXIMATE_KNN_NPROBE} most similar scanned per image); 'auto' is "
            f"approximate above {APPROXIMATE_KNN_ABOVE:,} fitting images on a CPU with faiss, exact "
            "otherwise. See docs/SCALING.md."
        ),
    )


def shared_neighbour_fraction(a: np.ndarray, b: np.ndarray, rows_per_block: int = 8192) -> float:
    """Mean over rows of |a_i ∩ b_i| / k for two (N, k) neighbour tables, in blocks of rows.

    Blockwise so the (rows, k, k) comparison stays small: at once it would take N·k² bytes (3.2 GB for
    ImageNet's 1.28 M images and k = 50).
    """
    shared = 0
    for start in range(0, len(a), rows_per_block):
        block_a, block_b = a[start : start + rows_per_block], b[start : start + rows_per_block]
        shared += int((block_a[:, :, None] == block_b[:, None, :]).any(axis=2).sum())
    return shared / a.size


class HeadsConfig(Config):
    kmeans_iter: int | None = optional_field("kmeans_iter")
    kmeans_restarts: int | None = optional_field("kmeans_restarts")
    baseline_restarts: int | None = optional_field("baseline_restarts")
    epochs: int | None = optional_field("epochs")
    batch_size: int | None = optional_field("batch_size")
    tau: float | None = optional_field("tau")
    lr: float | None = optional_field("lr")
    entropy_weight: float | None = optional_field("entropy_weight")


@dataset_asset(
    "training",
    "The 50 nearest neighbours of every fitting image, in image space and in counterpart space.",
    gpu=True,
)
def knn_graphs(
    context: AssetExecutionContext,
    config: KnnConfig,
    image_embeddings: pa.Table,
    counterparts: pa.Table,
    tac_data: TacDataResource,
    compute_device: ComputeDeviceResource,
) -> pa.Table:
    run = dataset_run(context, tac_data, config=config)
    fit = fit_indices(image_embeddings)
    wanted = run.params.n_neighbors
    k = min(wanted, len(fit) - 1)
    if k < 1:
        raise ValueError(f"need at least 2 fitting images for neighbourhoods, the drop has {len(fit)}")
    if k < wanted:
        context.log.warning(f"only {len(fit)} fitting images: using {k} neighbours instead of {wanted}")
    start = time.perf_counter()
    with compute_device.acquire(context.log) as device:
        search = pick_knn_method(len(fit), config.knn_method, device=device)
        if search != config.knn_method:
            context.log.info(f"knn_method 'auto' → {search} search for {len(fit):,} fitting images")
        knn_image = tac.knn_inner_product(embeddings(image_embeddings)[fit], k, device=device, method=search)
        knn_text = tac.knn_inner_product(
            column_matrix(counterparts, "counterpart")[fit], k, device=device, method=search
        )
    seconds = time.perf_counter() - start
    # How much the two modalities agree on who is close: shared neighbours over k, averaged.
    agreement = shared_neighbour_fraction(knn_image, knn_text)
    context.add_output_metadata(
        {
            "n_neighbors": k,
            "fitting_images": len(fit),
            "image_text_agreement": round(agreement, 4),
            "knn_method": config.knn_method,
            "knn_search": search,
            "knn_seconds": round(seconds, 2),
            **run.settings_metadata("n_neighbors", n_neighbors=k),
        }
    )
    return pa.table(
        {
            "image_id": image_embeddings["image_id"].take(pa.array(fit)),
            "fit_index": pa.array(fit, type=pa.int64()),
            "neighbors_image": index_array(knn_image),
            "neighbors_text": index_array(knn_text),
        }
    )


#: Rows of the ``trained_heads`` table beside the heads: the two baselines' centres and the novelty rule.
KMEANS_CENTERS, NO_TRAIN_CENTERS, NOVELTY_ROW = "kmeans.centers", "no_train.centers", "novelty.thresholds"


def heads_table(
    image_head: torch.nn.Module,
    text_head: torch.nn.Module,
    history: tac.TrainingHistory,
    extra: dict[str, np.ndarray] | None = None,
) -> pa.Table:
    """Parameters (and buffers) of both heads, the loss history and the ``extra`` arrays (the baselines'
    centres, the novelty thresholds) as ``name, shape, values`` rows."""
    names, shapes, values = [], [], []
    for prefix, head in (("image_head", image_head), ("text_head", text_head)):
        for name, tensor in head.state_dict().items():
            names.append(f"{prefix}.{name}")
            shapes.append(list(tensor.shape))
            values.append(tensor.detach().cpu().double().reshape(-1).numpy())
    for name, array in (extra or {}).items():
        names.append(name)
        shapes.append(list(np.shape(array)))
        values.append(np.asarray(array, dtype=np.float64).reshape(-1))
    for name in ("distillation", "consistency", "balance", "total", "seconds"):
        series = np.asarray(getattr(history, name), dtype=np.float64)
        names.append(f"history.{name}")
        shapes.append([len(series)])
        values.append(series)
    return pa.table(
        {
            "name": pa.array(names, type=pa.string()),
            "shape": pa.array(shapes, type=pa.list_(pa.int64())),
            "values": pa.array(values, type=pa.list_(pa.float64())),
        }
    )


def heads_from_table(table: pa.Table) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, np.ndarray]]:
    """Rebuild both heads (eval mode, CPU) and the loss history from :func:`heads_table`'s rows."""
    rows = {
        name: np.asarray(values, dtype=np.float64).reshape(shape)
        for name, shape, values in zip(
            table["name"].to_pylist(), table["shape"].to_pylist(), table["values"].to_pylist(), strict=True
        )
    }
    heads = []
    for prefix in ("image_head", "text_head"):
        state = {k[len(prefix) + 1 :]: v for k, v in rows.items() if k.startswith(prefix + ".")}
        weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
        d, n_clusters = weights[0].shape[1], weights[-1].shape[0]
        head = tac.ClusterHead(d, n_clusters)
        reference = head.state_dict()
        head.load_state_dict({k: torch.as_tensor(v, dtype=reference[k].dtype) for k, v in state.items()})
        heads.append(head.eval())
    history = {k[len("history.") :]: v for k, v in rows.items() if k.startswith("history.")}
    return heads[0], heads[1], history


@dataclass(frozen=True)
class FittedModel:
    """Everything a fit leaves to label images with: both heads, the baselines' centres, the novelty rule.

    The baselines label a row by its most similar centre (:func:`~tac_pipeline.tac.vectors.assign_to_centers`,
    what :meth:`tac.SphericalKMeans.predict <tac_pipeline.tac.baselines.SphericalKMeans.predict>` runs), kept
    here as plain centres: rebuilding the estimators would import scikit-learn (over a second) in every run that
    labels images.
    """

    image_head: "torch.nn.Module"
    text_head: "torch.nn.Module"
    #: (K, d) k-means centres on the images; (K, 2d) no-train TAC centres on images ⊕ counterparts.
    kmeans_centers: np.ndarray
    no_train_centers: np.ndarray
    novelty: "tac.NoveltyRule"

    @property
    def n_clusters(self) -> int:
        return int(self.kmeans_centers.shape[0])

    @classmethod
    def from_table(cls, table: pa.Table) -> "FittedModel":
        """Read back from ``trained_heads``; a table stored before the baselines were kept there raises."""
        image_head, text_head, _ = heads_from_table(table)
        rows = {
            name: np.asarray(values, dtype=np.float64).reshape(shape)
            for name, shape, values in zip(
                table["name"].to_pylist(),
                table["shape"].to_pylist(),
                table["values"].to_pylist(),
                strict=True,
            )
            if name in (KMEANS_CENTERS, NO_TRAIN_CENTERS, NOVELTY_ROW)
        }
        missing = [n for n in (KMEANS_CENTERS, NO_TRAIN_CENTERS, NOVELTY_ROW) if n not in rows]
        if missing:
            raise ValueError(
                f"the stored trained_heads lack {', '.join(missing)} (fitted by an older version): "
                "materialize trained_heads again (a fit: make cluster DATASET=<name> REFIT=1)"
            )
        confidence, similarity, quantile = rows[NOVELTY_ROW].tolist()
        return cls(
            image_head=image_head,
            text_head=text_head,
            kmeans_centers=tac.validate_embeddings(
                rows[KMEANS_CENTERS].astype(np.float32), "k-means centres"
            ),
            no_train_centers=tac.validate_embeddings(
                rows[NO_TRAIN_CENTERS].astype(np.float32), "no-train TAC centres"
            ),
            novelty=tac.NoveltyRule(confidence, similarity, quantile),
        )


#: How often a long head training logs its progress (the first three epochs and the last always).
PROGRESS_SECONDS = 5.0


@dataset_asset(
    "training",
    "The fitted model: the image head f and text head g, trained by cross-modal neighbour distillation, "
    "the centres of the two baselines and the novelty thresholds.",
    gpu=True,
)
def trained_heads(
    context: AssetExecutionContext,
    config: HeadsConfig,
    image_embeddings: pa.Table,
    counterparts: pa.Table,
    knn_graphs: pa.Table,
    tac_data: TacDataResource,
    compute_device: ComputeDeviceResource,
    io_manager: ResourceParam[StoreIOManager],
) -> pa.Table:
    run = dataset_run(context, tac_data, image_embeddings, config, chosen_in=counterparts)
    fit = knn_graphs["fit_index"].to_numpy()
    applied = run.params.head_training(run.n_clusters)
    training = tac.HeadTrainingConfig(**applied)

    logged_at = [0.0]

    def log_epoch(epoch: int, losses: dict[str, float]) -> None:
        # The first epochs, the last, and one every PROGRESS_SECONDS in between: a long training reports its
        # progress and the time it expects to take without filling the event log.
        done, elapsed = epoch + 1, time.perf_counter() - start
        if 3 < done < training.epochs and elapsed - logged_at[0] < PROGRESS_SECONDS:
            return
        logged_at[0] = elapsed
        per_epoch = elapsed / done
        context.log.info(
            f"epoch {done}/{training.epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
            + f" ({per_epoch:.3g} s per epoch, about {per_epoch * (training.epochs - done):.0f} s left)"
        )

    start = time.perf_counter()
    with compute_device.acquire(context.log) as device, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a batch shrunk to a small N is reported below instead
        try:
            image_head, text_head, history = tac.train_heads(
                embeddings(image_embeddings)[fit],
                column_matrix(counterparts, "counterpart")[fit],
                column_matrix(knn_graphs, "neighbors_image", dtype=np.int64),
                column_matrix(knn_graphs, "neighbors_text", dtype=np.int64),
                run.n_clusters,
                training,
                seed=run.seed,
                device=device,
                callback=log_epoch,
            )
        except tac.TrainingDivergedError as exc:
            sources = ", ".join(
                f"{k} from {run.resolved.sources[k]}" for k in ("lr", "tau", "entropy_weight")
            )
            raise tac.TrainingDivergedError(
                f"{exc} ({sources}; set them in dataset.toml's [tac] table or in this asset's run config)"
            ) from exc
        seconds = time.perf_counter() - start
        extra, baseline_metadata = _fit_baselines_and_novelty(
            run, image_head, image_embeddings, counterparts, fit, device
        )
    context.add_output_metadata(
        {
            "n_clusters": run.n_clusters,
            "n_clusters_from": run.n_clusters_from,
            "epochs": training.epochs,
            "batch_size": history.batch_size,
            "steps_per_epoch": history.steps_per_epoch,
            "tau": training.tau,
            "seed": run.seed,
            "device": device,
            "training_seconds": round(seconds, 2),
            **run.settings_metadata(
                *applied, "kmeans_iter", "kmeans_restarts", "baseline_restarts", **applied
            ),
            **baseline_metadata,
            FIT_RECORD_ENTRY: fit_record(context, tac_data, run, image_embeddings).to_json(),
            "final_losses": MetadataValue.json(
                {
                    "L_dis": history.distillation[-1],
                    "L_con": history.consistency[-1],
                    "L_bal": history.balance[-1],
                    "L": history.total[-1],
                }
            ),
        }
    )
    table = heads_table(image_head.cpu(), text_head.cpu(), history, extra)
    context.add_output_metadata(
        figures.loss_curves_metadata(table, store=io_manager, partition=context.partition_key)
    )
    return table


def _fit_baselines_and_novelty(run, image_head, image_embeddings, counterparts, fit, device):
    """The two baselines fitted on the reported images (docs/METHOD.md §5, §9) and the novelty rule from the
    fitting images (§10): the ``trained_heads`` rows that hold them, and their metadata."""
    params = run.params
    report, split_name = report_indices(image_embeddings)
    images = embeddings(image_embeddings)
    counterpart = column_matrix(counterparts, "counterpart")
    common = {"n_iter": params.kmeans_iter, "seed": run.seed, "device": device}
    kmeans = tac.SphericalKMeans(run.n_clusters, n_restarts=params.kmeans_restarts, **common).fit(
        images[report]
    )
    no_train = tac.SphericalKMeans(run.n_clusters, n_restarts=params.baseline_restarts, **common).fit(
        tac.concat_modalities(images[report], counterpart[report])
    )
    confidence = tac.predict_proba(image_head, images[fit], device=device).max(axis=1)
    novelty = tac.NoveltyRule.fit(confidence, counterparts["noun_similarity"].to_numpy()[fit])
    extra = {
        KMEANS_CENTERS: kmeans.cluster_centers_,
        NO_TRAIN_CENTERS: no_train.cluster_centers_,
        NOVELTY_ROW: np.array([novelty.confidence, novelty.noun_similarity, novelty.quantile]),
    }
    metadata = {
        "baselines_fitted_on": split_name,
        # Lloyd iterations per restart: each stops at its fixed point, at most kmeans_iter.
        "kmeans_baseline_iterations": MetadataValue.json(kmeans.n_iter_.tolist()),
        "no_train_iterations": MetadataValue.json(no_train.n_iter_.tolist()),
        "novelty_thresholds": MetadataValue.json({k: round(v, 6) for k, v in novelty.as_dict().items()}),
    }
    return extra, metadata


def fit_record(context, tac_data: TacDataResource, run, image_embeddings: pa.Table):
    """What this fit was fitted on, for the refit policy (:class:`~tac_pipeline.drops.refit.FitRecord`)."""
    from tac_pipeline.defs.names import IMAGE_ASSET
    from tac_pipeline.drops.nouns import noun_identity
    from tac_pipeline.drops.refit import FitRecord, encoder_of
    from tac_pipeline.drops.settings import fit_settings
    from tac_pipeline.store.records import latest_materialization

    drop = tac_data.drop_dir(context.partition_key)
    images = latest_materialization(context.instance, IMAGE_ASSET, context.partition_key)
    return FitRecord(
        run_id=context.run_id,
        at=time.time(),
        encoder=encoder_of(drop, (images.code_version if images is not None else None) or ""),
        nouns=noun_identity(context.instance, drop),
        settings=fit_settings(run.settings),
        drop_digest=images.value("drop_digest") if images is not None else None,
        images=image_embeddings.num_rows,
    )
