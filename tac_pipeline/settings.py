"""Per-dataset settings from ``data/drops/<key>/dataset.toml``.

```toml
n_clusters = 10          # defaults to the number of label folders when the drop has them
seed = 0                 # drives k-means, the baseline and the head training
resize = 256             # short side before the model's centre crop (default: the crop size, 224)

[images]                 # optional: the images live outside the drop (e.g. an ImageNet root)
root = "/data/imagenet"  # an absolute folder; symlinks leading out of it are not followed
splits = { train = "train", test = "val" }   # split -> folder under root (default: no splits)
classes = ["n02056570", "n02085936"]         # only these class folders (default: all of them)

[tac]                    # optional overrides of the defaults in docs/METHOD.md
gamma = 5
n_neighbors = 50
epochs = 20
```
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_FOLDER_NAME = re.compile(r"^[^/\\\x00]+$")


class TacOverrides(BaseModel):
    """Hyper-parameters a drop may override; ``None`` keeps the default of docs/METHOD.md.

    Every field has a range wide enough for any real use and narrow enough that a typo (``epochs = 1e9``,
    ``lr = 1e30``, ``tau = 1e-300``) fails here, naming the field, instead of running for ever or
    overflowing in the middle of a run.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    gamma: int | None = Field(default=None, ge=1, le=1000, description="Nouns kept per semantic centre (5).")
    retrieval_temperature: float | None = Field(
        default=None, ge=1e-4, le=10, description="Counterpart softmax temperature (0.005)."
    )
    n_neighbors: int | None = Field(default=None, ge=1, le=1000, description="kNN size per modality (50).")
    kmeans_iter: int | None = Field(
        default=None, ge=1, le=10_000, description="Spherical k-means iterations (300)."
    )
    kmeans_restarts: int | None = Field(
        default=None, ge=1, le=1000, description="Centre k-means restarts (10)."
    )
    baseline_restarts: int | None = Field(
        default=None, ge=1, le=1000, description="Baseline k-means restarts (20)."
    )
    n_centers: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Number of semantic centres (the rule of §3)."
    )
    epochs: int | None = Field(
        default=None, ge=1, le=10_000, description="Training epochs (20 if K < 100, else 100)."
    )
    batch_size: int | None = Field(
        default=None,
        ge=2,
        le=1_048_576,
        description="Training batch (512 if K < 100, else 8192); at least 2 for batch normalisation.",
    )
    tau: float | None = Field(
        default=None, ge=1e-3, le=1000, description="Distillation temperature (0.5 / 5.0)."
    )
    lr: float | None = Field(default=None, gt=0, le=10, description="Adam learning rate (1e-3).")
    entropy_weight: float | None = Field(default=None, ge=0, le=1000, description="Balance weight (5).")


class ImageSourceSettings(BaseModel):
    """Images kept outside the drop folder: ``root/<split folder>/<class>/**`` (or ``root/<class>/**``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    root: str = Field(description="Absolute path of an existing folder holding the images.")
    splits: dict[str, str] | None = Field(
        default=None, description="Split ('train', 'test') -> its folder under root; None: no splits."
    )
    classes: list[str] | None = Field(
        default=None, description="Class folders to take (e.g. WordNet ids); None: every class folder."
    )

    @field_validator("root")
    @classmethod
    def _root_is_an_absolute_folder(cls, value: str) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValueError(f"must be an absolute path, not {value!r}")
        if not path.is_dir():
            raise ValueError(f"{value!r} is not an existing folder")
        return str(path)

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - {"train", "test"})
        if unknown or not value:
            raise ValueError(f"split names must be 'train' and/or 'test' (got {sorted(value)})")
        for folder in value.values():
            if not _FOLDER_NAME.fullmatch(folder) or folder in (".", ".."):
                raise ValueError(f"a split folder must be one folder name under root, not {folder!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _plain_class_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must name at least one class folder (or be left out for all of them)")
        bad = [c for c in value if not _FOLDER_NAME.fullmatch(c) or c in (".", "..") or c.startswith(".")]
        if bad:
            raise ValueError(f"class entries must be plain folder names, not {bad!r}")
        if len(set(value)) != len(value):
            raise ValueError("class folders are listed more than once")
        return value


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n_clusters: int | None = Field(default=None, ge=2, le=100_000, description="Number of clusters K.")
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Seed of every random step; recorded with the results."
    )
    resize: int | None = Field(
        default=None,
        ge=32,
        le=4096,
        description="Short side in pixels before the model's centre crop (None: the crop size, 224 for "
        "ViT-B-32). The TAC authors use 256 for the ImageNet family.",
    )
    images: ImageSourceSettings | None = Field(
        default=None, description="Images kept outside the drop folder (None: the drop's own files)."
    )
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
                allowed = list(DatasetSettings.model_fields) + [
                    f"{section}.{k}"
                    for section, model in (("images", ImageSourceSettings), ("tac", TacOverrides))
                    for k in model.model_fields
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
