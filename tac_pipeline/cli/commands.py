"""The command line behind ``make demo``, ``make cluster`` and ``make reproduce`` (``python -m tac_pipeline.cli``).

Each command reads the configuration once (:class:`~tac_pipeline.config.TacConfig`), applies ``--model`` /
``--pretrained`` to it, and passes it down; results of a run with random weights (the smoke model, or any
spelling of "no weights") are framed by the random-weights banner, whichever command ran them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from tac_pipeline.cli.cluster import ClusterError, _instance, _stored_metrics, cluster
from tac_pipeline.config import ConfigError, TacConfig
from tac_pipeline.drops.demo import write_digits_drop
from tac_pipeline.drops.keys import InvalidDatasetKeyError
from tac_pipeline.store.layout import drop_path


def _check_encoder(config: TacConfig) -> Exception | None:
    """Build the encoder once, so that missing weights are known before any run starts."""
    from tac_pipeline.defs.resources.encoder import encoder_resource
    from tac_pipeline.encoders import EncoderUnavailableError

    try:
        encoder_resource(config.encoder).build("cpu")
    except EncoderUnavailableError as exc:
        return exc
    return None


def _framed(text: str, config: TacConfig) -> str:
    """``text`` between two random-weights banners when ``config``'s encoder has no weights."""
    choice = config.encoder.choice()
    if not choice.random_weights:
        return text
    from tac_pipeline.cli.provision import random_weights_banner

    banner = random_weights_banner(choice)
    return f"{banner}\n{text}{banner}\n"


def _prepare_demo(config: TacConfig) -> TacConfig | None:
    """The digits drop, the demo's encoder (the smoke model when the default weights cannot be had) and
    WordNet (installed where it can be); the configuration to run with, or None after printing why the demo
    cannot run."""
    from tac_pipeline.cli import provision
    from tac_pipeline.encoders.wordnet import WordNetUnavailableError

    target = drop_path("digits", config.data_dir)
    count = write_digits_drop(target)
    print(f"Wrote {count} digit images (scikit-learn's bundled digits) to {target}.")
    try:
        chosen = provision.demo_encoder(config, _check_encoder)
    except RuntimeError as exc:
        print(
            f"\n{exc}\n\nOffline, run the smoke model instead:\n    make demo MODEL=tac-tiny", file=sys.stderr
        )
        return None
    if chosen.fallback_notice:
        print(chosen.fallback_notice)
    try:
        provision.ensure_wordnet(config.data_dir, config=config)
    except WordNetUnavailableError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return None
    return chosen.config


def reproduce(
    name: str | None, config: TacConfig, *, source: str | None = None, max_nouns: int | None = None
) -> int:
    """Prepare a paper dataset as a drop, cluster it and print the measured figures beside the paper's."""
    from tac_pipeline.reproduce import (
        SourceError,
        comparison_markdown,
        dataset_listing,
        paper_dataset,
        prepare_drop,
    )

    if not name:
        print(dataset_listing())
        return 0
    try:
        dataset = paper_dataset(name)
        drop, written = prepare_drop(name, source, config.data_dir)
    except SourceError as exc:
        print(f"\nmake reproduce: {exc}", file=sys.stderr)
        return 2
    if source is not None:  # the images the drop names stay in the source the command was given
        config = config.allowing(source)
    what = "already prepared" if written is None else f"{written} images written"
    print(f"Drop {drop}: {what}; K = {dataset.n_clusters}, resize {dataset.resize}.")
    try:
        cluster(dataset.name, config, max_nouns=max_nouns)
    except ClusterError as exc:
        print(f"\nclustering failed:\n{exc}", file=sys.stderr)
        return 1
    with _instance() as instance:
        metrics = _stored_metrics(instance, dataset.name)
    print("\n" + _framed(f"{comparison_markdown(dataset, metrics)}\n", config))
    return 0


def export_command(dataset: str, config: TacConfig, method: str, fmt: str, to: str | None) -> int:
    """``make export``: the stored clustering of ``dataset`` as folders, CSV or Parquet (nothing recomputed)."""
    from pathlib import Path

    from tac_pipeline.explore.export import ExportError, default_target, export, read_clustered

    target = Path(to) if to else default_target(dataset, method, fmt, config.data_dir)
    try:
        with _instance() as instance:
            summary = export(
                read_clustered(instance, dataset, config.data_dir), target, method=method, fmt=fmt
            )
    except (ExportError, InvalidDatasetKeyError) as exc:
        print(f"\nexport failed: {exc}", file=sys.stderr)
        return 2
    links = summary.get("links")
    how = f" ({links['hard']} hard links, {links['symbolic']} symbolic links)" if links else ""
    print(
        f"Exported {summary['images']} images of '{dataset}' in {len(summary['clusters'])} clusters{how} to {target}"
    )
    return 0


def explore_command(dataset: str, config: TacConfig, port: int, app: bool = True) -> int:
    """``make explore``: build or refresh the FiftyOne dataset of ``dataset`` from the store, then serve the
    FiftyOne App on 127.0.0.1:``port`` until Ctrl-C (``app=False``: build only)."""
    from tac_pipeline.explore.export import ExportError
    from tac_pipeline.explore.fiftyone_dataset import INFO_KEY, ExploreError, launch_app, to_fiftyone

    started = time.monotonic()
    try:
        with _instance() as instance:
            ds = to_fiftyone(dataset, data_dir=config.data_dir, instance=instance)
    except (ExploreError, ExportError, InvalidDatasetKeyError) as exc:
        print(f"\nexplore failed: {exc}", file=sys.stderr)
        return 2
    info = ds.info.get(INFO_KEY, {})
    print(
        f"FiftyOne dataset '{ds.name}': {len(ds)} images, {len(info.get('views', {}))} saved views (one per "
        f"cluster), map: {info.get('map') or 'none'}; built in {time.monotonic() - started:.1f} s."
    )
    from pathlib import Path

    if not any(Path(p).is_file() for p in ds.limit(20).values("filepath")):
        print(
            "This drop brings its own embeddings (or its images moved): there are no image files, so the App "
            "shows no thumbnails. Fields, filters, saved views and the map are all there."
        )
    if not app:
        return 0
    session = launch_app(ds, port)
    print(f"\nFiftyOne App: http://127.0.0.1:{port}   (Ctrl-C stops it)", flush=True)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tac_pipeline.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write a clustered drop as folders, CSV or Parquet")
    exporting.add_argument("dataset", help="folder name under data/drops/")
    exporting.add_argument(
        "--method",
        default="tac_image",
        help="tac_image (default), tac_text, tac_mean, tac_no_train or kmeans_image",
    )
    exporting.add_argument("--format", default="folders", choices=["folders", "csv", "parquet"])
    exporting.add_argument("--to", default=None, help="an empty or new folder (default: data/exports/...)")
    exploring = sub.add_parser("explore", help="open a clustered drop in the FiftyOne App")
    exploring.add_argument("dataset", help="folder name under data/drops/")
    exploring.add_argument(
        "--port", type=int, default=5151, help="the App's port on 127.0.0.1 (default 5151)"
    )
    exploring.add_argument(
        "--no-app", action="store_true", help="build or refresh the FiftyOne dataset only, serve no App"
    )
    for name, help_text in (
        ("demo", "write the digits drop and cluster it"),
        ("cluster", "cluster one drop"),
        ("reproduce", "prepare one of the paper's datasets, cluster it and compare with the paper"),
    ):
        command = sub.add_parser(name, help=help_text)
        if name == "cluster":
            command.add_argument("dataset", help="folder name under data/drops/")
            command.add_argument(
                "--refit",
                action="store_true",
                help="fit the clusters again even when the refit policy would assign the new images",
            )
        if name == "reproduce":
            command.add_argument("dataset", nargs="?", default=None, help="a paper dataset (none: list them)")
            command.add_argument(
                "--source", default=None, help="a folder holding torchvision's files, or an ImageNet root"
            )
        command.add_argument(
            "--model", default=None, help="open_clip model name (default ViT-B-32; tac-tiny offline)"
        )
        command.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default openai)")
        command.add_argument(
            "-v", "--verbose", action="store_true", help="print Dagster's event stream too (or VERBOSE=1)"
        )
        command.add_argument(
            "--max-nouns",
            type=int,
            default=None,
            help="embed only the first N WordNet nouns (smoke runs only)",
        )
    args = parser.parse_args(argv)
    try:
        config = TacConfig.from_env().with_encoder(
            getattr(args, "model", None), getattr(args, "pretrained", None)
        )
        if getattr(args, "verbose", False):
            config = replace(config, verbose=True)
    except ConfigError as exc:
        print(f"\nconfiguration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "explore":
        return explore_command(args.dataset, config, args.port, app=not args.no_app)
    if args.command == "export":
        return export_command(args.dataset, config, args.method, args.format, args.to)
    if args.command == "reproduce":
        return reproduce(args.dataset, config, source=args.source, max_nouns=args.max_nouns)
    try:
        if args.command == "demo":
            demo = _prepare_demo(config)
            if demo is None:
                return 1
            dataset, config = "digits", demo
        else:
            dataset = args.dataset
        table = cluster(dataset, config, max_nouns=args.max_nouns, refit=getattr(args, "refit", False))
    except (ClusterError, InvalidDatasetKeyError) as exc:
        print(f"\nclustering failed:\n{exc}", file=sys.stderr)
        return 1
    print("\n" + _framed(f"Metrics for '{dataset}' (percent):\n\n{table}\n", config))
    print("Open the Dagster UI on this machine with:\n    make ui        # then http://127.0.0.1:3000")
    print(f"Look at the clusters' images in the FiftyOne App with:\n    make explore DATASET={dataset}")
    return 0
