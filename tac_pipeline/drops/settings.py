"""Per-dataset settings from ``data/drops/<key>/dataset.toml``.

```toml
n_clusters = 10          # defaults to the number of label folders when the drop has them; "auto": chosen
n_clusters_range = [2, 40]   # with "auto" only: the K tried (default 2 to min(100, N / 10))
seed = 0                 # drives k-means, the baseline and the head training
resize = 256             # short side before the model's centre crop (default: the crop size, 224)
refit = "auto"           # new images: "auto" (assign, or refit when the drop drifted), "always", "never"
refit_changed_share = 0.2    # auto: refit when images added/changed/removed since the fit reach this share
refit_novel_share = 0.3      # auto: refit when this share of the images assigned since the fit is novel
duplicate_threshold = 0.95   # cosine similarity of near-duplicates (cluster_labels.duplicate_group)

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tac_pipeline.tac.params import AUTO_K_MAX, AUTO_K_MIN, TacParams, auto_k_range, optional_field

_FOLDER_NAME = re.compile(r"^[^/\\\x00]+$")


class TacOverrides(BaseModel):
    """Hyper-parameters a drop may override; ``None`` keeps the default. Every field, its range and its
    description come from ``TacParams`` (tac_pipeline/tac/params.py), the one home of TAC's settings."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    gamma: int | None = optional_field("gamma")
    retrieval_temperature: float | None = optional_field("retrieval_temperature")
    n_neighbors: int | None = optional_field("n_neighbors")
    kmeans_iter: int | None = optional_field("kmeans_iter")
    kmeans_restarts: int | None = optional_field("kmeans_restarts")
    baseline_restarts: int | None = optional_field("baseline_restarts")
    n_centers: int | None = optional_field("n_centers")
    epochs: int | None = optional_field("epochs")
    batch_size: int | None = optional_field("batch_size")
    tau: float | None = optional_field("tau")
    lr: float | None = optional_field("lr")
    entropy_weight: float | None = optional_field("entropy_weight")


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

    n_clusters: int | Literal["auto"] | None = Field(
        default=None,
        description='Number of clusters K (2 to 100,000), or "auto" to choose it (None: the number of label '
        "folders).",
    )
    n_clusters_range: list[int] | None = Field(
        default=None,
        description=f'With n_clusters = "auto": [low, high], the K tried (None: {AUTO_K_MIN} to '
        f"min({AUTO_K_MAX}, N / 10)).",
    )
    seed: int = TacParams.model_fields["seed"]
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
    refit: Literal["auto", "always", "never"] = Field(
        default="auto",
        description='What a re-clustering does with new images: "auto" assigns them to the fitted clusters '
        'unless the drop drifted from the fit (docs/AUTOMATION.md), "always" refits, "never" assigns.',
    )
    refit_changed_share: float = Field(
        default=0.2,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="refit = auto: refit when the images added, changed or removed since the fit reach this "
        "share of the fitted images.",
    )
    duplicate_threshold: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        allow_inf_nan=False,
        description="Cosine similarity from which two images are near-duplicates (cluster_labels' "
        "duplicate_group); changing it never refits.",
    )
    refit_novel_share: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="refit = auto: refit when this share of the images assigned since the fit is novel.",
    )
    tac: TacOverrides = Field(default_factory=TacOverrides)

    @field_validator("n_clusters", mode="before")
    @classmethod
    def _integer_or_auto(cls, value: Any) -> Any:
        if value is None or value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, str):
            hint = '; write it in lower case: n_clusters = "auto"' if value.strip().lower() == "auto" else ""
            raise ValueError(f'must be an integer or "auto"{hint}')
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 100_000:
            raise ValueError('must be an integer from 2 to 100000, or "auto" to choose K')
        return value

    @field_validator("n_clusters_range", mode="before")
    @classmethod
    def _two_increasing_integers(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        n_clusters = info.data.get("n_clusters")
        if n_clusters != "auto":
            raise ValueError(
                f'is only used with n_clusters = "auto" (n_clusters is {n_clusters!r}): set n_clusters = "auto" '
                "or remove n_clusters_range"
            )
        try:
            return list(auto_k_range(2**62, value))  # the form only; the images are counted at run time
        except ValueError as exc:
            raise ValueError(f"{exc}, e.g. n_clusters_range = [2, 40]") from None


#: The fields of ``dataset.toml`` that steer the refit policy rather than the fit itself.
REFIT_FIELDS = frozenset({"refit", "refit_changed_share", "refit_novel_share"})
#: Settings that only label images (no fitted asset reads them): changing them never refits.
LABEL_ONLY_FIELDS = frozenset({"duplicate_threshold"})


def fit_settings(settings: DatasetSettings) -> dict[str, Any]:
    """The settings a fit depends on (everything but :data:`REFIT_FIELDS` and :data:`LABEL_ONLY_FIELDS`), as
    JSON-ready values."""
    return settings.model_dump(mode="json", exclude=set(REFIT_FIELDS | LABEL_ONLY_FIELDS))


def optional_setting(name: str) -> Any:
    """``DatasetSettings``'s field ``name`` as an optional run-config override: default None, same range and
    description (as :func:`~tac_pipeline.tac.params.optional_field` does for TAC's own settings)."""
    from pydantic.fields import FieldInfo

    field = DatasetSettings.model_fields[name]
    description = f"{field.description} None: dataset.toml's {name} (default {field.default})."
    return FieldInfo.merge_field_infos(field, default=None, description=description)


class DatasetSettingsError(ValueError):
    """``dataset.toml`` is unreadable or has a wrong field; the message names the file and the field."""


def load_dataset_settings(drop_dir: str | Path) -> DatasetSettings:
    """Read ``<drop_dir>/dataset.toml`` (all fields optional; a missing file means defaults)."""
    path = Path(drop_dir) / "dataset.toml"
    if not path.is_file():
        return DatasetSettings()
    try:  # utf-8-sig: a byte-order mark, as some editors write one, is read as nothing
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DatasetSettingsError(
            f"{path}: not UTF-8 text (byte {exc.start}): save the file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise DatasetSettingsError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return DatasetSettings.model_validate(raw)
    except ValidationError as exc:
        raise DatasetSettingsError(f"{path}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """Every field pydantic refused, named with its value (unknown fields with the allowed ones)."""
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
    return "; ".join(problems)


class RunConfigError(ValueError):
    """A TAC setting in a run's config is out of its range; the message names the asset and the field."""


#: Where a resolved setting came from, in precedence order.
RUN_CONFIG, DATASET_TOML, DEFAULT = "run config", "dataset.toml", "default"


@dataclass(frozen=True)
class ResolvedParams:
    """TAC's settings for one step, and where each came from (run config > dataset.toml > default)."""

    params: TacParams
    sources: dict[str, str]

    def record(self, *names: str) -> dict[str, dict[str, Any]]:
        """``{name: {"value": …, "from": …}}`` for the named settings, as the assets record them."""
        return {name: {"value": getattr(self.params, name), "from": self.sources[name]} for name in names}


def run_config_overrides(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The TAC settings an asset's run config sets, checked against the same ranges as ``dataset.toml``.

    ``where`` names the config in the error (``ops.trained_heads.config``); keys that are not TAC settings
    (``knn_method``, ``max_nouns``) and unset (None) values are left out.
    """
    chosen = {k: v for k, v in config.items() if k in TacOverrides.model_fields and v is not None}
    try:
        TacOverrides.model_validate(chosen)
    except ValidationError as exc:
        raise RunConfigError(f"run config {where}: {_problems(exc)}") from None
    return chosen


def resolve_params(
    settings: DatasetSettings, run_overrides: Mapping[str, Any] | None = None
) -> ResolvedParams:
    """Apply the precedence: ``run_overrides`` (from :func:`run_config_overrides`) over ``dataset.toml``'s
    ``seed`` and ``[tac]`` over ``TacParams``'s defaults."""
    from_file = settings.tac.model_dump(exclude_none=True)
    if "seed" in settings.model_fields_set:
        from_file["seed"] = settings.seed
    values, sources = {}, {}
    for name in TacParams.model_fields:
        for source, chosen in ((RUN_CONFIG, run_overrides or {}), (DATASET_TOML, from_file)):
            if name in chosen:
                values[name], sources[name] = chosen[name], source
                break
        else:
            sources[name] = DEFAULT
    return ResolvedParams(TacParams(**values), sources)


AUTO = "auto"


def resolve_n_clusters(
    settings: DatasetSettings, label_names: list[str] | None, drop_dir: str | Path
) -> int | Literal["auto"]:
    """K from ``dataset.toml`` (an integer or ``"auto"``), else the number of label folders, else a clear error."""
    if settings.n_clusters is not None:
        return settings.n_clusters
    if label_names and len(label_names) >= 2:
        return len(label_names)
    raise DatasetSettingsError(
        f"{Path(drop_dir) / 'dataset.toml'}: set n_clusters: 'n_clusters = \"auto\"' to let TAC choose K "
        f"(optionally with 'n_clusters_range = [2, 40]'), or a number such as 'n_clusters = 10'; the drop has "
        f"{'one label folder' if label_names else 'no label folders'} to count clusters from"
    )


def resolve_k_range(settings: DatasetSettings, n_images: int, drop_dir: str | Path) -> tuple[int, int]:
    """The K range ``n_clusters = "auto"`` sweeps for ``n_images`` fitting images (errors name the file)."""
    try:
        return auto_k_range(n_images, settings.n_clusters_range)
    except ValueError as exc:
        field = "n_clusters_range" if settings.n_clusters_range is not None else "n_clusters"
        raise DatasetSettingsError(
            f"{Path(drop_dir) / 'dataset.toml'}: field '{field}': {exc} "
            "(set n_clusters_range = [low, high] within the images, or a number n_clusters = K)"
        ) from None
