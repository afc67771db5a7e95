"""TAC's settings: one typed model holding every default of docs/METHOD.md and the range of every field.

``TacParams()`` is the method as published; ``TAC(n_clusters, **params.model_dump())`` takes its fields. The
pipeline's ``dataset.toml`` (``seed`` and the ``[tac]`` table) and the assets' run config are optional mirrors
of it, built from the same fields by :func:`optional_field`, so a default or a range is written only here.

The ranges are wide enough for any real use and narrow enough that a typo (``epochs = 1e9``, ``lr = 1e30``,
``tau = 1e-300``) fails where it is set, naming the field, instead of running for ever, overflowing or
diverging in the middle of a run. No field accepts an infinity or NaN.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

#: From this K on, the heads train with ``LARGE_K_TRAINING`` instead of ``SMALL_K_TRAINING`` (§7).
LARGE_K_FROM = 100
SMALL_K_TRAINING: dict[str, Any] = {"epochs": 20, "batch_size": 512, "tau": 0.5}
LARGE_K_TRAINING: dict[str, Any] = {"epochs": 100, "batch_size": 8192, "tau": 5.0}


def _finite(**kwargs) -> dict:
    return {"allow_inf_nan": False, **kwargs}


class TacParams(BaseModel):
    """Every setting of TAC with its default (docs/METHOD.md §3-§8); ``None`` applies the rule named.

    ``n_clusters`` is not here: it belongs to the data (the label folders or the user), not to the method.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Seed of every random step (k-means, heads, sampling)."
    )
    gamma: int = Field(default=5, ge=1, le=1000, description="Nouns kept per semantic centre (§4).")
    retrieval_temperature: float = Field(
        default=0.005, **_finite(ge=1e-4, le=10), description="Counterpart softmax temperature (§5)."
    )
    n_neighbors: int = Field(default=50, ge=1, le=1000, description="kNN size per modality (§6).")
    n_centers: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Number of semantic centres; None: round(N/300), or 3K when N/K < 300 (§3).",
    )
    kmeans_iter: int = Field(
        default=300, ge=1, le=10_000, description="Spherical k-means iterations (§3, §5)."
    )
    kmeans_restarts: int = Field(
        default=10, ge=1, le=1000, description="Semantic-centre k-means restarts (§3)."
    )
    baseline_restarts: int = Field(
        default=20, ge=1, le=1000, description="Training-free baseline k-means restarts (§5)."
    )
    epochs: int | None = Field(
        default=None, ge=1, le=10_000, description="Head training epochs; None: 20 if K < 100, else 100 (§7)."
    )
    batch_size: int | None = Field(
        default=None,
        ge=2,
        le=1_048_576,
        description="Head training batch (at least 2 for batch normalisation); None: 512 if K < 100, else "
        "8192 (§7).",
    )
    tau: float | None = Field(
        default=None,
        **_finite(ge=1e-3, le=1000),
        description="Distillation temperature; None: 0.5 if K < 100, else 5.0 (§7).",
    )
    lr: float = Field(default=1e-3, **_finite(gt=0, le=10), description="Adam learning rate (§7).")
    entropy_weight: float = Field(
        default=5.0, **_finite(ge=0, le=1000), description="Weight of the balance loss (§7)."
    )

    def head_training(self, n_clusters: int) -> dict[str, Any]:
        """The head-training settings for K clusters: the K rule of §7 where a field is None."""
        rule = SMALL_K_TRAINING if n_clusters < LARGE_K_FROM else LARGE_K_TRAINING
        chosen = {name: getattr(self, name) for name in ("epochs", "batch_size", "tau")}
        return {
            **{name: rule[name] if value is None else value for name, value in chosen.items()},
            "lr": self.lr,
            "entropy_weight": self.entropy_weight,
        }


#: The published defaults.
DEFAULTS = TacParams()


def optional_field(name: str) -> Any:
    """``TacParams``'s field ``name`` as an optional override: default None, same range and description.

    Used as ``lr: float | None = optional_field("lr")`` by the models that mirror ``TacParams``
    (``dataset.toml``'s ``[tac]`` table, the assets' run config).
    """
    field = TacParams.model_fields[name]
    default = DEFAULTS.model_dump()[name]
    description = field.description if default is None else f"{field.description} Default: {default}."
    return FieldInfo.merge_field_infos(field, default=None, description=description)


# --- Choosing K ("n_clusters = 'auto'") -----------------------------------------------------------------------
#: The smallest K an automatic choice tries.
AUTO_K_MIN = 2
#: The largest K an automatic choice tries by default, at most (also bounded by AUTO_K_IMAGES_PER_CLUSTER).
AUTO_K_MAX = 100
#: By default K is at most N / this many images, so a cluster averages at least 10 images.
AUTO_K_IMAGES_PER_CLUSTER = 10
#: The criterion is computed on at most this many fitting images (a seeded sample), whatever N is.
AUTO_K_SAMPLES = 3000


def auto_k_range(n_images: int, requested: tuple[int, int] | None = None) -> tuple[int, int]:
    """The K range an automatic choice sweeps for N fitting images: ``requested`` (inclusive), or by default
    ``AUTO_K_MIN`` to ``min(AUTO_K_MAX, N // AUTO_K_IMAGES_PER_CLUSTER)``. The upper end is below N and at most
    ``AUTO_K_SAMPLES // AUTO_K_IMAGES_PER_CLUSTER`` (300: the criterion scores a sample of that many images).

    Raises ``ValueError`` when the range is malformed (not two integers, low < 2, low >= high) or when the
    images are too few for it.
    """
    if requested is None:
        low, high = AUTO_K_MIN, min(AUTO_K_MAX, n_images // AUTO_K_IMAGES_PER_CLUSTER)
        if high <= low:
            raise ValueError(
                f"only {n_images} images: choosing K needs at least {AUTO_K_IMAGES_PER_CLUSTER * (low + 1)} by "
                f"default; give a range explicitly or set the number of clusters"
            )
        return low, high
    if (
        not isinstance(requested, list | tuple)
        or len(requested) != 2
        or any(isinstance(x, bool) or not isinstance(x, int) for x in requested)
    ):
        raise ValueError(f"the K range must be two integers [low, high], got {requested!r}")
    low, high = int(requested[0]), int(requested[1])
    if low < AUTO_K_MIN:
        raise ValueError(f"the K range must start at {AUTO_K_MIN} or more, got [{low}, {high}]")
    if high <= low:
        raise ValueError(f"the K range's upper end must exceed its lower end, got [{low}, {high}]")
    if high > AUTO_K_SAMPLES // AUTO_K_IMAGES_PER_CLUSTER:
        raise ValueError(
            f"the K range's upper end can be at most {AUTO_K_SAMPLES // AUTO_K_IMAGES_PER_CLUSTER} (the criterion "
            f"scores {AUTO_K_SAMPLES} images), got [{low}, {high}]"
        )
    if high >= n_images:
        raise ValueError(
            f"the K range [{low}, {high}] reaches the number of images ({n_images}); lower its end"
        )
    return low, high
