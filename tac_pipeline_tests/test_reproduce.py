"""`make reproduce`: the paper's datasets prepared from torchvision's file formats, offline, on generated data.

Every source here is written by the test in the format torchvision downloads (CIFAR's pickled batches,
STL-10's binaries, DTD's split lists, an ImageNet ImageFolder); nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tac_pipeline.drops.settings import load_dataset_settings
from tac_pipeline.reproduce import PAPER_DATASETS, SourceError, comparison_markdown, prepare_drop, sources
from tac_pipeline.reproduce.catalog import IMAGENET10_WNIDS
from tac_pipeline_tests.conftest import toy_image


def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_rows(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def fake_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _pickle(
            folder / name,
            {"data": _cifar_rows(rng, per_batch), "labels": [int(y) for y in rng.integers(0, 10, per_batch)]},
        )
    return root


def test_cifar10_drop_layout_class_names_and_pixels(tmp_path):
    source = fake_cifar10(tmp_path / "src")
    drop, written = prepare_drop("cifar10", source, tmp_path / "data")
    assert written == 6 * 4
    assert sorted(p.name for p in drop.iterdir() if not p.name.startswith(".")) == [
        "dataset.toml",
        "test",
        "train",
    ]
    assert (
        len(list((drop / "train").glob("*/*.png"))) == 20 and len(list((drop / "test").glob("*/*.png"))) == 4
    )
    assert {p.name for p in (drop / "train").iterdir()} <= set(
        pickle.loads((source / "cifar-10-batches-py" / "batches.meta").read_bytes())["label_names"]
    )
    # pixels: the first training row, CHW-planar in the batch, is the PNG written first
    first = pickle.loads((source / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    label = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"][
        first["labels"][0]
    ]
    png = np.asarray(Image.open(drop / "train" / label / "000000.png"))
    np.testing.assert_array_equal(png, first["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    settings = load_dataset_settings(drop)
    assert (settings.n_clusters, settings.resize, settings.images) == (10, 224, None)
    # prepared once: a second call with the same source writes nothing
    assert prepare_drop("cifar10", source, tmp_path / "data") == (drop, None)


def test_cifar20_uses_the_20_coarse_labels(tmp_path):
    folder = tmp_path / "src" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    coarse = [f"superclass_{i:02d}" for i in range(20)]
    _pickle(
        folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)], "coarse_label_names": coarse}
    )
    for split, n in (("train", 40), ("test", 20)):
        labels = [int(y) for y in np.arange(n) % 20]
        fine = [int(y) for y in rng.integers(0, 100, n)]
        _pickle(folder / split, {"data": _cifar_rows(rng, n), "fine_labels": fine, "coarse_labels": labels})
    drop, written = prepare_drop("cifar20", tmp_path / "src", tmp_path / "data")
    assert written == 60
    assert sorted(p.name for p in (drop / "train").iterdir()) == coarse
    assert sorted(p.name for p in (drop / "test").iterdir()) == coarse
    assert load_dataset_settings(drop).n_clusters == 20


def test_stl10_binaries_are_read_as_torchvision_reads_them(tmp_path):
    from torchvision.datasets import STL10

    folder = tmp_path / "src" / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for split, n in (("train", 5), ("test", 3)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    ours = sources.read_stl10(tmp_path / "src")
    # torchvision's own loader (its checksum test would refuse generated files, so call the reader itself)
    reference = object.__new__(STL10)
    reference.root, reference.base_folder = str(tmp_path / "src"), "stl10_binary"
    images, labels = reference._STL10__loadfile("train_X.bin", "train_y.bin")
    np.testing.assert_array_equal(ours["train"].images, images.transpose(0, 2, 3, 1))
    assert ours["train"].labels == [names[y] for y in labels]
    drop, written = prepare_drop("stl10", tmp_path / "src", tmp_path / "data")
    assert written == 8 and len(list((drop / "test").glob("*/*.png"))) == 3


def test_dtd_split_1_fits_on_train_and_val_and_reports_on_test(tmp_path):
    base = tmp_path / "src" / "dtd" / "dtd"
    rng = np.random.default_rng(3)
    lists = {"train1": [], "val1": [], "test1": []}
    for c in ("banded", "dotted", "zigzagged"):
        (base / "images" / c).mkdir(parents=True)
        for i, part in enumerate(["train1", "train1", "val1", "test1"]):
            name = f"{c}_{i:04d}.jpg"
            toy_image(rng, (10, 20, 30), (200, 100, 0)).save(base / "images" / c / name)
            lists[part].append(f"{c}/{name}")
    (base / "labels").mkdir()
    for part, lines in lists.items():
        (base / "labels" / f"{part}.txt").write_text("\n".join(lines) + "\n")
    drop, written = prepare_drop("dtd", tmp_path / "src", tmp_path / "data")
    assert written == 12
    assert (
        len(list((drop / "train").glob("*/*.jpg"))) == 9 and len(list((drop / "test").glob("*/*.jpg"))) == 3
    )
    original = base / "images" / "dotted" / "dotted_0003.jpg"
    assert (drop / "test" / "dotted" / original.name).read_bytes() == original.read_bytes()  # no re-encoding
    assert load_dataset_settings(drop).n_clusters == 47


def test_offline_without_source_fails_fast_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "reachable", lambda url, timeout: (False, "simulated: no network"))
    start = time.perf_counter()
    with pytest.raises(SourceError) as excinfo:
        prepare_drop("cifar20", None, tmp_path / "data")
    assert time.perf_counter() - start < 5
    message = str(excinfo.value)
    assert "CIFAR-20" in message and "cifar-100-python.tar.gz" in message and "SOURCE=" in message
    assert not (tmp_path / "data" / "drops" / "cifar20").exists()
    with pytest.raises(SourceError, match="SOURCE=<your ImageNet root>"):
        prepare_drop("imagenet10", None, tmp_path / "data")


def test_a_users_own_drop_of_that_name_is_never_replaced(tmp_path):
    mine = tmp_path / "data" / "drops" / "cifar10" / "cat"
    mine.mkdir(parents=True)
    (mine / "photo.png").write_bytes(b"mine")
    with pytest.raises(SourceError, match="not prepared by make reproduce"):
        prepare_drop("cifar10", fake_cifar10(tmp_path / "src"), tmp_path / "data")
    assert (mine / "photo.png").read_bytes() == b"mine"


def fake_imagenet(root: Path, wnids, train: int = 6, val: int = 3) -> None:
    rng = np.random.default_rng(4)
    for wnid in wnids:
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        stripe = tuple(int(v) for v in rng.integers(0, 256, 3))
        for split, n in (("train", train), ("val", val)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                toy_image(rng, background, stripe, size=48).save(folder / f"{wnid}_{i}.JPEG", quality=95)


def test_paper_figures_are_printed_beside_the_measured_ones():
    import pyarrow as pa

    metrics = pa.Table.from_pylist(
        [
            {"method": "kmeans_image", "nmi": 10.0, "acc": 20.0, "ari": 5.0, "split": "test"},
            {"method": "tac_no_train", "nmi": 11.0, "acc": 21.0, "ari": 6.0, "split": "test"},
            {"method": "tac_image", "nmi": 12.0, "acc": 22.0, "ari": None, "split": "test"},
        ]
    )
    for name, line in (("imagenet10", "| TAC | 12.0 / 22.0 / – | 98.5 / 99.2 / 98.3 |"),
                       ("cifar10", "| TAC | 12.0 / 22.0 / – | 83.3 / 91.9 / 83.1 |"),
                       ("stl10", "| TAC | 12.0 / 22.0 / – | – / 98.2 / – |")):  # fmt: skip
        table = comparison_markdown(PAPER_DATASETS[name], metrics)
        assert line in table
        assert "| k-means on images | 10.0 / 20.0 / 5.0 |" in table and "'test' split" in table


def test_make_reproduce_imagenet10_clusters_only_the_subset_and_reports_on_val(data_dir, tmp_path):
    root = tmp_path / "imagenet"
    extra = ["n01440764", "n01443537", "n09999999"]
    fake_imagenet(root, [*IMAGENET10_WNIDS, *extra])
    env = {
        **os.environ,
        "TAC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "TAC_EXECUTOR": "in_process",
    }
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "reproduce", "imagenet10", "--source", str(root),
         "--model", "tac-tiny", "--max-nouns", "1500"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "98.5 / 99.2 / 98.3" in done.stdout
    assert (
        done.stdout.count("* RANDOM WEIGHTS: tac-tiny is a smoke model") == 2
    )  # the banner, above and below
    drop = data_dir / "drops" / "imagenet10"
    # no image was copied into the drop: it points at the root, for the 10 subset classes only
    assert not [p for p in drop.rglob("*") if p.suffix.upper() in (".JPEG", ".PNG")]
    settings = load_dataset_settings(drop)
    assert (
        settings.resize == 256 and settings.n_clusters == 10 and settings.images.classes == IMAGENET10_WNIDS
    )
    import pyarrow.parquet as pq

    images = pq.read_table(data_dir / "store" / "image_embeddings" / "imagenet10.parquet").to_pandas()
    assert sorted(images["label"].unique()) == sorted(IMAGENET10_WNIDS)
    assert (images["split"] == "train").sum() == 60 and (images["split"] == "test").sum() == 30
    assert images.loc[images["split"] == "test", "path"].str.startswith("val/").all()
    metrics = pq.read_table(data_dir / "store" / "metrics" / "imagenet10.parquet").to_pandas()
    assert set(metrics["split"]) == {"test"} and set(metrics["n_images"]) == {30}
    # The gallery shows the images, read from the [images] root the drop names.
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from tac_pipeline.store.records import latest_materialization

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "home"))) as instance:
        labels = latest_materialization(instance, "cluster_labels", "imagenet10")
        assert labels.value("gallery_path") is not None, labels.value("gallery")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_cifar_batches_are_read_as_data_in_every_pickle_protocol(protocol):
    from tac_pipeline.reproduce.batchfile import read_batch

    rng = np.random.default_rng(5)
    batch = {
        "batch_label": "training batch 1 of 5",
        "labels": [3, 1, 4],
        "data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
        "filenames": ["a.png", "b.png", "c.png"],
        "fortran": np.asfortranarray(rng.standard_normal((4, 3))),
        "raw": b"\x00\x01",
        "nested": ({"x": 1.5, "y": None}, True),
    }
    out = read_batch(pickle.dumps(batch, protocol=protocol))
    assert out.keys() == batch.keys()
    for key in ("batch_label", "labels", "filenames", "raw", "nested"):
        assert out[key] == batch[key]
    np.testing.assert_array_equal(out["data"], batch["data"])
    assert out["data"].dtype == np.uint8
    np.testing.assert_array_equal(out["fortran"], batch["fortran"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/tac-pwned",))


def test_a_batch_that_would_run_code_is_refused_without_running_it(tmp_path):
    from tac_pipeline.reproduce.batchfile import BatchFormatError, read_batch

    payload = pickle.dumps({"data": _Evil()}, protocol=2)
    with pytest.raises(BatchFormatError, match="system"):
        read_batch(payload)
    assert not Path("/tmp/tac-pwned").exists()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(payload)
    with pytest.raises(SourceError, match="not a readable CIFAR batch"):
        prepare_drop("cifar10", tmp_path, tmp_path / "data")


def test_reproduce_without_a_dataset_lists_them(capsys):
    from tac_pipeline.cli.commands import main

    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_DATASETS:
        assert f"  {name} " in out
    assert "SOURCE required" in out and "K=1000" in out
