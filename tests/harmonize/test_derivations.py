"""The derivation registry: one place declares a method, and everything else reads it."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.harmonize import derivations
from ctdc_harmonizer.harmonize.derivations import Candidate, bin_numbers, numbers
from ctdc_harmonizer.mapping import partner_yaml
from ctdc_harmonizer.mapping.spec import DeriveSource

CODEBOOK = default_codebook()


def test_the_mapping_readme_documents_every_registered_method(repo_root):
    """The data officers' table of methods (mappings/README.md) is the registry, no more."""
    text = (repo_root / "mappings" / "README.md").read_text(encoding="utf-8")
    documented = set()
    for variables, name in re.findall(r"^\| ([\w, ]+) \| `(\w+)` \|", text, flags=re.M):
        documented |= {(v.strip(), name) for v in variables.split(",")}
    registered = {(v, m.name) for m in derivations.REGISTRY.values() for v in m.variables}
    assert documented == registered


def test_the_derive_section_is_built_from_the_registry():
    model = partner_yaml.DeriveModel
    assert list(model.model_fields) == derivations.derivable_variables(CODEBOOK)
    # The codebook's required variable needs a source; the others may be left out.
    assert model.model_fields["yearOfRegistration"].is_required()
    assert not model.model_fields["ageBroad"].is_required()


def test_a_new_method_is_one_registration(monkeypatch):
    """Declared once, the method is accepted by partner.yaml's validation and implemented."""
    monkeypatch.setattr(derivations, "REGISTRY", dict(derivations.REGISTRY))

    def weeks(work, source, variable):
        count, _ = numbers(work.frame[source.field])
        return Candidate(bin_numbers(count / 4, work.codebook.bins(variable)))

    derivations.method("weeks", ("traffickMonths",))(weeks)
    model = partner_yaml._derive_model()
    derive = model.model_validate(
        {
            "yearOfRegistration": [{"method": "year", "field": "y"}],
            "traffickMonths": [{"method": "weeks", "field": "w"}],
        }
    )
    assert derive.traffickMonths[0].method == "weeks"
    with pytest.raises(ValueError, match="weeks"):  # not a method of another variable
        model.model_validate(
            {"yearOfRegistration": [{"method": "weeks", "field": "y"}], "traffickMonths": []}
        )
    work = derivations.Derivation(pd.DataFrame({"w": ["8", "60", None]}), None, CODEBOOK)
    (candidate,) = derivations.derive("traffickMonths", (DeriveSource("weeks", "w"),), work)
    assert candidate.values.tolist()[:2] == ["0–12 (0-1 yr)", "13–24 (1-2 yrs)"]


def test_a_reference_is_required_exactly_where_the_method_needs_one():
    model = partner_yaml.DeriveModel
    year = [{"method": "date", "field": "registered"}]
    with pytest.raises(ValueError, match="needs 'reference'"):
        model.model_validate(
            {"yearOfRegistration": year, "ageBroad": [{"method": "birthdate", "field": "b"}]}
        )
    with pytest.raises(ValueError, match="takes no 'reference'"):
        model.model_validate(
            {"yearOfRegistration": [{"method": "date", "field": "r", "reference": "x"}]}
        )


def test_bins_include_both_ends_and_leave_gaps_empty():
    bins = CODEBOOK.bins("ageBroad")
    values = pd.Series([0, 8, 9, 17, 18, 48, 130, None, 8.5], dtype="Float64")
    binned = bin_numbers(values, bins).tolist()
    assert binned[:6] == ["0–8", "0–8", "9–17", "9–17", "18–20", "48+"]
    assert binned[6] == "48+"  # open-ended; ages over 120 are refused before binning
    assert pd.isna(binned[7]) and pd.isna(binned[8])


def test_numbers_flag_present_but_unusable_values():
    values = pd.Series(["12", "-1", "1.5", "<invalid>", "x", None], dtype="string")
    parsed, invalid = numbers(values)
    assert parsed.tolist()[0] == 12 and pd.isna(parsed.tolist()[1])
    assert invalid.tolist() == [False, True, True, True, True, False]


def test_birthdate_fields_are_the_methods_computed_at_read(repo_root):
    from ctdc_harmonizer.mapping.partner import load_partner

    config = load_partner(repo_root / "mappings" / "iom")
    assert derivations.birthdate_fields(config) == {"mimosa_date_of_birth"}
