"""WordNet vocabulary: the full noun set, the offline fallback and the error naming every remedy.

No test touches the network: the nltk download is replaced by a stand-in that reports a dead network.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tac_pipeline.config import ConfigError, TacConfig
from tac_pipeline.encoders import wordnet
from tac_pipeline.encoders.wordnet import (
    LEXNAMES,
    WordNetUnavailableError,
    lexnames_text,
    load_noun_vocabulary,
)


def load(data_dir, *args, **kwargs):
    """The library with a data root's folders, as the pipeline passes them (``cache/``, ``nltk_data/``)."""
    return load_noun_vocabulary(
        Path(data_dir) / "cache", *args, nltk_dir=Path(data_dir) / "nltk_data", **kwargs
    )


SYSTEM_DB = next((d for d in wordnet.system_wordnet_dirs() if (d / "data.noun").is_file()), None)
needs_system_db = pytest.mark.skipif(
    SYSTEM_DB is None and not os.environ.get("TAC_REQUIRE_WORDNET"),
    reason="no system WordNet database: apt-get install wordnet-base wordnet-sense-index",
)


@pytest.fixture
def offline_download(monkeypatch):
    """Replace nltk.download by a dead network and count the attempts."""
    calls = []

    def dead_network(download_dir, timeout):
        calls.append(download_dir)
        return "simulated: network unreachable"

    monkeypatch.setattr(wordnet, "_nltk_download", dead_network)
    return calls


@pytest.fixture(scope="module")
def db_copy(tmp_path_factory) -> Path:
    """A temporary copy of the system database, so the fallback is exercised on files this test owns."""
    if SYSTEM_DB is None:
        pytest.fail("TAC_REQUIRE_WORDNET is set but no system WordNet database exists")
    copy = tmp_path_factory.mktemp("wndb") / "dict"
    copy.mkdir()
    for source in SYSTEM_DB.iterdir():
        if source.is_file():
            shutil.copyfile(source, copy / source.name)
    return copy


@pytest.fixture(scope="module")
def vocabulary_from_fallback(db_copy, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    empty = tmp_path_factory.mktemp("empty_nltk")
    mp = pytest.MonkeyPatch()
    calls = []
    mp.setattr(wordnet, "_nltk_download", lambda d, t: calls.append(d) or "simulated: network unreachable")
    try:
        frame = load(data_dir, nltk_paths=[empty], system_dirs=[db_copy])
    finally:
        mp.undo()
    return frame, data_dir, calls


def test_lexnames_has_the_45_wordnet_files():
    lines = lexnames_text().splitlines()
    assert len(LEXNAMES) == len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


@needs_system_db
def test_fallback_builds_the_authors_lemma_vocabulary(vocabulary_from_fallback):
    frame, data_dir, calls = vocabulary_from_fallback
    assert calls, "the download must be tried before the system database"
    assert list(frame.columns) == ["noun", "synset", "gloss"]
    assert len(frame) == 146_347
    assert frame["noun"].nunique() == 119_034
    assert list(frame["noun"][:10]) == [
        "entity", "physical_entity", "abstraction", "abstract_entity", "thing",
        "object", "physical_object", "whole", "unit", "congener",
    ]  # fmt: skip
    assert (frame["noun"] == "cat").sum() == 7
    # written as WordNet writes it: capitals and underscores kept
    assert "French_leave" in set(frame["noun"]) and "Canis_familiaris" in set(frame["noun"])
    dog = frame[frame["synset"] == "dog.n.01"]
    assert list(dog["noun"]) == ["dog", "domestic_dog", "Canis_familiaris"]
    assert "Canis" in dog["gloss"].iloc[0]
    assert frame["synset"].nunique() == 82_115
    # the built corpus is a real copy with the lexnames file nltk needs
    corpus = data_dir / "nltk_data" / "corpora" / "wordnet"
    assert (corpus / "lexnames").read_text() == lexnames_text()
    assert not (corpus / "data.noun").is_symlink()


@needs_system_db
def test_synsets_vocabulary_is_one_first_lemma_per_synset(vocabulary_from_fallback, tmp_path):
    frame, data_dir, _ = vocabulary_from_fallback
    synsets = load(data_dir, "synsets", nltk_paths=[tmp_path], system_dirs=[tmp_path])
    assert len(synsets) == 82_115 and synsets["synset"].is_unique
    assert synsets["noun"].nunique() == 67_893
    by_synset = synsets.set_index("synset")
    assert by_synset.loc["ice_hockey.n.01", "noun"] == "ice hockey"  # '_' read as a space
    assert by_synset.loc["dog.n.01", "noun"] == "dog"
    assert list(synsets["synset"]) == list(frame["synset"].drop_duplicates())


@needs_system_db
def test_nltk_corpus_and_system_database_give_the_same_list(
    vocabulary_from_fallback, db_copy, tmp_path, offline_download
):
    """nltk.download leaves ``corpora/wordnet.zip`` (a ``wordnet/`` folder inside); read that way, the
    same database gives the very same list as the system-database fallback."""
    import zipfile

    frame, _, _ = vocabulary_from_fallback
    nltk_home = tmp_path / "nltk_data"
    (nltk_home / "corpora").mkdir(parents=True)
    with zipfile.ZipFile(nltk_home / "corpora" / "wordnet.zip", "w") as archive:
        for source in sorted(db_copy.iterdir()):
            archive.write(source, f"wordnet/{source.name}")
        archive.writestr("wordnet/lexnames", lexnames_text())
    from_nltk = load(
        tmp_path / "data", nltk_paths=[nltk_home], system_dirs=[tmp_path / "none"], download=False
    )
    assert offline_download == []
    assert from_nltk.equals(frame)


def test_unknown_vocabulary_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="lemmas, synsets"):
        load(tmp_path, "words")
    with pytest.raises(ConfigError, match=r"\$TAC_NOUN_VOCABULARY.*lemmas, synsets"):
        TacConfig.from_env({"TAC_NOUN_VOCABULARY": "first"})
    assert TacConfig.from_env({}).noun_vocabulary == "lemmas"


@needs_system_db
def test_cached_load_is_fast_and_needs_no_source(vocabulary_from_fallback, tmp_path, offline_download):
    frame, data_dir, _ = vocabulary_from_fallback
    start = time.perf_counter()
    again = load(data_dir, nltk_paths=[tmp_path], system_dirs=[tmp_path])
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"cached load took {elapsed:.2f} s"
    assert again.equals(frame)
    assert offline_download == []


@needs_system_db
def test_built_corpus_is_found_as_an_nltk_corpus_next_time(
    vocabulary_from_fallback, tmp_path, offline_download
):
    _, data_dir, _ = vocabulary_from_fallback
    reader, source = wordnet.open_wordnet(
        data_dir / "nltk_data", nltk_paths=[tmp_path], system_dirs=[tmp_path]
    )
    assert source.startswith("nltk corpus")
    assert reader.synset("dog.n.01").lemmas()[0].name() == "dog"
    assert offline_download == []


@needs_system_db
def test_damaged_cache_is_rebuilt(vocabulary_from_fallback, db_copy, tmp_path, offline_download):
    data_dir = tmp_path / "data"
    (data_dir / "cache").mkdir(parents=True)
    (data_dir / "cache" / wordnet.CACHE_FILE).write_bytes(b"not parquet")
    frame = load(data_dir, nltk_paths=[tmp_path / "none"], system_dirs=[db_copy])
    assert len(frame) == len(vocabulary_from_fallback[0])


def test_error_names_all_three_remedies(tmp_path, offline_download):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WordNetUnavailableError) as excinfo:
        load(tmp_path / "data", nltk_paths=[empty], system_dirs=[empty])
    message = str(excinfo.value)
    assert offline_download, "the download must have been attempted"
    assert "nltk.downloader" in message and "NLTK_DATA" in message
    assert "network" in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message and "WNSEARCHDIR" in message
    assert "simulated: network unreachable" in message
    assert f"{empty}: missing data.noun" in message
    assert not (tmp_path / "data" / "cache" / wordnet.CACHE_FILE).exists()


def test_partial_system_database_is_reported(tmp_path, offline_download):
    partial = tmp_path / "dict"
    partial.mkdir()
    (partial / "data.noun").write_text("")
    with pytest.raises(WordNetUnavailableError, match="missing index.noun, index.sense"):
        load(tmp_path / "data", nltk_paths=[tmp_path], system_dirs=[partial], download=True)
