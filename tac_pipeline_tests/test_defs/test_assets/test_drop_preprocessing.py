"""A drop's own preprocessing and image location: ``resize`` and ``[images]`` in ``dataset.toml``.

``resize`` (the short side before the model's centre crop; the TAC authors use 256 for the ImageNet family)
must reach the transform the decoding workers run, and it is part of the image embeddings' identity: changing
it encodes every image again. ``[images]`` lets a drop take its images from a folder outside it (an ImageNet
root), only the classes and splits it names.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from dagster import AssetKey, instance_for_test, materialize
from PIL import Image

from tac_pipeline.defs.assets import build_assets
from tac_pipeline.drops.manifest import drop_manifest
from tac_pipeline.drops.settings import DatasetSettingsError, load_dataset_settings
from tac_pipeline.encoders.images import PreprocessSpec, discover_images
from tac_pipeline_tests.conftest import toy_image, write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import read_output, resources, tiny_encoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _random_images(n: int = 6):
    rng = np.random.default_rng(0)
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(60, 400, size=2))
        yield Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_resize_matches_torchvision_resize_then_crop():
    from torchvision import transforms as T

    spec = PreprocessSpec(size=224, mean=CLIP_MEAN, std=CLIP_STD).with_resize(256)
    reference = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    for img in _random_images():
        ours = spec.to_uint8_chw(img)
        theirs = np.asarray(reference(img), dtype=np.uint8).transpose(2, 0, 1)
        assert ours.shape == (3, 224, 224)
        np.testing.assert_array_equal(ours, theirs)


def test_authors_imagenet_transform_is_recognised_with_its_resize():
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    spec = PreprocessSpec.from_transform(transform)
    assert spec is not None and (spec.size, spec.resize, spec.resize_to) == (224, 256, 256)
    default = PreprocessSpec(size=224, mean=CLIP_MEAN, std=CLIP_STD)
    assert default.with_resize(224) == default  # the crop size is the model's own default
    with pytest.raises(ValueError, match="crop size 224"):
        default.with_resize(200)


def test_resize_setting_is_validated_with_the_field_named(tmp_path):
    (tmp_path / "dataset.toml").write_text("resize = 8\n")
    with pytest.raises(DatasetSettingsError, match="field 'resize'"):
        load_dataset_settings(tmp_path)
    (tmp_path / "dataset.toml").write_text("resize = 256\n")
    assert load_dataset_settings(tmp_path).resize == 256


def _embed(data_dir, instance, key):
    encoder = tiny_encoder()
    assets = build_assets(encoder.identity())
    result = materialize(
        assets,
        selection=["image_embeddings"],
        partition_key=key,
        resources=resources(data_dir, encoder),
        instance=instance,
    )
    assert result.success
    event = instance.get_latest_materialization_event(AssetKey("image_embeddings"))
    metadata = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
    return read_output(data_dir, "image_embeddings", key), metadata


def test_resize_reaches_the_transform_and_changing_it_encodes_again(data_dir, monkeypatch):
    import tac_pipeline.encoders.images.reader as images

    drop = data_dir / "drops" / "toy"
    n = write_toy_drop(drop, train=3, test=2)
    seen: list[int] = []
    real_read_images = images.read_images

    def spying_read_images(records, preprocess, **options):
        seen.append(PreprocessSpec.from_transform(preprocess).resize_to)
        return real_read_images(records, preprocess, **options)

    monkeypatch.setattr(images, "read_images", spying_read_images)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["toy"])
        default, meta = _embed(data_dir, instance, "toy")
        assert seen == [64] and meta["preprocess"] == "model default"  # tac-tiny crops 64

        (drop / "dataset.toml").write_text("resize = 96\n")
        resized, meta = _embed(data_dir, instance, "toy")
        assert seen == [64, 96]
        assert meta["preprocess"] == "short side 96"
        assert (meta["encoded"], meta["reused"]) == (n, 0)  # another resize: no row of the old one is reused
        before = np.stack(default.column("embedding").to_numpy(zero_copy_only=False))
        after = np.stack(resized.column("embedding").to_numpy(zero_copy_only=False))
        assert not np.allclose(before, after)

        _, meta = _embed(data_dir, instance, "toy")  # unchanged drop and setting: everything reused
        assert (meta["encoded"], meta["reused"]) == (0, n) and seen == [64, 96]


def _image_folder(root, classes, per_class=2):
    """A fake ImageNet root: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c, wnid in enumerate(classes):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                toy_image(rng, (40 * c % 255, 80, 120), (200, 30, 30)).save(folder / f"{wnid}_{i}.JPEG")


def test_images_outside_the_drop_only_the_named_classes_and_splits(tmp_path):
    root = tmp_path / "imagenet"
    classes = [f"n0{i:07d}" for i in range(6)]
    _image_folder(root, classes)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    toy_image(np.random.default_rng(2), (0, 0, 0), (255, 255, 255)).save(outside / "x.JPEG")
    os.symlink(outside / "x.JPEG", root / "train" / classes[0] / "leak.JPEG")

    listing = discover_images(
        tmp_path / "drop", image_root=root, splits={"train": "train", "test": "val"}, classes=classes[:3]
    )
    assert listing.layout == "splits" and listing.has_labels and listing.has_splits
    assert listing.label_names == classes[:3]
    assert len(listing) == 3 * 2 * 2
    assert {r.split for r in listing.records} == {"train", "test"}
    test_ids = sorted(r.image_id for r in listing.records if r.split == "test")
    assert test_ids[0] == f"test/{classes[0]}/{classes[0]}_0.JPEG"  # val/ read as the test split
    assert all(r.path.is_relative_to(root / "val") for r in listing.records if r.split == "test")
    assert listing.skipped == [
        (f"train/{classes[0]}/leak.JPEG", "symlink pointing outside images.root: not followed")
    ]

    with pytest.raises(FileNotFoundError, match="n09999999"):
        discover_images(tmp_path / "drop", image_root=root, splits={"train": "train"}, classes=["n09999999"])


def test_images_setting_is_validated_and_covered_by_the_drop_digest(tmp_path):
    root = tmp_path / "imagenet"
    classes = ["n01", "n02"]
    _image_folder(root, classes)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "dataset.toml").write_text('[images]\nroot = "relative/path"\n')
    with pytest.raises(DatasetSettingsError, match="images.root.*absolute"):
        load_dataset_settings(drop)
    (drop / "dataset.toml").write_text(
        f'[images]\nroot = "{root}"\nsplits = {{ train = "train", dev = "x" }}\n'
    )
    with pytest.raises(DatasetSettingsError, match="images.splits"):
        load_dataset_settings(drop)
    (drop / "dataset.toml").write_text(f'[images]\nroot = "{root}"\nclasses = ["../etc"]\n')
    with pytest.raises(DatasetSettingsError, match="images.classes"):
        load_dataset_settings(drop)

    (drop / "dataset.toml").write_text(
        f'[images]\nroot = "{root}"\nsplits = {{ train = "train", test = "val" }}\nclasses = ["n01"]\n'
    )
    first = drop_manifest(drop)
    assert len(first) == 1 + 2 * 2  # dataset.toml and n01's images in train/ and val/
    assert all(name.startswith("@images/") for name, _, _ in first.entries if name != "dataset.toml")
    (root / "val" / "n02" / "n02_0.JPEG").unlink()  # a class the drop does not use
    assert drop_manifest(drop).digest == first.digest
    victim = root / "val" / "n01" / "n01_0.JPEG"
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert drop_manifest(drop).digest != first.digest
