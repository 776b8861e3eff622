"""Bad-input corpus, partner `ctdc_legacy` (two unquoted CSV deliveries, `-99`, no record id)."""

from __future__ import annotations

import pytest

from support.corpus import (
    FORMULA_CMD,
    FORMULA_LINK,
    LEGACY_2020,
    LEGACY_2021,
    NAME,
    PHONE,
    Case,
    CsvTable,
    Env,
    any_of,
    case_ids,
    line,
    run_case,
)

P = "ctdc_legacy"


def table(env: Env, name: str = LEGACY_2020) -> CsvTable:
    return CsvTable(env.path(P, name))


def raw_lines(env: Env, name: str = LEGACY_2020) -> list[str]:
    return env.path(P, name).read_text(encoding="utf-8").split("\n")


def write_raw(env: Env, lines: list[str], name: str = LEGACY_2020) -> None:
    env.path(P, name).write_text("\n".join(lines), encoding="utf-8")


def plant_reject(env: Env, t: CsvTable, row: int) -> None:
    """A registration year before the partner's range: rejected (year_out_of_range)."""
    t.set(row, "yearOfRegistration", "1999")


def bom_2021(env: Env) -> None:
    path = env.path(P, LEGACY_2021)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def padded_header(env: Env) -> None:
    t = table(env)
    t.header = [f"{h} " if i % 2 else f" {h}" for i, h in enumerate(t.header)]
    t.write()


def crlf(env: Env) -> None:
    t = table(env)
    plant_reject(env, t, 9)
    t.write(newline="\r\n")
    env.expect_rejected(LEGACY_2020, 11)


def blank_lines(env: Env) -> None:
    t = table(env)
    plant_reject(env, t, 30)
    t.write()
    lines = raw_lines(env)
    lines[4:4] = ["", ""]
    write_raw(env, lines)
    env.expect_rejected(LEGACY_2020, 34)


def blank_lines_2021(env: Env) -> None:
    lines = raw_lines(env, LEGACY_2021)
    lines[2:2] = [""]
    write_raw(env, lines, LEGACY_2021)


def too_many_fields(env: Env) -> None:
    lines = raw_lines(env)
    lines[5] = lines[5] + "," + env.plant(NAME)
    write_raw(env, lines)


def shifted_row(env: Env) -> None:
    lines = raw_lines(env)
    cells = lines[7].split(",")
    lines[7] = ",".join([cells[0], env.plant(NAME), *cells[1:]])
    write_raw(env, lines)


def too_few_fields(env: Env) -> None:
    lines = raw_lines(env, LEGACY_2021)
    lines[3] = ",".join(lines[3].split(",")[:10]) + "," + env.plant(NAME)
    write_raw(env, lines, LEGACY_2021)


def unclosed_quote(env: Env) -> None:
    lines = raw_lines(env)
    cells = lines[7].split(",")
    cells[2] = f'"{env.plant(NAME)}'
    lines[7] = ",".join(cells)
    write_raw(env, lines)


def duplicate_header(env: Env) -> None:
    """A second `gender` column appended, holding names."""
    t = table(env)
    t.header.append("gender")
    names = [f"Zorbgender{i}" for i in range(len(t.rows))]
    for r, name in zip(t.rows, names, strict=True):
        r.append(name)
    env.plant(*names)
    t.write()


def missing_required_column(env: Env) -> None:
    t = table(env, LEGACY_2021)
    j = t.col("citizenship")
    t.header.pop(j)
    for r in t.rows:
        r.pop(j)
    t.write()


def in_cell(column: str, value: str, name: str = LEGACY_2020, row: int = 6):
    def mutate(env: Env) -> None:
        t = table(env, name)
        t.set(row, column, env.plant(value))
        t.write()

    return mutate


def name_in_year(env: Env) -> None:
    t = table(env)
    t.set(12, "yearOfRegistration", env.plant(NAME))
    t.write()


def withdrawals_present(env: Env) -> None:
    env.path(P, "withdrawals.csv").write_text("record_id\nCTDC-ZQ-0042\n", encoding="utf-8")
    env.plant("CTDC-ZQ-0042")


def formulas(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    for i in range(6):
        t.set(i, "gender", FORMULA_LINK)
    for i in range(10, 16):
        t.set(i, "Datasource", FORMULA_CMD)
    env.allow_in_unmapped(FORMULA_LINK, FORMULA_CMD)
    t.write()


def rare_unknowns(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    t.set(3, "gender", env.plant(NAME))
    t.set(4, "citizenship", env.plant(PHONE))
    t.write()


def symlinked_2021(env: Env) -> None:
    import shutil

    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / LEGACY_2021
    shutil.move(env.path(P, LEGACY_2021), target)
    t = CsvTable(target)
    t.set(1, "gender", env.plant(NAME))
    t.write()
    env.path(P, LEGACY_2021).symlink_to(target)


FILE_2020 = [f"'{P}'", LEGACY_2020]
FILE_2021 = [f"'{P}'", LEGACY_2021]

CASES = [
    Case(id="legacy-utf8-bom-2021", partner=P, mutate=bom_2021, exit=0, promise="UTF-8 BOM read"),
    Case(
        id="legacy-header-padded",
        partner=P,
        mutate=padded_header,
        exit=0,
        promise="header whitespace tolerated",
    ),
    Case(
        id="legacy-crlf",
        partner=P,
        mutate=crlf,
        exit=0,
        promise="CRLF read; reject at physical line",
    ),
    Case(
        id="legacy-blank-lines",
        partner=P,
        mutate=blank_lines,
        exit=0,
        promise="blank lines: rows stay physical",
    ),
    Case(
        id="legacy-blank-line-2021",
        partner=P,
        mutate=blank_lines_2021,
        exit=0,
        promise="blank line in 2nd file",
    ),
    Case(
        id="legacy-name-in-year",
        partner=P,
        mutate=name_in_year,
        exit=None,
        names=[*FILE_2020, "yearOfRegistration"],
        promise="name in a number column: rejected row or located error (open), no leak",
    ),
    Case(
        id="legacy-too-many-fields",
        partner=P,
        mutate=too_many_fields,
        exit=1,
        names=[*FILE_2020, line(6)],
        promise="too many fields: located error (line 6)",
    ),
    Case(
        id="legacy-row-shifted-right",
        partner=P,
        mutate=shifted_row,
        exit=1,
        names=[*FILE_2020, line(8)],
        promise="a row shifted one cell right: located error (line 8)",
    ),
    Case(
        id="legacy-too-few-fields",
        partner=P,
        mutate=too_few_fields,
        exit=None,
        names=[*FILE_2021, line(4)],
        promise="short row: rejected row or located error (open)",
    ),
    Case(
        id="legacy-unclosed-quote",
        partner=P,
        mutate=unclosed_quote,
        exit=1,
        names=[*FILE_2020, any_of(line(8), line(53))],
        promise="unclosed quote: located error (line 8 where it opens, or 53 where the file ends)",
    ),
    Case(
        id="legacy-duplicate-header",
        partner=P,
        mutate=duplicate_header,
        exit=1,
        names=[*FILE_2020, "gender"],
        promise="duplicate column name is an error naming it",
    ),
    Case(
        id="legacy-missing-required-column",
        partner=P,
        mutate=missing_required_column,
        exit=1,
        names=[*FILE_2021, "citizenship"],
        promise="missing required column named",
    ),
    Case(
        id="legacy-name-in-gender",
        partner=P,
        mutate=in_cell("gender", NAME),
        exit=1,
        names=[f"'{P}'", "gender"],
        promise="coverage gate never quotes a name",
    ),
    Case(
        id="legacy-phone-in-citizenship-2021",
        partner=P,
        mutate=in_cell("citizenship", PHONE, LEGACY_2021, 2),
        exit=1,
        names=[f"'{P}'", "citizenship"],
        promise="coverage gate never quotes a phone number",
    ),
    Case(
        id="legacy-withdrawals-without-record-id",
        partner=P,
        mutate=withdrawals_present,
        exit=1,
        names=[f"'{P}'", "withdrawals"],
        promise="withdrawals for a partner without record id: error",
    ),
    Case(
        id="legacy-symlinked-2021-file",
        partner=P,
        mutate=symlinked_2021,
        exit=1,
        names=FILE_2021,
        promise="second delivery symlinked from outside refused",
    ),
    Case(
        id="legacy-formulas-escaped",
        partner=P,
        mutate=formulas,
        exit=0,
        promise="formula values escaped",
    ),
    Case(
        id="legacy-rare-unknowns",
        partner=P,
        mutate=rare_unknowns,
        exit=0,
        promise="rare unknown values withheld",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_legacy(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)
