"""Per-dataset settings from ``data/drops/<key>/dataset.toml``.

```toml
n_clusters = 10          # defaults to the number of label folders when the drop has them
seed = 0                 # drives k-means, the baseline and the head training

[tac]                    # optional overrides of TAC_SPEC defaults
gamma = 5
n_neighbors = 50
epochs = 20
```
"""

from __future__ import annotations

from pathlib import Path

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TacOverrides(BaseModel):
    """Hyper-parameters a drop may override; ``None`` keeps the spec default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    gamma: int | None = Field(default=None, gt=0, description="Nouns kept per semantic centre (spec: 5).")
    retrieval_temperature: float | None = Field(
        default=None, gt=0, description="Counterpart softmax (spec: 0.005)."
    )
    n_neighbors: int | None = Field(default=None, gt=0, description="kNN size per modality (spec: 50).")
    kmeans_iter: int | None = Field(
        default=None, gt=0, description="Spherical k-means iterations (spec: 300)."
    )
    kmeans_restarts: int | None = Field(default=None, gt=0, description="Centre k-means restarts (spec: 10).")
    baseline_restarts: int | None = Field(
        default=None, gt=0, description="Baseline k-means restarts (spec: 20)."
    )
    n_centers: int | None = Field(
        default=None, gt=0, description="Number of semantic centres (spec: rule of §3)."
    )
    epochs: int | None = Field(
        default=None, gt=0, description="Training epochs (spec: 20 if K<100 else 100)."
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="Training batch (spec: 512 if K<100 else 8192)."
    )
    tau: float | None = Field(default=None, gt=0, description="Distillation temperature (spec: 0.5 / 5.0).")
    lr: float | None = Field(default=None, gt=0, description="Adam learning rate (spec: 1e-3).")
    entropy_weight: float | None = Field(default=None, ge=0, description="Balance weight (spec: 5).")


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n_clusters: int | None = Field(default=None, ge=2, description="Number of clusters K.")
    seed: int = Field(default=0, description="Seed of every random step; recorded with the results.")
    tac: TacOverrides = Field(default_factory=TacOverrides)


class DatasetSettingsError(ValueError):
    """``dataset.toml`` is unreadable or has a wrong field; the message names the file and the field."""


def load_dataset_settings(drop_dir: str | Path) -> DatasetSettings:
    """Read ``<drop_dir>/dataset.toml`` (all fields optional; a missing file means defaults)."""
    path = Path(drop_dir) / "dataset.toml"
    if not path.is_file():
        return DatasetSettings()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetSettingsError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return DatasetSettings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                allowed = sorted(DatasetSettings.model_fields) + [
                    f"tac.{k}" for k in TacOverrides.model_fields
                ]
                problems.append(f"unknown field '{field}' (allowed: {', '.join(allowed)})")
            else:
                problems.append(f"field '{field}': {error['msg']} (got {error.get('input')!r})")
        raise DatasetSettingsError(f"{path}: " + "; ".join(problems)) from None


def resolve_n_clusters(settings: DatasetSettings, label_names: list[str] | None, drop_dir: str | Path) -> int:
    """K from ``dataset.toml``, else the number of label folders, else a clear error."""
    if settings.n_clusters is not None:
        return settings.n_clusters
    if label_names and len(label_names) >= 2:
        return len(label_names)
    raise DatasetSettingsError(
        f"{Path(drop_dir) / 'dataset.toml'}: set n_clusters (e.g. 'n_clusters = 10'); the drop has "
        f"{'one label folder' if label_names else 'no label folders'} to count clusters from"
    )
