"""Sample extract: IOM's case-management export (CSV), legacy and MiMOSA records together.

Records registered 2002-2011 come from the legacy system (legacy_* columns, codes such
as M/F, 1/0, Y/N, an age and a registration year); records from 2012 on come from MiMOSA
(mimosa_* columns, words, Yes/No, dd/mm/yyyy dates). Each row fills one set only. The
four locations feeding CountryOfExploitation are often empty, the earlier ones most, so
the fallback order matters. A few cases are exported twice (cross-referenced between
the systems), a few have no registration year, a few refused consent; withdrawals.csv
lists a few case numbers whose survivors withdrew consent.

Columns are drawn as integer codes with numpy and turned into text with Arrow kernels
(`take` from a vocabulary, element-wise joins), so 350,000 rows take a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ctdc_harmonizer.samples import fake

FILE_NAME = "iom_case_export_2025.csv"
LEGACY_SHARE = 0.35

NATIONALITIES = {
    "Ukraine": 10,
    "Republic of Moldova": 6,
    "Belarus": 4,
    "Viet Nam": 6,
    "Vietnam": 3,
    "Lao PDR": 3,
    "Cambodia": 4,
    "Myanmar": 4,
    "Indonesia": 6,
    "Philippines": 5,
    "Bangladesh": 4,
    "Nigeria": 5,
    "Ghana": 3,
    "Ethiopia": 3,
    "Kosovo": 2,
    "Kosovo (UNSCR 1244)": 1,
    "Albania": 2,
    "Romania": 2,
    "Tibet": 1,
    "China": 2,
    "Haiti": 2,
    "Afghanistan": 2,
    "Uzbekistan": 3,
    "Kyrgyzstan": 2,
    "Cote d'Ivoire": 1,
    "Democratic Republic of the Congo": 1,
    "Unknown": 2,
    "Stateless": 1,
}
EXPLOITATION_PLACES = {
    "Russia": 6,
    "Russian Federation": 3,
    "Thailand": 6,
    "Malaysia": 5,
    "Turkey": 4,
    "United Arab Emirates": 3,
    "Saudi Arabia": 3,
    "Kazakhstan": 3,
    "Ukraine": 4,
    "Indonesia": 5,
    "Kosovo": 1,
    "Tibet": 1,
    "China": 2,
    "Poland": 2,
    "Italy": 2,
    "Libya": 2,
    "Egypt": 1,
    "Ghana": 2,
    "Viet Nam": 2,
    "Lao PDR": 1,
    "Unknown": 1,
}
MISSIONS = {
    "Ukraine": 8,
    "Republic of Moldova": 5,
    "Belarus": 3,
    "Thailand": 5,
    "Indonesia": 6,
    "Viet Nam": 4,
    "Lao PDR": 2,
    "Cambodia": 3,
    "Bangladesh": 3,
    "Kosovo": 1,
    "Serbia": 2,
    "Ghana": 3,
    "Nigeria": 3,
    "Haiti": 2,
    "Afghanistan": 2,
    "Kazakhstan": 2,
    "Egypt": 1,
    "Libya": 2,
}
EXPLOITATION_TYPES = {
    "Sexual exploitation": 36,
    "Forced labour": 42,
    "Begging": 5,
    "Forced marriage": 4,
    "Slavery and similar practices": 5,
    "Removal of organs": 1,
    "Forced criminal activity": 3,
    "Other": 4,
}
LABOUR_SECTORS = {
    "Agriculture": 20,
    "Construction": 18,
    "Domestic work": 15,
    "Hospitality": 8,
    "Fishing": 8,
    "Manufacturing": 10,
    "Mining": 4,
    "Forestry": 2,
    "Begging": 4,
    "Peddling": 3,
    "Transportation": 2,
    "Illicit activities": 2,
    "Entertainment": 2,
    "Other": 2,
}
SEX_TYPES = {
    "Prostitution": 75,
    "Pornography": 8,
    "Remote interactive services": 5,
    "Private sexual services": 7,
    "Other": 5,
}
RECRUITERS = {
    "Intimate partner": 12,
    "Friend": 25,
    "Family member": 15,
    "Neighbour": 8,
    "Employer": 15,
    "Recruitment agency": 15,
    "Other": 10,
}
MIMOSA_GENDERS = {
    "Female": 60,
    "Male": 35,
    "Transgender": 1,
    "Non-binary": 0.5,
    "Prefer not to say": 1.5,
    "Unknown": 2,
}
LEGACY_SEXES = {"F": 58, "M": 36, "f": 2, "m": 2, "U": 2}
# The 17 means-of-control flags of the previous scheme, with the share of cases having each.
FLAGS = {
    "meansOfControlDebtBondage": 0.12,
    "meansOfControlTakesEarnings": 0.20,
    "meansOfControlRestrictsFinancialAccess": 0.08,
    "meansOfControlThreats": 0.30,
    "meansOfControlPsychologicalAbuse": 0.35,
    "meansOfControlPhysicalAbuse": 0.28,
    "meansOfControlSexualAbuse": 0.14,
    "meansOfControlFalsePromises": 0.25,
    "meansOfControlPsychoactiveSubstances": 0.05,
    "meansOfControlRestrictsMovement": 0.35,
    "meansOfControlRestrictsMedicalCare": 0.10,
    "meansOfControlExcessiveWorkingHours": 0.20,
    "meansOfControlUsesChildren": 0.03,
    "meansOfControlThreatOfLawEnforcement": 0.08,
    "meansOfControlWithholdsNecessities": 0.15,
    "meansOfControlWithholdsDocuments": 0.20,
    "meansOfControlOther": 0.05,
}
COLUMNS = [
    "case_id",
    "data_system",
    "beneficiary_category",
    "consent_to_share_data",
    "beneficiary_first_name",
    "beneficiary_last_name",
    "legacy_sex",
    "mimosa_gender",
    "legacy_age",
    "mimosa_date_of_birth",
    "nationality",
    "phone_number",
    "email",
    "home_address",
    "legacy_registration_year",
    "mimosa_registration_date",
    "last_country_of_exploitation",
    "screening_interview_location",
    "location_upon_registration",
    "registering_mission_country",
    "type_of_exploitation",
    "labour_sector",
    "sexual_exploitation_type",
    "recruiter_relationship",
    "trafficking_duration_months",
    *FLAGS,
    "case_status",
    "case_worker",
    "case_notes",
]


# --- text columns from codes (shared with the hotline sample) --------------------------------


def take(vocabulary, codes: np.ndarray) -> pa.Array:
    """Text column: vocabulary[codes], gathered by Arrow."""
    return pa.array(list(vocabulary), type=pa.string()).take(pa.array(codes))


def pick(rng: np.random.Generator, weights: dict[str, float], n: int) -> pa.Array:
    """n values drawn from a weighted vocabulary."""
    p = np.array(list(weights.values()), dtype=float)
    return take(weights, rng.choice(len(weights), n, p=p / p.sum()))


def blank(values: pa.Array, mask: np.ndarray) -> pa.Array:
    """Values with the masked cells emptied."""
    return pc.if_else(pa.array(mask), "", values)


def join(*parts, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def text(numbers: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(numbers), pa.string())


def zero_padded(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(text(numbers), width=width, padding="0")


def date_parts(days: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(yyyy, mm, dd) text columns of datetime64[D] values."""
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    month = (months - years.astype("datetime64[M]")).astype(int) + 1
    day = (days - months.astype("datetime64[D]")).astype(int) + 1
    return text(years.astype(int) + 1970), zero_padded(month, 2), zero_padded(day, 2)


def random_days(rng: np.random.Generator, start: str, end: str, n: int) -> np.ndarray:
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    return lo + rng.integers(0, (hi - lo).astype(int) + 1, n).astype("timedelta64[D]")


def picklist_codes(
    rng: np.random.Generator, weights: dict[str, float], n: int, p_several: float
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Multi-select cells as codes into a vocabulary of choice tuples: mostly one weighted
    choice, sometimes two different ones."""
    options = list(weights)
    k = len(options)
    p = np.array(list(weights.values()), dtype=float)
    first = rng.choice(k, n, p=p / p.sum())
    second = (first + 1 + rng.integers(0, k - 1, n)) % k
    vocabulary = [(o,) for o in options] + [(a, b) for a in options for b in options]
    codes = np.where(rng.random(n) < p_several, k + first * k + second, first)
    return codes, vocabulary


def picklist(
    rng: np.random.Generator, weights: dict[str, float], n: int, p_several: float, p_empty: float
) -> pa.Array:
    codes, vocabulary = picklist_codes(rng, weights, n, p_several)
    return blank(take(["|".join(t) for t in vocabulary], codes), rng.random(n) < p_empty)


def identifiers(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """Invented names, phone, e-mail, street, case worker and note (fake.py word lists)."""
    first_codes = rng.integers(0, len(fake.FIRST_NAMES), n)
    last_codes = rng.integers(0, len(fake.LAST_NAMES), n)
    first, last = take(fake.FIRST_NAMES, first_codes), take(fake.LAST_NAMES, last_codes)
    prefixes = ["+381 64", "+84 91", "+1 312", "+380 67", "+234 803"]
    return {
        "first": first,
        "last": last,
        "phone": join(
            take(prefixes, rng.integers(0, len(prefixes), n)),
            text(rng.integers(1_000_000, 9_999_999, n)),
            sep=" ",
        ),
        "email": join(
            pc.utf8_lower(first),
            ".",
            pc.utf8_lower(last),
            text(rng.integers(10, 99, n)),
            "@example.org",
        ),
        "street": join(
            text(rng.integers(1, 400, n)),
            take(fake.STREETS, rng.integers(0, len(fake.STREETS), n)),
            sep=" ",
        ),
        "city": take(fake.CITIES, rng.integers(0, len(fake.CITIES), n)),
        "staff": join(
            "Officer", take(fake.LAST_NAMES, rng.integers(0, len(fake.LAST_NAMES), n)), sep=" "
        ),
        "note": join(
            take(fake.NOTE_OPENERS, rng.integers(0, len(fake.NOTE_OPENERS), n)),
            take(fake.NOTE_BODIES, rng.integers(0, len(fake.NOTE_BODIES), n)),
            sep=" ",
        ),
    }


# --- the IOM export ---------------------------------------------------------------------------


def generate(out_dir: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    legacy = rng.random(n) < LEGACY_SHARE
    mimosa = ~legacy

    # Registration: a year for legacy records, a dd/mm/yyyy date for MiMOSA records.
    legacy_year = rng.integers(2002, 2012, n)
    registered = random_days(rng, "2012-01-01", "2024-12-31", n)
    age = np.clip(np.rint(rng.gamma(5.0, 5.2, n)), 6, 72).astype(int)
    born = registered - (age * 365 + rng.integers(0, 365, n)).astype("timedelta64[D]")
    reg_y, reg_m, reg_d = date_parts(registered)
    born_y, born_m, born_d = date_parts(born)
    legacy_text = text(legacy_year)
    system_year = pc.if_else(pa.array(legacy), legacy_text, reg_y)
    case_id = join(
        take(["MIM", "LGC"], legacy.astype(int)),
        system_year,
        zero_padded(rng.permutation(n) + 1, 6),
        sep="-",
    )
    people = identifiers(rng, n)

    exploitation = picklist(rng, EXPLOITATION_TYPES, n, 0.2, 0.04)
    labour = pc.match_substring_regex(exploitation, "Forced labour|Begging").to_numpy(
        zero_copy_only=False
    )
    sexual = pc.match_substring(exploitation, "Sexual").to_numpy(zero_copy_only=False)
    months = np.minimum(rng.geometric(0.07, n) - 1, 240)

    columns: dict[str, pa.Array] = {
        "case_id": case_id,
        "data_system": take(["MIMOSA", "LEGACY"], legacy.astype(int)),
        "beneficiary_category": pc.if_else(
            pa.array(legacy),
            "Victim of trafficking",
            pick(
                rng,
                {
                    "Victim of trafficking": 80,
                    "Presumed victim of trafficking": 17,
                    "Vulnerable migrant": 3,
                },
                n,
            ),
        ),
        "consent_to_share_data": pc.if_else(
            pa.array(legacy), pick(rng, {"Y": 97, "N": 3}, n), pick(rng, {"Yes": 96, "No": 4}, n)
        ),
        "beneficiary_first_name": people["first"],
        "beneficiary_last_name": people["last"],
        "legacy_sex": blank(pick(rng, LEGACY_SEXES, n), mimosa),
        "mimosa_gender": blank(pick(rng, MIMOSA_GENDERS, n), legacy),
        "legacy_age": blank(text(age), mimosa | (rng.random(n) < 0.06)),
        "mimosa_date_of_birth": blank(
            join(born_d, born_m, born_y, sep="/"), legacy | (rng.random(n) < 0.08)
        ),
        "nationality": blank(pick(rng, NATIONALITIES, n), rng.random(n) < 0.03),
        "phone_number": blank(people["phone"], rng.random(n) < 0.3),
        "email": blank(people["email"], rng.random(n) < 0.6),
        "home_address": join(people["street"], people["city"], sep=", "),
        "legacy_registration_year": blank(legacy_text, mimosa),
        "mimosa_registration_date": blank(join(reg_d, reg_m, reg_y, sep="/"), legacy),
        # The proxy's earlier sources are the ones most often missing (Appendix II).
        "last_country_of_exploitation": blank(
            pick(rng, EXPLOITATION_PLACES, n), rng.random(n) < 0.7
        ),
        "screening_interview_location": blank(
            pick(rng, EXPLOITATION_PLACES, n), rng.random(n) < 0.6
        ),
        "location_upon_registration": blank(
            pick(rng, EXPLOITATION_PLACES, n), rng.random(n) < 0.45
        ),
        "registering_mission_country": blank(pick(rng, MISSIONS, n), rng.random(n) < 0.01),
        "type_of_exploitation": exploitation,
        "labour_sector": blank(picklist(rng, LABOUR_SECTORS, n, 0.1, 0.2), ~labour),
        "sexual_exploitation_type": blank(picklist(rng, SEX_TYPES, n, 0.1, 0.25), ~sexual),
        "recruiter_relationship": picklist(rng, RECRUITERS, n, 0.1, 0.35),
        "trafficking_duration_months": blank(text(months), rng.random(n) < 0.3),
    }
    # Means of control: legacy 1/0, MiMOSA Yes/No (codes 0..3); not recorded for some cases.
    flags = rng.random((n, len(FLAGS))) < np.array(list(FLAGS.values()))
    codes = np.where(flags, 1, 0) + np.where(legacy, 0, 2)[:, None]
    unrecorded = (rng.random(n) < 0.2)[:, None] | (rng.random((n, len(FLAGS))) < 0.02)
    codes = np.where(unrecorded, 4, codes)
    for j, name in enumerate(FLAGS):
        columns[name] = take(["0", "1", "No", "Yes", ""], codes[:, j])
    columns["case_status"] = pick(rng, {"Open": 30, "Closed": 55, "Referred": 15}, n)
    columns["case_worker"] = people["staff"]
    columns["case_notes"] = people["note"]

    # A few records without registration year or date: rejected by the pipeline.
    no_year = rng.random(n) < 0.01
    for name in ("legacy_registration_year", "mimosa_registration_date"):
        columns[name] = blank(columns[name], no_year)
    table = pa.table({name: columns[name] for name in COLUMNS})
    # Cases cross-referenced between the systems appear twice under one case number (an exact
    # copy replaces another row, so the file keeps n rows).
    order = np.arange(n)
    copies = n // 100 if n >= 100 else min(1, n // 2)
    if copies:
        shuffled = rng.permutation(n)
        order[shuffled[copies : 2 * copies]] = shuffled[:copies]
    table = table.take(pa.array(order))

    out = out_dir / "iom"
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    pa_csv.write_csv(table, path)
    paths = [path]
    if n:
        ids = pc.unique(table["case_id"])
        withdrawn = ids.take(pa.array(rng.choice(len(ids), max(1, n // 400), replace=False)))
        paths.append(out / "withdrawals.csv")
        withdrawn = withdrawn.take(pc.sort_indices(withdrawn))
        pa_csv.write_csv(pa.table({"record_id": withdrawn}), paths[-1])
    return paths
