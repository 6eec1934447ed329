"""A study's contrasts (weighted sums of FIDs paired by seed): checked in the study file before any job."""

import pytest

from dimr import studies

BODY = {"base": {"recipe": "tiny-fmnist", "preset": "tiny-uvit"}}


def study_with(contrasts: dict) -> dict:
    return {"title": "t", "scales": {"tiny": BODY}, "variants": {"a": {}, "b": {}, "c": {}},
            "contrasts": contrasts}


def test_a_contrast_naming_variants_with_weights_summing_to_zero_is_accepted(tmp_path):
    ok = {"b-a": {"label": "b − a", "terms": {"b": 1, "a": -1}, "expect": "negative", "claim": "§1"},
          "mid": {"label": "b against the mean of a and c", "terms": {"b": 1, "a": -0.5, "c": -0.5}}}
    assert studies.validate_study(study_with(ok), tmp_path / "s.yaml")["contrasts"] == ok


@pytest.mark.parametrize("contrast, message", [
    ({"label": "x", "terms": {"b": 1, "z": -1}}, "contrasts.x.terms': 'z' is not a variant"),
    ({"label": "x", "terms": {"b": 1, "a": -2}}, "the weights sum to -1, not 0"),
    ({"label": "x", "terms": {"b": 1}}, "needs at least 2 entries, has 1"),  # one term compares nothing
    ({"terms": {"b": 1, "a": -1}}, "'label' is a required property"),
    ({"label": "x", "terms": {"b": 1, "a": -1}, "expect": "lower"}, "is not one of ['negative', 'positive']"),
    ({"label": "x", "terms": {"b": "one", "a": -1}}, "is not of type 'number'"),
])
def test_a_bad_contrast_is_named_with_its_key(tmp_path, contrast, message):
    with pytest.raises(studies.ConfigError, match="s.yaml") as e:
        studies.validate_study(study_with({"x": contrast}), tmp_path / "s.yaml")
    assert message in str(e.value), str(e.value)
