"""Every ``dataset.toml`` setting has a range: values that would run for ever, overflow or diverge fail at
once, naming the field, before any step computes anything."""

import pytest

from tac_pipeline.drops.settings import (
    DatasetSettingsError,
    TacOverrides,
    load_dataset_settings,
    resolve_k_range,
    resolve_n_clusters,
)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("seed = 18446744073709551616", "seed"),  # 2**64: faiss would overflow
        ("seed = -1", "seed"),
        ("[tac]\nepochs = 1000000000", "tac.epochs"),  # would run for ever
        ("[tac]\nlr = 1e30", "tac.lr"),
        ("[tac]\nlr = inf", "tac.lr"),
        ("[tac]\nlr = nan", "tac.lr"),
        ("[tac]\ntau = 1e-300", "tac.tau"),
        ("[tac]\nretrieval_temperature = 1e-300", "tac.retrieval_temperature"),
        ("[tac]\nbatch_size = 1", "tac.batch_size"),  # batch normalisation needs two rows
        ("[tac]\nn_neighbors = 0", "tac.n_neighbors"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(tmp_path, toml, field):
    (tmp_path / "dataset.toml").write_text(toml + "\n")
    with pytest.raises(DatasetSettingsError, match=f"field '{field}'"):
        load_dataset_settings(tmp_path)


def test_values_inside_the_ranges_are_kept(tmp_path):
    (tmp_path / "dataset.toml").write_text(
        "seed = 4294967295\n[tac]\nepochs = 10000\nlr = 0.5\ntau = 0.001\nbatch_size = 2\n"
        "retrieval_temperature = 0.0001\n"
    )
    tac = load_dataset_settings(tmp_path).tac
    assert (tac.epochs, tac.lr, tac.tau, tac.batch_size) == (10000, 0.5, 0.001, 2)


def test_every_tac_setting_has_an_upper_bound():
    for name, field in TacOverrides.model_fields.items():
        assert any(hasattr(m, "le") for m in field.metadata), f"tac.{name} has no upper bound"


@pytest.mark.parametrize(
    ("toml", "field", "fix"),
    [
        ('n_clusters = "Auto"', "n_clusters", 'write it in lower case: n_clusters = "auto"'),
        ('n_clusters = "three"', "n_clusters", 'must be an integer or "auto"'),
        ("n_clusters = 1", "n_clusters", 'or "auto" to choose K'),
        ('n_clusters = "auto"\nn_clusters_range = [1, 5]', "n_clusters_range", "must start at 2 or more"),
        ('n_clusters = "auto"\nn_clusters_range = [10, 5]', "n_clusters_range", "must exceed its lower end"),
        ('n_clusters = "auto"\nn_clusters_range = [2.0, 5]', "n_clusters_range", "two integers"),
        ('n_clusters = "auto"\nn_clusters_range = [2]', "n_clusters_range", "two integers"),
        ('n_clusters = "auto"\nn_clusters_range = [2, 5000]', "n_clusters_range", "at most 300"),
        ("n_clusters_range = [2, 5]", "n_clusters_range", 'set n_clusters = "auto"'),
    ],
)
def test_bad_k_choices_are_refused_naming_the_file_the_field_and_the_fix(tmp_path, toml, field, fix):
    (tmp_path / "dataset.toml").write_text(toml + "\n")
    with pytest.raises(DatasetSettingsError) as error:
        load_dataset_settings(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "dataset.toml") in message and f"field '{field}'" in message and fix in message


def test_auto_and_its_range_are_read(tmp_path):
    (tmp_path / "dataset.toml").write_text('n_clusters = "auto"\nn_clusters_range = [3, 40]\n')
    settings = load_dataset_settings(tmp_path)
    assert (settings.n_clusters, settings.n_clusters_range) == ("auto", [3, 40])
    assert resolve_n_clusters(settings, None, tmp_path) == "auto"
    assert resolve_k_range(settings, 1000, tmp_path) == (3, 40)
    with pytest.raises(
        DatasetSettingsError, match=r"field 'n_clusters_range'.*reaches the number of images \(30\)"
    ):
        resolve_k_range(settings, 30, tmp_path)
    (tmp_path / "dataset.toml").write_text('n_clusters = "auto"\n')
    settings = load_dataset_settings(tmp_path)
    assert resolve_k_range(settings, 60_000, tmp_path) == (2, 100)  # min(100, N / 10)
    assert resolve_k_range(settings, 250, tmp_path) == (2, 25)
    with pytest.raises(DatasetSettingsError, match=r"field 'n_clusters'.*only 20 images"):
        resolve_k_range(settings, 20, tmp_path)


def test_an_unlabelled_drop_without_k_is_told_about_auto(tmp_path):
    with pytest.raises(DatasetSettingsError, match=r'dataset.toml: set n_clusters: \'n_clusters = "auto"\''):
        resolve_n_clusters(load_dataset_settings(tmp_path), None, tmp_path)


def test_a_byte_order_mark_is_read_as_nothing_and_other_encodings_are_named(tmp_path):
    (tmp_path / "dataset.toml").write_bytes("\ufeffn_clusters = 7\nseed = 3\n".encode("utf-8"))
    settings = load_dataset_settings(tmp_path)
    assert settings.n_clusters == 7 and settings.seed == 3
    (tmp_path / "dataset.toml").write_bytes("# caf\xe9\nn_clusters = 7\n".encode("latin-1"))
    with pytest.raises(DatasetSettingsError, match=r"dataset.toml: not UTF-8 text.*save the file as UTF-8"):
        load_dataset_settings(tmp_path)
