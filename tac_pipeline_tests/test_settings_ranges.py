"""Every ``dataset.toml`` setting has a range: values that would run for ever, overflow or diverge fail at
once, naming the field, before any step computes anything."""

import pytest

from tac_pipeline.settings import DatasetSettingsError, TacOverrides, load_dataset_settings


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
