"""The WordNet noun vocabulary (docs/METHOD.md §2), loaded through nltk, with an offline fallback.

Two vocabularies, each a DataFrame with columns ``noun``, ``synset`` (e.g. ``dog.n.01``) and ``gloss``:

- ``lemmas`` (the default; the list the TAC authors embed, their ``WordNetNouns.csv``): every lemma of every
  WordNet 3.0 noun synset, in ``data.noun`` order, written as WordNet writes it (``physical_entity``,
  ``French_leave``), duplicates kept (``cat`` 7 times): 146,347 rows, 119,034 distinct words.
- ``synsets``: one row per synset, its first lemma with ``_`` read as a space: 82,115 rows, 67,893 distinct.

Sources, tried in order:

1. nltk's ``wordnet`` corpus wherever nltk looks for data (``nltk.data.path``, ``$NLTK_DATA``) or in
   the caller's ``nltk_dir``;
2. ``nltk.download("wordnet")`` into ``nltk_dir``, run in a child process with a timeout so a
   dead network can never hang the caller;
3. a system WordNet 3.0 database (Debian/Ubuntu ``wordnet-base`` + ``wordnet-sense-index``, found in the
   caller's ``system_dirs`` or ``/usr/share/wordnet``), copied into ``<nltk_dir>/corpora/wordnet`` with the
   ``lexnames`` file nltk needs and those packages lack. Files are copied, not linked: nltk refuses paths that
   leave its data folders through symlinks.

The parsed vocabulary is cached as Parquet in the caller's ``cache_dir`` so later loads take milliseconds. The
pipeline passes its folders (:meth:`tac_pipeline.defs.resources.data.TacDataResource.noun_vocabulary`); this
module knows no data root and reads no environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from tac_pipeline.common.atomic import publish_folder, staging_folder, write_parquet_atomically
from tac_pipeline.common.tables import read_parquet
from tac_pipeline.encoders.vocabularies import DEFAULT_VOCABULARY, check_vocabulary

log = logging.getLogger(__name__)

#: Rows of each vocabulary for WordNet 3.0.
WORDNET_30_ROWS = {"lemmas": 146_347, "synsets": 82_115}

#: The 45 lexicographer files of WordNet 3.0, numbered by position (lexnames(5WN)). nltk's reader needs
#: them as a ``lexnames`` file, which the Debian packages do not ship.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

#: Files of the system database nltk's reader opens (``index.sense`` comes from wordnet-sense-index).
_REQUIRED_DB_FILES = ("data.noun", "index.noun", "index.sense", "noun.exc")

#: The cache holds the ``lemmas`` list; ``synsets`` is derived from it (each synset's first row).
CACHE_FILE = "wordnet_noun_lemmas.parquet"
VOCABULARY_COLUMNS = ("noun", "synset", "gloss")


class WordNetUnavailableError(RuntimeError):
    """No source of WordNet worked; the message names every remedy."""


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line, as WordNet distributes it."""
    return "".join(
        f"{number:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
        for number, name in enumerate(LEXNAMES)
    )


#: System WordNet 3.0 databases: Debian/Ubuntu's ``wordnet-base``, then Princeton's own ``make install``.
SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict")


def system_wordnet_dirs() -> list[Path]:
    """Where a system WordNet database may live by default: :data:`SYSTEM_WORDNET_DIRS` (the pipeline puts
    ``$WNSEARCHDIR`` first, :class:`tac_pipeline.config.TacConfig`)."""
    return [Path(d) for d in SYSTEM_WORDNET_DIRS]


def load_noun_vocabulary(
    cache_dir: str | os.PathLike[str] | None = None,
    vocabulary: str = DEFAULT_VOCABULARY,
    *,
    nltk_dir: str | os.PathLike[str] | None = None,
    nltk_paths: Sequence[str | os.PathLike[str]] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
    download: bool = True,
    download_timeout: float = 20.0,
    use_cache: bool = True,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Return a WordNet noun vocabulary as a DataFrame with columns ``noun``, ``synset``, ``gloss``.

    Parameters
    ----------
    cache_dir : the folder of the Parquet cache of the parsed vocabulary (None: no cache).
    nltk_dir : where nltk's corpus is downloaded or built from a system database (default ``~/nltk_data``,
        nltk's own); it is always searched too.
    vocabulary : ``"lemmas"`` (default: every lemma of every noun synset, as the TAC authors embed them) or
        ``"synsets"`` (one row per synset, first lemma, ``_`` as a space).
    nltk_paths : folders searched for nltk's ``corpora/wordnet`` (default: nltk's own search path).
    system_dirs : folders searched for a system WordNet database (default :func:`system_wordnet_dirs`).
    download : whether to try ``nltk.download`` when no nltk corpus is found.
    download_timeout : seconds after which the download attempt is abandoned.
    use_cache : read and write the Parquet cache.

    Returns
    -------
    DataFrame in ``data.noun`` order (synsets by offset, each synset's lemmas as listed): shape (146,347, 3)
    for ``lemmas`` and (82,115, 3) for ``synsets`` with WordNet 3.0.
    """
    logger = logger or log
    check_vocabulary(vocabulary)
    lemmas = _load_lemmas(
        cache_dir,
        nltk_dir,
        nltk_paths=nltk_paths,
        system_dirs=system_dirs,
        download=download,
        download_timeout=download_timeout,
        use_cache=use_cache,
        logger=logger,
    )
    return lemmas if vocabulary == "lemmas" else synset_vocabulary(lemmas)


def synset_vocabulary(lemmas: pd.DataFrame) -> pd.DataFrame:
    """One row per synset from the ``lemmas`` list: its first lemma, ``_`` read as a space."""
    first = lemmas.drop_duplicates("synset", keep="first").reset_index(drop=True)
    first["noun"] = first["noun"].str.replace("_", " ", regex=False)
    return first


def _load_lemmas(
    cache_dir, nltk_dir, *, nltk_paths, system_dirs, download, download_timeout, use_cache, logger
):
    use_cache = use_cache and cache_dir is not None
    cache = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    if use_cache and cache.is_file():
        try:
            table = read_parquet(cache)
            if tuple(table.column_names) == VOCABULARY_COLUMNS and table.num_rows > 0:
                return table.to_pandas()
        except (OSError, pa.ArrowException) as exc:  # a damaged cache is rebuilt, never trusted
            logger.warning("Ignoring unreadable WordNet cache %s (%s); rebuilding it.", cache, exc)

    reader, source = open_wordnet(
        nltk_dir,
        nltk_paths=nltk_paths,
        system_dirs=system_dirs,
        download=download,
        download_timeout=download_timeout,
        logger=logger,
    )
    # all_synsets reads data.noun line by line (offset order); lemma names come as the file writes them.
    rows = [
        (lemma.name(), synset.name(), synset.definition())
        for synset in reader.all_synsets("n")
        for lemma in synset.lemmas()
    ]
    frame = pd.DataFrame(rows, columns=list(VOCABULARY_COLUMNS))
    if len(frame) != WORDNET_30_ROWS["lemmas"]:
        logger.warning(
            "WordNet from %s has %d noun lemmas, not the %d of WordNet 3.0 that TAC's figures use.",
            source, len(frame), WORDNET_30_ROWS["lemmas"],
        )  # fmt: skip
    logger.info("Loaded %d WordNet noun lemmas from %s.", len(frame), source)
    if use_cache:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        write_parquet_atomically(
            table.replace_schema_metadata({**(table.schema.metadata or {}), "source": source}), cache
        )
    return frame


def open_wordnet(
    nltk_dir: str | os.PathLike[str] | None = None,
    *,
    nltk_paths: Sequence[str | os.PathLike[str]] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
    download: bool = True,
    download_timeout: float = 20.0,
    logger: logging.Logger | None = None,
):
    """Open an nltk ``WordNetCorpusReader`` from the first source that works.

    Returns ``(reader, source)`` where ``source`` describes where the corpus came from.
    Raises :class:`WordNetUnavailableError` naming all three remedies when none works.
    """
    logger = logger or log
    own_nltk_dir = Path(nltk_dir) if nltk_dir is not None else Path.home() / "nltk_data"
    search = [Path(p) for p in (nltk_paths if nltk_paths is not None else default_nltk_paths())]
    search.append(own_nltk_dir)
    tried: list[str] = []

    found = _find_nltk_wordnet(search)
    if found is not None:
        return _reader(found, search), f"nltk corpus at {found}"
    tried.append(f"nltk's wordnet corpus: not found in {', '.join(map(str, search))}")

    if download:
        problem = _nltk_download(own_nltk_dir, download_timeout)
        if problem is None:
            found = _find_nltk_wordnet([own_nltk_dir])
            if found is not None:
                logger.info("Downloaded nltk's wordnet corpus into %s.", own_nltk_dir)
                return _reader(found, [own_nltk_dir]), f"nltk download into {own_nltk_dir}"
            problem = "the download reported success but left no corpus"
        tried.append(f"nltk.download('wordnet'): {problem}")
    else:
        tried.append("nltk.download('wordnet'): not attempted (download disabled)")

    for system_dir in [Path(p) for p in (system_dirs if system_dirs is not None else system_wordnet_dirs())]:
        missing = [name for name in _REQUIRED_DB_FILES if not (system_dir / name).is_file()]
        if missing:
            tried.append(f"system WordNet at {system_dir}: missing {', '.join(missing)}")
            continue
        corpus = build_nltk_corpus(system_dir, own_nltk_dir)
        logger.info("Built an nltk WordNet corpus at %s from the system database %s.", corpus, system_dir)
        return _reader(corpus, [own_nltk_dir]), f"system WordNet database {system_dir}"

    raise WordNetUnavailableError(
        "WordNet is not available, so the noun vocabulary cannot be built. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nAny one of these fixes it:\n"
        "  1. install nltk's corpus: python -m nltk.downloader -d ~/nltk_data wordnet "
        "(or set $NLTK_DATA to a folder holding corpora/wordnet);\n"
        "  2. allow network access so nltk.download('wordnet') can fetch it into "
        f"{own_nltk_dir};\n"
        "  3. install the system database: sudo apt-get install wordnet-base wordnet-sense-index "
        "(or set $WNSEARCHDIR to a WordNet 3.0 'dict' folder holding data.noun, index.noun and index.sense)."
    )


def build_nltk_corpus(system_dir: str | os.PathLike[str], nltk_data_dir: str | os.PathLike[str]) -> Path:
    """Copy a system WordNet database into ``<nltk_data_dir>/corpora/wordnet`` and add ``lexnames``.

    Regular files are copied (nltk rejects paths that reach outside its data folders through symlinks);
    the copy goes to a temporary folder first and is renamed into place, so a crash never leaves a
    half-built corpus that later loads would trust.
    """
    target = Path(nltk_data_dir) / "corpora" / "wordnet"
    if (target / "lexnames").is_file() and all((target / n).is_file() for n in _REQUIRED_DB_FILES):
        return target
    with staging_folder(target) as staging:
        for source in Path(system_dir).iterdir():
            if source.is_file():  # follows a packaged symlink to its file, skips bin/ and pixmaps/
                shutil.copyfile(source, staging / source.name)
        if not (staging / "lexnames").is_file():
            (staging / "lexnames").write_text(lexnames_text(), encoding="ascii")
        publish_folder(staging, target)
    return target


def default_nltk_paths() -> list[str]:
    """nltk's own search path (which holds ``$NLTK_DATA``, read by nltk at import)."""
    import nltk

    return [str(p) for p in nltk.data.path]


def _find_nltk_wordnet(search: Sequence[Path]) -> Path | None:
    """The first ``corpora/wordnet`` folder (or unpacked ``wordnet.zip``) under the given nltk data dirs."""
    for base in search:
        folder = base / "corpora" / "wordnet"
        if (folder / "data.noun").is_file() and (folder / "lexnames").is_file():
            return folder
        archive = base / "corpora" / "wordnet.zip"
        if archive.is_file():
            return _unpack_zip(archive)
    return None


def _unpack_zip(archive: Path) -> Path | None:
    # nltk.download leaves wordnet.zip; unpacking it once makes every later open a plain folder read.
    import zipfile

    folder = archive.with_suffix("")
    if (folder / "data.noun").is_file():
        return folder
    with staging_folder(folder) as staging:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    name = Path(member.filename)
                    # Only plain files directly inside wordnet/: no absolute paths, no traversal.
                    if member.is_dir() or len(name.parts) != 2 or name.parts[0] != "wordnet":
                        continue
                    (staging / name.name).write_bytes(zf.read(member))
        except (OSError, zipfile.BadZipFile) as exc:
            log.warning("Ignoring unreadable %s (%s).", archive, exc)
            return None
        if not (staging / "data.noun").is_file():
            return None
        if not (staging / "lexnames").is_file():
            (staging / "lexnames").write_text(lexnames_text(), encoding="ascii")
        publish_folder(staging, folder)
    return folder


def _reader(corpus: Path, trusted_roots: Sequence[Path]):
    import nltk
    from nltk.corpus.reader import WordNetCorpusReader

    # nltk only opens corpora inside its data path; register the folders we chose to trust.
    for root in trusted_roots:
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return WordNetCorpusReader(str(corpus), None)


_DOWNLOAD_SCRIPT = (
    "import sys, nltk\n"
    "ok = nltk.download('wordnet', download_dir=sys.argv[1], quiet=True, raise_on_error=True)\n"
    "sys.exit(0 if ok else 1)\n"
)


def _nltk_download(download_dir: Path, timeout: float) -> str | None:
    """Run ``nltk.download('wordnet')`` in a child process; ``None`` on success, else why it failed.

    A child process can be killed at the timeout, whereas a blocked socket read in this process could not.
    """
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _DOWNLOAD_SCRIPT, str(download_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:g} s (network unreachable?)"
    except OSError as exc:
        return f"could not start ({exc})"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return f"failed ({lines[-1] if lines else f'exit status {done.returncode}'})"
    return None
