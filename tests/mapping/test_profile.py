"""`ctdc profile`: field statistics and a mapping template, never an identifying value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import cli, samples
from ctdc_harmonizer.ingest.extract import read_raw
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.mapping.partner import available_partners, load_partner
from ctdc_harmonizer.mapping.profile import LISTABLE_ROLES, MIN_COUNT
from ctdc_harmonizer.mapping.spec import PARTNER_FILE
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.samples import ctdc_legacy

SECRET_ROLES = {"identifier", "free_text", "record_id", "date"}
PROFILED = [p for p in samples.available() if p in available_partners(mappings_dir())]


def run_profile(landing: Path, partner: str, out: Path, mappings: Path | None = None) -> dict:
    argv = ["profile", "--landing", str(landing), "--partner", partner, "--out", str(out)]
    if mappings:
        argv += ["--mappings", str(mappings)]
    assert cli.main(argv) == 0
    return json.loads((out / partner / "profile.json").read_text(encoding="utf-8"))


def cell_texts(series: pd.Series) -> set[str]:
    text = series.dropna().astype(str).str.strip()
    text = text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True)
    return set(text[text != ""])


def extract_values(partner: str, landing: Path) -> tuple[set[str], dict[str, pd.Series]]:
    """(values of identifier, free-text, record-id, date and undeclared columns; the cells of
    every listable field), straight from the generated files."""
    config = load_partner(mappings_dir() / partner)
    roles = {f.name: f.role for f in config.fields}
    secret: set[str] = set()
    listable: dict[str, list[pd.Series]] = {}
    for path in find_extract_files(config, landing):
        raw = read_raw(config, path).frame
        raw.columns = [str(c).strip() for c in raw.columns]
        for column in raw.columns:
            role = roles.get(column)
            if role is None or role in SECRET_ROLES:
                secret |= cell_texts(raw[column])
            if role == "date":
                stamps = pd.to_datetime(raw[column], errors="coerce", format="mixed")
                secret |= cell_texts(stamps.dt.strftime("%Y-%m-%d"))
            elif role in LISTABLE_ROLES:
                listable.setdefault(column, []).append(raw[column])
    return secret, {k: pd.concat(v, ignore_index=True) for k, v in listable.items()}


def output_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def output_cells(out: Path) -> set[str]:
    cells: set[str] = set()
    for path in output_files(out):
        if path.suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            cells |= set(table.columns) | set(table.to_numpy().ravel().tolist())
    return cells


def mapping_text(partner: str) -> str:
    folder = mappings_dir() / partner
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file())


@pytest.fixture(scope="module", params=PROFILED)
def profiled(request, tmp_path_factory):
    partner = request.param
    base = tmp_path_factory.mktemp(f"profile_{partner}")
    samples.generate(partner, base / "land", 400, 2025)
    summary = run_profile(base / "land", partner, base / "out")
    return partner, base / "land", base / "out", summary


def test_case_management_is_profiled():
    assert "case_management" in PROFILED


def test_profile_and_template_are_written(profiled):
    partner, landing, out, summary = profiled
    folder = out / partner
    for name in ("profile.csv", "profile_values.csv", "profile.json"):
        assert (folder / name).is_file()
    for name in (PARTNER_FILE, "fields.csv", "values.csv"):
        assert (folder / "mapping_template" / name).is_file()
    profile = pd.read_csv(folder / "profile.csv", keep_default_na=False)
    config = load_partner(mappings_dir() / partner)
    columns = set()
    for path in find_extract_files(config, landing):
        raw = read_raw(config, path).frame
        columns |= {str(c).strip() for c in raw.columns}
    assert columns <= set(profile["field"])
    assert summary["rows"] == int(profile["rows"].max())
    assert set(profile["type"]) <= {"empty", "integer", "decimal", "date", "text", "coded", ""}
    template_fields = pd.read_csv(folder / "mapping_template" / "fields.csv", keep_default_na=False)
    assert columns <= set(template_fields["field"])
    declared = {f.name: f.role for f in config.fields}
    known = template_fields[template_fields["field"].isin(declared)]
    assert (known["role"] == known["field"].map(declared)).all()
    assert (template_fields.loc[~template_fields["field"].isin(declared), "role"] == "").all()
    # The template is a valid mapping folder once its roles are decided.
    assert (profile.loc[profile["values_listed"], "role"].isin(LISTABLE_ROLES)).all()


def test_no_identifying_value_in_any_output(profiled):
    partner, landing, out, summary = profiled
    secret, listable = extract_values(partner, landing)
    legit = set().union(*(cell_texts(v) for v in listable.values())) if listable else set()
    known = mapping_text(partner)
    secret = {s for s in secret - legit if s not in known}
    assert not secret & output_cells(out), "an identifier, note, date or undeclared value leaked"
    text = "\n".join(p.read_text(encoding="utf-8") for p in output_files(out))
    long_secrets = [s for s in secret if len(s) >= 8]
    assert not [s for s in long_secrets if s in text]
    assert not {s for s in secret if len(s) >= 3} & set(json.dumps(summary).split('"'))


def test_rare_values_are_hidden(profiled):
    partner, landing, out, summary = profiled
    values = pd.read_csv(out / partner / "profile_values.csv", keep_default_na=False)
    listed = values[~values["value"].str.startswith("<")]
    assert (listed["count"] >= MIN_COUNT).all()
    config = load_partner(mappings_dir() / partner)
    _, listable = extract_values(partner, landing)
    nulls = set(config.null_values)
    for field, cells in listable.items():
        if config.field(field).multi:
            continue  # counted per token, checked by the count test above
        text = cells.dropna().astype(str).str.strip()
        counts = text[~text.isin(nulls)].value_counts()
        rare = set(counts[counts < MIN_COUNT].index)
        assert not rare & set(listed.loc[listed["field"] == field, "value"])


def test_rare_and_undeclared_values_on_a_crafted_extract(tmp_path):
    landing = tmp_path / "land"
    ctdc_legacy.generate(landing, 200, 3)
    extra = pd.DataFrame([dict.fromkeys(ctdc_legacy.COLUMNS, "-99") for _ in range(7)])
    extra["yearOfRegistration"] = "2016"
    extra["gender"] = ["Transgender"] * 3 + ["Female"] * 4
    extra["caseworker_note"] = "Survivor met at the Greyford bus station"
    extra.to_csv(landing / "ctdc_legacy" / "ctdc_global_extra.csv", index=False)
    run_profile(landing, "ctdc_legacy", tmp_path / "out")
    folder = tmp_path / "out" / "ctdc_legacy"
    values = pd.read_csv(folder / "profile_values.csv", keep_default_na=False)
    gender = values[values["field"] == "gender"]
    assert "Transgender" not in set(gender["value"])
    assert gender["value"].str.startswith("<").any()
    profile = pd.read_csv(folder / "profile.csv", keep_default_na=False).set_index("field")
    assert not profile.loc["caseworker_note", "declared"]
    assert not profile.loc["caseworker_note", "values_listed"]
    assert profile.loc["caseworker_note", "non_empty"] == 7
    text = "\n".join(p.read_text(encoding="utf-8") for p in output_files(tmp_path / "out"))
    assert "Greyford" not in text
    fields = pd.read_csv(folder / "mapping_template" / "fields.csv", keep_default_na=False)
    assert fields.set_index("field").loc["caseworker_note", "role"] == ""
    # The template lists every distinct coded value, known ones with their current mapping.
    template = pd.read_csv(folder / "mapping_template" / "values.csv", keep_default_na=False)
    row = template[(template["field"] == "gender") & (template["source_value"] == "Transgender")]
    assert row["variable"].tolist() == ["gender"]


def test_template_lists_new_coded_values_with_an_empty_target(tmp_path):
    landing = tmp_path / "land"
    ctdc_legacy.generate(landing, 100, 4)
    extra = pd.DataFrame([dict.fromkeys(ctdc_legacy.COLUMNS, "-99") for _ in range(2)])
    extra["yearOfRegistration"] = "2016"
    extra["gender"] = "Nonbinary"
    extra.to_csv(landing / "ctdc_legacy" / "ctdc_global_extra.csv", index=False)
    summary = run_profile(landing, "ctdc_legacy", tmp_path / "out")
    template = pd.read_csv(
        tmp_path / "out" / "ctdc_legacy" / "mapping_template" / "values.csv", keep_default_na=False
    )
    row = template[(template["field"] == "gender") & (template["source_value"] == "Nonbinary")]
    assert row[["variable", "value"]].to_numpy().tolist() == [["", ""]]
    assert row["note"].iloc[0].startswith("TO MAP: seen 2 time")
    assert summary["mapping_template"]["values_to_map"] == 1


def test_partner_without_a_mapping_folder(tmp_path):
    """A brand-new partner: every column listed with an empty role, no value listed."""
    landing = tmp_path / "land"
    samples.generate("case_management", landing, 60, 9)
    shutil.move(landing / "case_management", landing / "brand_new")
    summary = run_profile(landing, "brand_new", tmp_path / "out", mappings=tmp_path / "none")
    folder = tmp_path / "out" / "brand_new"
    assert summary["mapping_folder"] is None
    assert pd.read_csv(folder / "profile_values.csv").empty
    fields = pd.read_csv(folder / "mapping_template" / "fields.csv", keep_default_na=False)
    assert "prs_FirstName" in set(fields["field"])
    assert (fields["role"] == "").all()
    assert "partner: brand_new" in (folder / "mapping_template" / PARTNER_FILE).read_text()
