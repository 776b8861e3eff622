"""Bad-input corpus, partner `hotline` (JSON lines, arrays, record id, withdrawals.csv)."""

from __future__ import annotations

import json
import os
import unicodedata

import pytest

from support.corpus import (
    CASE_NO,
    EMAIL,
    FORMULA_AT,
    FORMULA_LINK,
    HOTLINE_FILE,
    NAME,
    PHONE,
    Case,
    Env,
    JsonLines,
    case_ids,
    line,
    name_series,
    run_case,
)

P = "hotline"
FILE_AND = [f"'{P}'", HOTLINE_FILE]


def lines_file(env: Env) -> JsonLines:
    return JsonLines(env.path(P, HOTLINE_FILE))


def plant_reject(env: Env, records: list[dict], index: int) -> None:
    """A report from 2013, before the hotline contributed: rejected (year_out_of_range)."""
    records[index]["report_id"] = env.plant("HL-13-ZQ77410")
    records[index]["report_date"] = "2013-05-05T10:00:00"
    records[index]["caller_name"] = env.plant("Quillfeatherine Zorbacz")


def physical_line(env: Env, report_id: str) -> int:
    text = env.path(P, HOTLINE_FILE).read_bytes().decode("utf-8").lstrip("\ufeff")
    lines = text.replace("\r\n", "\n").split("\n")
    return next(i for i, x in enumerate(lines, start=1) if report_id in x)


def blank_lines(env: Env) -> None:
    j = lines_file(env)
    plant_reject(env, j.records, 30)
    lines = j.lines()
    lines[5:5] = ["", "   "]
    lines[20:20] = [""]
    j.write(lines)
    env.expect_rejected(HOTLINE_FILE, physical_line(env, "HL-13-ZQ77410"))


def crlf(env: Env) -> None:
    j = lines_file(env)
    plant_reject(env, j.records, 12)
    j.write(newline="\r\n")
    env.expect_rejected(HOTLINE_FILE, 13)


def bom(env: Env) -> None:
    path = env.path(P, HOTLINE_FILE)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def extra_key(env: Env) -> None:
    j = lines_file(env)
    passports = name_series(len(j.records), "Passqorb")
    for record, passport in zip(j.records, passports, strict=True):
        record["victim_passport"] = passport
    env.plant(*passports)
    j.write()


def missing_keys(env: Env) -> None:
    j = lines_file(env)
    for record in j.records[3:8]:
        record.pop("victim_gender")
        record.pop("industries")
    j.write()


def record_with_only_an_id(env: Env) -> None:
    j = lines_file(env)
    j.records[17] = {"report_id": "HL-24-0999999"}
    j.write()
    env.expect_rejected(HOTLINE_FILE, 18)


def nfd_citizenship(env: Env) -> None:
    j = lines_file(env)
    for i, country in zip((4, 9, 14), ("Türkiye", "Côte d'Ivoire", "Curaçao"), strict=True):
        j.records[i]["victim_citizenship"] = [unicodedata.normalize("NFD", country)]
    j.write()


def wrong_type(key: str, value, index: int):
    """One record whose value has the wrong JSON type: that row is rejected, not the file."""

    def mutate(env: Env) -> None:
        j = lines_file(env)
        j.records[index][key] = value
        j.records[index]["caller_name"] = env.plant(NAME)
        j.write()
        env.expect_rejected(HOTLINE_FILE, index + 1)

    return mutate


def malformed_line(env: Env) -> None:
    j = lines_file(env)
    lines = j.lines()
    lines[6] = f'{{"report_id": "HL-24-0000777", "caller_name": "{env.plant(NAME)}", "victim_'
    j.write(lines)


def trailing_garbage(env: Env) -> None:
    j = lines_file(env)
    j.write([*j.lines(), f"{env.plant('Zorbaxina')}}}"])


def nested_object(env: Env) -> None:
    j = lines_file(env)
    j.records[8]["industries"] = {"venue": env.plant(NAME), "phone": env.plant(PHONE)}
    j.write()


def json_array_file(env: Env) -> None:
    j = lines_file(env)
    j.records[2]["caller_name"] = env.plant(NAME)
    env.path(P, HOTLINE_FILE).write_text(json.dumps(j.records, indent=1), encoding="utf-8")


def not_utf8(env: Env) -> None:
    j = lines_file(env)
    lines = j.lines()
    path = env.path(P, HOTLINE_FILE)
    body = "\n".join(lines[:10]).encode() + b"\n"
    bad = lines[10].replace('"narrative": "', '"narrative": "Zorbax\xedna ')
    env.plant("Zorbaxína", "Zorbax\ufffdna")
    body += bad.encode("latin-1") + b"\n" + "\n".join(lines[11:]).encode() + b"\n"
    path.write_bytes(body)


def duplicate_key(env: Env) -> None:
    j = lines_file(env)
    lines = j.lines()
    lines[4] = lines[4][:-1] + f', "victim_gender": "{env.plant(NAME)}"}}'
    j.write(lines)


def in_field(key: str, value, index: int = 4):
    def mutate(env: Env) -> None:
        j = lines_file(env)
        j.records[index][key] = value
        for v in value if isinstance(value, list) else [value]:
            if v in (NAME, PHONE, EMAIL):
                env.plant(v)
        j.write()

    return mutate


def caller_names_shifted(env: Env) -> None:
    j = lines_file(env)
    names = name_series(len(j.records))
    for record, name in zip(j.records, names, strict=True):
        record["caller_name"] = name
        record["victim_gender"] = name
    env.plant(*names)
    j.write()


def formulas(env: Env) -> None:
    env.tolerate_unknown(P)
    j = lines_file(env)
    for record in j.records[:6]:
        record["trafficking_type"] = FORMULA_LINK
    for record in j.records[10:16]:
        record["industries"] = ["Construction", FORMULA_AT]
    env.allow_in_unmapped(FORMULA_LINK, FORMULA_AT)
    j.write()


def rare_unknowns(env: Env) -> None:
    env.tolerate_unknown(P)
    j = lines_file(env)
    j.records[3]["victim_gender"] = env.plant(NAME)
    j.records[5]["exploitation_country"] = env.plant(PHONE)
    j.records[7]["control_methods"] = ["Debt bondage", env.plant(EMAIL)]
    j.write()


def withdrawals_renamed(name: str):
    def mutate(env: Env) -> None:
        os.rename(env.path(P, "withdrawals.csv"), env.path(P, name))

    return mutate


def check_erased(result) -> None:
    folder = result.env.landing / P
    path = next(p for p in folder.iterdir() if p.name.casefold() == "withdrawals.csv")
    ids = {x.strip().strip('"') for x in path.read_text().splitlines()[1:] if x.strip()}
    records = JsonLines(result.env.path(P, HOTLINE_FILE)).records
    expected = sum(1 for r in records if r["report_id"] in ids)
    recon = json.loads((result.release_dir / "reconciliation.json").read_text())
    assert expected > 0
    assert recon["partners"][P]["totals"]["erased"] == expected, "withdrawals not applied"


def withdrawal_unknown_id(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    path.write_text(path.read_text(encoding="utf-8") + f"{env.plant(CASE_NO)}\n", encoding="utf-8")


def withdrawals_header_only(env: Env) -> None:
    env.path(P, "withdrawals.csv").write_text("record_id\n", encoding="utf-8")


def symlinked_extract(env: Env) -> None:
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / HOTLINE_FILE
    j = lines_file(env)
    j.records[3]["victim_gender"] = env.plant(NAME)
    j.path = target
    j.write()
    env.path(P, HOTLINE_FILE).unlink()
    env.path(P, HOTLINE_FILE).symlink_to(target)


def long_narrative(env: Env) -> None:
    """A 3 MB free-text answer on one line: longer than a reader's default block."""
    j = lines_file(env)
    j.records[20]["narrative"] = ("Zorblongnote " * 250_000).strip()
    env.plant("Zorblongnote")
    j.write()


CASES = [
    Case(
        id="hotline-blank-lines",
        partner=P,
        mutate=blank_lines,
        exit=0,
        promise="blank lines: rows stay physical",
    ),
    Case(id="hotline-crlf", partner=P, mutate=crlf, exit=0, promise="CRLF line ends read"),
    Case(id="hotline-utf8-bom", partner=P, mutate=bom, exit=0, promise="UTF-8 BOM read"),
    Case(
        id="hotline-extra-key",
        partner=P,
        mutate=extra_key,
        exit=0,
        promise="undeclared key never read",
    ),
    Case(
        id="hotline-missing-keys",
        partner=P,
        mutate=missing_keys,
        exit=0,
        promise="absent keys are missing values",
    ),
    Case(
        id="hotline-id-only-record",
        partner=P,
        mutate=record_with_only_an_id,
        exit=0,
        promise="rejected at line 18",
    ),
    Case(
        id="hotline-nfd-citizenship",
        partner=P,
        mutate=nfd_citizenship,
        exit=0,
        promise="NFD country names read",
    ),
    Case(
        id="hotline-string-for-list",
        partner=P,
        mutate=wrong_type("victim_citizenship", "Mexico", 10),
        exit=0,
        promise="string where a list is expected: that row rejected (line 11)",
    ),
    Case(
        id="hotline-epoch-date",
        partner=P,
        mutate=wrong_type("report_date", 1700000000, 12),
        exit=0,
        promise="epoch number for a date: that row rejected (line 13)",
    ),
    Case(
        id="hotline-object-for-string",
        partner=P,
        mutate=wrong_type("victim_gender", {"value": "Female"}, 14),
        exit=None,
        names=[*FILE_AND, line(15)],
        promise="object where a string is expected: row rejected or located error (open)",
    ),
    Case(
        id="hotline-malformed-line",
        partner=P,
        mutate=malformed_line,
        exit=1,
        names=[*FILE_AND, line(7)],
        promise="malformed JSON line: located error (line 7)",
    ),
    Case(
        id="hotline-trailing-garbage",
        partner=P,
        mutate=trailing_garbage,
        exit=1,
        names=[*FILE_AND, line(61)],
        promise="garbage last line: located error (line 61)",
    ),
    Case(
        id="hotline-nested-object",
        partner=P,
        mutate=nested_object,
        exit=None,
        names=[*FILE_AND, line(9)],
        promise="nested object: row rejected or located error (open)",
    ),
    Case(
        id="hotline-json-array-file",
        partner=P,
        mutate=json_array_file,
        exit=1,
        names=FILE_AND,
        promise="a JSON array instead of JSON lines: clear error",
    ),
    Case(
        id="hotline-not-utf8",
        partner=P,
        mutate=not_utf8,
        exit=None,
        names=[*FILE_AND, line(11)],
        promise="a Latin-1 byte in a dropped field (open): if refused, located (line 11)",
    ),
    Case(
        id="hotline-duplicate-key",
        partner=P,
        mutate=duplicate_key,
        exit=1,
        names=[*FILE_AND, line(5), "victim_gender"],
        promise="a key given twice in a record: located error, never the last value read",
    ),
    Case(
        id="hotline-name-in-coded",
        partner=P,
        mutate=in_field("victim_gender", NAME),
        exit=1,
        names=[f"'{P}'", "victim_gender"],
        promise="coverage gate never quotes a name",
    ),
    Case(
        id="hotline-phone-in-country",
        partner=P,
        mutate=in_field("exploitation_country", PHONE),
        exit=1,
        names=[f"'{P}'", "exploitation_country"],
        promise="coverage gate never quotes a phone number",
    ),
    Case(
        id="hotline-email-in-list",
        partner=P,
        mutate=in_field("control_methods", ["Debt bondage", EMAIL]),
        exit=1,
        names=[f"'{P}'", "control_methods"],
        promise="coverage gate never quotes an e-mail in a list",
    ),
    Case(
        id="hotline-caller-names-shifted",
        partner=P,
        mutate=caller_names_shifted,
        exit=1,
        names=[f"'{P}'", "victim_gender"],
        promise="names pasted into a coded field never reach the message",
    ),
    Case(
        id="hotline-symlinked-extract",
        partner=P,
        mutate=symlinked_extract,
        exit=1,
        names=FILE_AND,
        promise="extract symlinked from outside the landing refused",
    ),
    Case(
        id="hotline-3mb-line",
        partner=P,
        mutate=long_narrative,
        exit=None,
        names=[*FILE_AND, line(21)],
        promise="a 3 MB line (open): read in full, or a located error",
    ),
    Case(
        id="hotline-formulas-escaped",
        partner=P,
        mutate=formulas,
        exit=0,
        promise="formula values escaped",
    ),
    Case(
        id="hotline-rare-unknowns",
        partner=P,
        mutate=rare_unknowns,
        exit=0,
        promise="rare unknown values withheld",
    ),
    Case(
        id="hotline-withdrawals-upper-case",
        partner=P,
        mutate=withdrawals_renamed("WITHDRAWALS.CSV"),
        exit=0,
        check=check_erased,
        promise="WITHDRAWALS.CSV applied",
    ),
    Case(
        id="hotline-withdrawals-header-only",
        partner=P,
        mutate=withdrawals_header_only,
        exit=0,
        promise="an empty withdrawals list erases nobody",
    ),
    Case(
        id="hotline-withdrawal-unknown-id",
        partner=P,
        mutate=withdrawal_unknown_id,
        exit=1,
        names=[f"'{P}'", "withdrawals.csv"],
        promise="unmatched withdrawal is an error",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_hotline(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)
