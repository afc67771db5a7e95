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

    n_clusters: int | None = Field(default=None, ge=2, description="Number of clusters K.")
    seed: int = Field(default=0, description="Seed of every random step; recorded with the results.")
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
