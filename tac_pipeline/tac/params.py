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
