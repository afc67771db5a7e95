"""New image drops: the sensor, the schedule, incremental embeddings and stable cluster ids."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from dagster import (
    AssetKey,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from tac_pipeline.definitions import build_definitions
from tac_pipeline.defs.automation import build_drops_sensor, build_recluster_schedule
from tac_pipeline.drops.manifest import drop_manifest, watched_drop_manifest
from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image, write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    byo_embeddings,
    byo_nouns,
    materialize_dataset,
    materialize_nouns,
    read_output,
    tiny_encoder,
)

SETTLE = 30.0


def age(path, seconds: float = 120.0) -> None:
    """Backdate every file and folder under ``path`` so the drop counts as settled."""
    past = time.time() - seconds
    for folder, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))
        os.utime(folder, (past, past))


@pytest.fixture
def automation(data_dir):
    defs = build_definitions(data_dir=data_dir, encoder=tiny_encoder(), device="cpu")
    sensor = build_drops_sensor(settle_seconds=SETTLE)
    schedule = build_recluster_schedule(settle_seconds=SETTLE)
    with instance_for_test() as instance:
        yield data_dir, instance, defs, sensor, schedule


def tick(sensor, instance, defs, cursor) -> SensorResult:
    """One evaluation, as the daemon's tick would see it (new partitions and runs in one result)."""
    # Entered and left as the daemon does: a context never left keeps the instance in Dagster's context
    # variable after the instance is gone, and a later test loading definitions fails on it.
    with build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"tac_data": defs.resources["tac_data"]}
    ) as context:
        result = sensor(context)
    assert isinstance(result, SensorResult)
    return result


def run_schedule(schedule, instance, defs, when: datetime):
    """One evaluation of the schedule at ``when``, as the daemon makes it."""
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"tac_data": defs.resources["tac_data"]},
        repository_def=defs.get_repository_def(),
    ) as context:
        return schedule(context)


def test_manifest_digest_tracks_changes_and_settling(tmp_path):
    write_toy_drop(tmp_path / "d", train=2, test=1)
    first = drop_manifest(tmp_path / "d")
    assert len(first) == 9 and first.settling(SETTLE)
    age(tmp_path / "d")
    settled = drop_manifest(tmp_path / "d")
    assert not settled.settling(SETTLE)
    assert drop_manifest(tmp_path / "d").digest == settled.digest  # nothing changed, same digest
    (tmp_path / "d" / "train" / "red" / "red_000.png").write_bytes(b"changed")
    changed = drop_manifest(tmp_path / "d")
    assert changed.digest != settled.digest and changed.settling(SETTLE)


def test_sensor_new_dataset_unchanged_changed_and_growing(automation):
    data_dir, instance, defs, sensor, _ = automation
    drop = data_dir / "drops" / "toy"
    write_toy_drop(drop, train=3, test=1)
    age(drop)

    # Without noun embeddings the sensor registers the partition and asks for the nouns first.
    result = tick(sensor, instance, defs, None)
    assert [r.asset_selection for r in result.run_requests] == [[AssetKey("wordnet_noun_embeddings")]]
    assert result.dynamic_partitions_requests[0].partition_keys == ["toy"]
    instance.add_dynamic_partitions("datasets", ["toy"])
    materialize_nouns(data_dir, instance)

    # New dataset: one run for its partition.
    result = tick(sensor, instance, defs, result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["toy"]
    assert AssetKey("metrics") in result.run_requests[0].asset_selection
    cursor = result.cursor
    assert json.loads(cursor)["toy"] == drop_manifest(drop).digest

    # No change: nothing.
    result = tick(sensor, instance, defs, cursor)
    assert result.run_requests == [] and not result.dynamic_partitions_requests
    assert result.skip_reason.skip_message == "no drop changed"

    # A changed file: one run for that partition only, even with a second, unchanged dataset around.
    other = data_dir / "drops" / "other"
    write_toy_drop(other, train=2, test=1)
    age(other)
    result = tick(sensor, instance, defs, cursor)
    assert [r.partition_key for r in result.run_requests] == ["other"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["other"]
    instance.add_dynamic_partitions("datasets", ["other"])
    cursor = result.cursor
    toy_image(np.random.default_rng(5), *TOY_CLASSES["blue"]).save(drop / "train" / "red" / "red_000.png")
    age(drop)
    result = tick(sensor, instance, defs, cursor)
    assert [r.partition_key for r in result.run_requests] == ["toy"]
    cursor = result.cursor

    # A file still being copied (just written): nothing until it settles.
    (drop / "train" / "blue" / "incoming.png").write_bytes(b"\x89PNG half a file")
    result = tick(sensor, instance, defs, cursor)
    assert result.run_requests == []
    toy_image(np.random.default_rng(6), *TOY_CLASSES["blue"]).save(drop / "train" / "blue" / "incoming.png")
    age(drop)
    result = tick(sensor, instance, defs, result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["toy"]


def test_sensor_ignores_unsafe_folder_names(automation):
    data_dir, instance, defs, sensor, _ = automation
    (data_dir / "drops" / "bad name!").mkdir()
    (data_dir / "drops" / ".hidden").mkdir()
    result = tick(sensor, instance, defs, None)
    assert not result.dynamic_partitions_requests and not result.run_requests
    assert "no drop folders" in result.skip_reason.skip_message


def test_schedule_reclusters_only_changed_drops(automation):
    data_dir, instance, defs, _, schedule = automation
    for name in ("toy", "other"):
        write_toy_drop(data_dir / "drops" / name, train=3, test=1)
        age(data_dir / "drops" / name)
    materialize_nouns(data_dir, instance)
    for name in ("toy", "other"):
        (data_dir / "drops" / name / "dataset.toml").write_text("[tac]\nepochs = 2\n")
        age(data_dir / "drops" / name)
        assert materialize_dataset(data_dir, instance, name).success

    def evaluate():
        return run_schedule(schedule, instance, defs, datetime(2026, 11, 27, 2, tzinfo=UTC))

    assert "no drop changed" in evaluate().skip_message
    toy_image(np.random.default_rng(1), *TOY_CLASSES["red"]).save(data_dir / "drops/other/train/red/new.png")
    age(data_dir / "drops" / "other")
    assert [r.partition_key for r in evaluate()] == ["other"]


def test_drops_with_their_own_nouns_run_without_the_shared_nouns(automation):
    data_dir, instance, defs, sensor, schedule = automation
    write_toy_drop(data_dir / "drops" / "toy", train=3, test=1)
    own = data_dir / "drops" / "own"
    own.mkdir()
    byo_nouns(own / "nouns.parquet", byo_embeddings(own / "embeddings.parquet", 5, 16))
    age(data_dir / "drops")
    nouns = [AssetKey("wordnet_noun_embeddings")]

    # No shared nouns yet: the image drop waits for them, the drop with its own nouns runs now.
    result = tick(sensor, instance, defs, None)
    assert [(r.asset_selection, r.partition_key) for r in result.run_requests[:1]] == [(nouns, None)]
    assert [r.partition_key for r in result.run_requests[1:]] == ["own"]
    assert set(json.loads(result.cursor)) == {"own"}
    instance.add_dynamic_partitions("datasets", ["toy", "own"])
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2026, 12, 1, 2, tzinfo=UTC),
        resources={"tac_data": defs.resources["tac_data"]},
        repository_def=defs.get_repository_def(),
    ) as context:
        requests = schedule(context)
    assert requests[0].asset_selection == nouns and [r.partition_key for r in requests[1:]] == ["own"]

    # With the shared nouns in place, the image drop runs on the next tick.
    materialize_nouns(data_dir, instance)
    result = tick(sensor, instance, defs, result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["toy"]


def test_adding_ten_images_encodes_exactly_those_ten(data_dir, monkeypatch):
    from tac_pipeline.encoders import ClipEncoder

    encoded = []
    real = ClipEncoder.encode_images

    def counting(self, batch, *args, **kwargs):
        out = real(self, batch, *args, **kwargs)
        encoded.append(len(out))
        return out

    monkeypatch.setattr(ClipEncoder, "encode_images", counting)
    drop = data_dir / "drops" / "toy"
    count = write_toy_drop(drop, train=4, test=2)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 2\n")
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        assert materialize_dataset(data_dir, instance, "toy").success
        assert sum(encoded) == count
        before = read_output(data_dir, "image_embeddings", "toy")

        encoded.clear()
        rng = np.random.default_rng(11)
        for i in range(10):
            name = list(TOY_CLASSES)[i % 3]
            toy_image(rng, *TOY_CLASSES[name]).save(drop / "train" / name / f"added_{i}.png")
        (drop / "test" / "red" / "red_000.png").unlink()
        assert materialize_dataset(data_dir, instance, "toy").success
        assert sum(encoded) == 10
        after = read_output(data_dir, "image_embeddings", "toy")
        metadata = instance.get_latest_materialization_event(
            AssetKey("image_embeddings")
        ).asset_materialization
        values = {k: getattr(v, "value", v) for k, v in metadata.metadata.items()}
        assert (values["encoded"], values["reused"], values["removed"]) == (10, count - 1, 1)
        assert values["drop_digest"] == drop_manifest(drop).digest

        # reused rows are the previous rows, bit for bit
        old = dict(zip(before["image_id"].to_pylist(), before["embedding"].to_pylist(), strict=True))
        for image_id, vector in zip(
            after["image_id"].to_pylist(), after["embedding"].to_pylist(), strict=True
        ):
            if image_id in old:
                assert vector == old[image_id]
        assert after.num_rows == count + 10 - 1

        # nothing changed: nothing encoded, the model is not even loaded
        encoded.clear()
        monkeypatch.setattr(ClipEncoder, "__init__", lambda *a, **k: pytest.fail("encoder built for nothing"))
        assert materialize_dataset(data_dir, instance, "toy").success
        assert encoded == []


def test_cluster_ids_stay_stable_across_seeds_and_additions(data_dir):
    drop = data_dir / "drops" / "toy"
    write_toy_drop(drop, train=12, test=4)
    # Enough steps for a clean three-way split, so a re-run finds the same clusters under other numbers.
    (drop / "dataset.toml").write_text("seed = 0\n[tac]\nepochs = 150\nbatch_size = 18\n")
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        assert materialize_dataset(data_dir, instance, "toy").success
        first = read_output(data_dir, "cluster_labels", "toy").to_pandas().set_index("image_id")
        assert first.groupby("label")["cluster"].nunique().max() == 1  # each class one cluster

        (drop / "dataset.toml").write_text("seed = 1\n[tac]\nepochs = 150\nbatch_size = 18\n")
        assert materialize_dataset(data_dir, instance, "toy").success
        second = read_output(data_dir, "cluster_labels", "toy").to_pandas().set_index("image_id")
        assert (second["cluster"] == first["cluster"]).all()
        assert (second["cluster_no_train"] == first["cluster_no_train"]).all()
        event = instance.get_latest_materialization_event(AssetKey("cluster_labels")).asset_materialization
        assert event.metadata["images_changed_cluster"].value == 0

        rng = np.random.default_rng(21)
        for i, name in enumerate(TOY_CLASSES):
            toy_image(rng, *TOY_CLASSES[name]).save(drop / "train" / name / f"extra_{i}.png")
        assert materialize_dataset(data_dir, instance, "toy").success
        third = read_output(data_dir, "cluster_labels", "toy").to_pandas().set_index("image_id")
        assert len(third) == len(first) + 3
        old = third.loc[first.index]
        # The training-free clustering is unchanged: every old image keeps its id.
        assert (old["cluster_no_train"] == first["cluster_no_train"]).all()
        # The heads were retrained on a different set, so a few images may move; each cluster keeps its id
        # (its old members mostly stay under the same number) and the moves are reported.
        for cluster_id, members in first.groupby("cluster").groups.items():
            assert old.loc[members, "cluster"].mode()[0] == cluster_id
        event = instance.get_latest_materialization_event(AssetKey("cluster_labels")).asset_materialization
        assert event.metadata["images_changed_cluster"].value == int(
            (old["cluster"] != first["cluster"]).sum()
        )


def test_watched_manifest_walks_only_changed_drops(tmp_path):
    drop, state = tmp_path / "d", tmp_path / "state" / "d.json"
    write_toy_drop(drop, train=2, test=1)
    first = watched_drop_manifest(drop, state, SETTLE)
    assert first.walked and first.settling(SETTLE)  # just written: walked again next time
    assert watched_drop_manifest(drop, state, SETTLE).walked
    age(drop)
    settled = watched_drop_manifest(drop, state, SETTLE)
    assert settled.walked and settled.digest == drop_manifest(drop).digest and not settled.settling(SETTLE)
    again = watched_drop_manifest(drop, state, SETTLE)
    assert not again.walked and again.digest == settled.digest

    # A new file changes its folder: walked, and the digest is the full walk's.
    toy_image(np.random.default_rng(2), *TOY_CLASSES["red"]).save(drop / "train" / "red" / "new.png")
    age(drop)
    added = watched_drop_manifest(drop, state, SETTLE)
    assert added.walked and added.digest == drop_manifest(drop).digest != settled.digest
    assert not watched_drop_manifest(drop, state, SETTLE).walked

    # The drop's settings file is always checked, even when edited in place.
    settings = drop / "dataset.toml"
    settings.write_text("seed = 1\n")
    age(drop)
    assert watched_drop_manifest(drop, state, SETTLE).walked
    before = os.stat(drop).st_mtime_ns
    with settings.open("a") as handle:
        handle.write("# edited in place\n")
    os.utime(drop, ns=(before, before))
    past = time.time() - 120
    os.utime(settings, (past, past))
    edited = watched_drop_manifest(drop, state, SETTLE)
    assert edited.walked and edited.digest == drop_manifest(drop).digest

    # The trade-off: a deeper file rewritten in place, its folder untouched, waits for the next full walk.
    image = drop / "train" / "red" / "red_000.png"
    folder_mtime = os.stat(image.parent).st_mtime_ns
    image.write_bytes(image.read_bytes() + b"\0")
    os.utime(image, (past, past))
    os.utime(image.parent, ns=(folder_mtime, folder_mtime))
    stale = watched_drop_manifest(drop, state, SETTLE)
    assert not stale.walked and stale.digest == edited.digest != drop_manifest(drop).digest
    caught = watched_drop_manifest(drop, state, SETTLE, full_walk_seconds=0)
    assert caught.walked and caught.digest == drop_manifest(drop).digest

    # A corrupt state file means a full walk, never an error.
    state.write_text("{not json")
    assert watched_drop_manifest(drop, state, SETTLE).walked


def test_watched_manifest_sees_an_image_folder_that_appears(tmp_path):
    images, drop, state = tmp_path / "images", tmp_path / "drops" / "ext", tmp_path / "s.json"
    drop.mkdir(parents=True)
    (drop / "dataset.toml").write_text(f'[images]\nroot = "{images}"\nclasses = ["cat"]\n')
    images.mkdir()
    age(tmp_path)
    empty = watched_drop_manifest(drop, state, SETTLE)
    assert not watched_drop_manifest(drop, state, SETTLE).walked
    write_toy_drop(tmp_path / "src", train=1, test=1)
    (tmp_path / "src" / "train" / "red").rename(images / "cat")
    age(tmp_path)
    grown = watched_drop_manifest(drop, state, SETTLE)
    assert grown.walked and grown.digest != empty.digest and grown.digest == drop_manifest(drop).digest


def _byo_rows(drop, rows: int, total: int = 120, width: int = 16) -> None:
    """The first ``rows`` of a fixed set of three labelled blobs as the drop's ``embeddings.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, width))
    labels = np.arange(total) % 3
    vectors = directions[labels] + 0.3 * rng.normal(size=(total, width))
    pq.write_table(
        pa.table(
            {
                "image_id": [f"img{i:04d}" for i in range(rows)],
                "embedding": vectors[:rows].tolist(),
                "label": [f"class{c}" for c in labels[:rows]],
            }
        ),
        drop / "embeddings.parquet",
    )
    if not (drop / "nouns.parquet").exists():
        byo_nouns(drop / "nouns.parquet", directions)


def test_sensor_and_schedule_assign_one_new_image_and_refit_a_doubled_drop(automation):
    from tac_pipeline.defs.names import ASSIGN_ASSETS, DATASET_ASSETS

    data_dir, instance, defs, sensor, schedule = automation
    drop = data_dir / "drops" / "own"
    drop.mkdir()
    _byo_rows(drop, 60)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 5\nn_neighbors = 5\n")
    age(drop)

    def schedule_requests():
        return run_schedule(schedule, instance, defs, datetime(2026, 12, 7, 2, tzinfo=UTC))

    def kind(request):
        selection = {k.to_user_string() for k in request.asset_selection}
        assert selection in (set(DATASET_ASSETS), set(ASSIGN_ASSETS))
        assert request.tags["tac/run_kind"] == ("fit" if selection == set(DATASET_ASSETS) else "assign")
        return request.tags["tac/run_kind"], request.tags["tac/refit_reason"]

    result = tick(sensor, instance, defs, None)
    assert [kind(r) for r in result.run_requests] == [("fit", "refitted: there is no fit yet")]
    instance.add_dynamic_partitions("datasets", ["own"])
    assert materialize_dataset(data_dir, instance, "own").success

    _byo_rows(drop, 61)  # one new image
    age(drop)
    result = tick(sensor, instance, defs, result.cursor)
    (request,) = result.run_requests
    assert kind(request)[0] == "assign" and kind(request)[1].startswith(
        "assigned 1 new images to the fit of run"
    )
    assert request.run_key.endswith(":assign") and request.partition_key == "own"
    (request,) = schedule_requests()
    assert kind(request)[0] == "assign"

    _byo_rows(drop, 120)  # the drop doubles
    age(drop)
    result = tick(sensor, instance, defs, result.cursor)
    (request,) = result.run_requests
    assert kind(request)[0] == "fit" and "100 % of the images are new" in kind(request)[1]
    (request,) = schedule_requests()
    assert kind(request)[0] == "fit"
