"""The refit policy's rule as a function: every trigger, its threshold, and how changes are counted."""

import os

import pytest

from tac_pipeline.drops.refit import Changes, DropNow, FitRecord, compare, decide, image_state
from tac_pipeline.drops.settings import DatasetSettings, fit_settings


def _record(settings=None, **kw) -> FitRecord:
    base = {
        "run_id": "0123456789abcdef",
        "at": 1_765_000_000.0,
        "encoder": "enc",
        "nouns": "nouns",
        "settings": fit_settings(settings or DatasetSettings()),
        "drop_digest": "ab",
        "images": 100,
    }
    return FitRecord(**{**base, **kw})


def _state(n: int, start: int = 0) -> dict:
    return {f"img{i}": ("fp", f"c{i}") for i in range(start, start + n)}


def _now(images, **settings) -> DropNow:
    return DropNow("enc", "nouns", DatasetSettings(**settings), images)


def test_assign_when_little_changed_and_the_reason_says_so():
    decision = decide(_record(), _now(_state(103)), _state(100), (3, 0))
    assert decision.kind == "assign"
    assert decision.reason == (
        "assigned 3 new images to the fit of run 01234567 of 2025-12-06 05:46 UTC "
        "(3 % of the fitted set changed since; novel 0 %)"
    )


@pytest.mark.parametrize(
    "now, fitted, novel, settings, kind, words",
    [
        (_state(119), _state(100), None, {}, "assign", "19 new images"),
        (_state(120), _state(100), None, {}, "fit", "20 % of the images are new"),
        (_state(110), _state(100), None, {"refit_changed_share": 0.1}, "fit", "refit_changed_share = 0.1"),
        (_state(50), _state(100), None, {}, "assign", "0 new images"),  # removals alone never refit
        (_state(103), _state(100), (10, 3), {}, "fit", "30 % of the 10 images assigned since the last fit"),
        (_state(103), _state(100), (10, 2), {}, "assign", "novel 20 %"),
        (_state(200), _state(100), (10, 9), {"refit": "never"}, "assign", 'refit = "never"'),
        (_state(100), _state(100), None, {"refit": "always"}, "fit", 'refit = "always"'),
        (_state(100), None, None, {}, "fit", "not on record"),
    ],
)
def test_the_thresholds_and_modes(now, fitted, novel, settings, kind, words):
    decision = decide(_record(DatasetSettings(**settings)), _now(now, **settings), fitted, novel)
    assert decision.kind == kind and words in decision.reason, decision.reason


def test_what_makes_a_fit_whatever_changed():
    now = _now(_state(100))
    assert "no fit yet" in decide(None, now, None).reason
    assert "REFIT=1" in decide(_record(), now, _state(100), force=True).reason
    encoder = decide(_record(encoder="other"), _now(_state(100), refit="never"), _state(100))
    assert encoder.kind == "fit" and "the encoder changed since the fit (other -> enc)" in encoder.reason
    assert "the nouns changed" in decide(_record(nouns="old"), now, _state(100)).reason
    changed = decide(_record(), _now(_state(100), seed=3), _state(100))
    assert changed.kind == "fit" and "dataset.toml changed since the fit (seed)" in changed.reason
    # The policy's own fields are not fit settings.
    same = decide(_record(), _now(_state(100), refit_novel_share=0.5), _state(100))
    assert same.kind == "assign"


def test_a_touched_file_is_changed_only_when_its_bytes_differ(tmp_path):
    drop = tmp_path / "drop"
    (drop / "cat").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (drop / "cat" / name).write_bytes(name.encode())
    from tac_pipeline.drops.manifest import drop_manifest
    from tac_pipeline.encoders.incremental import file_sha256

    contents = {f"cat/{n}": file_sha256(drop / "cat" / n) for n in ("a.png", "b.png")}
    fitted = image_state(drop, drop_manifest(drop).entries, contents)
    os.utime(drop / "cat" / "a.png", (1, 1))  # touched, same bytes
    (drop / "cat" / "b.png").write_bytes(b"new bytes")  # rewritten
    (drop / "cat" / "notes.txt").write_text("not an image")
    now = image_state(drop, drop_manifest(drop).entries)
    assert set(now) == {"cat/a.png", "cat/b.png"}
    changes = compare(fitted, now, lambda key: file_sha256(drop / key))
    assert changes == Changes(added=0, changed=1, removed=0, fitted=2)
