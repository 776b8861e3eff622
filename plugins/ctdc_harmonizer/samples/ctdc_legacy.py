"""Sample extract: historical records in the previous CTDC Global Dataset layout.

Two deliveries of one partner that stopped contributing, in the k-anonymized layout of
codebook v7 (63 columns, data dictionaries 2017/2018/2021):

- ctdc_global_2020_kanon.csv: registrations 2002-2019, missing data coded `-99`;
- ctdc_global_2021.csv: registrations 2020-2021, missing data left empty.

The two files never hold the same record: the public releases are cumulative and carry no
record id, so landing two releases that cover the same years would count records twice.
The layout holds no identifier (it was anonymized before publication), so there is nothing
to invent here: every value is a category, a flag, a year or an ISO code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv

PARTNER = "ctdc_legacy"

# Codebook v7 (September 2021), section 2 "List of variables", in order: the header of the
# k-anonymized Global Dataset. The 2017/2018/2021 data dictionaries list the same columns
# except isSlaveryAndPractices (v7 only) and spell majorityEntry as MajorityEntry.
COLUMNS = [
    "yearOfRegistration",
    "Datasource",
    "gender",
    "ageBroad",
    "majorityStatus",
    "majorityStatusAtExploit",
    "majorityEntry",
    "citizenship",
    "meansOfControlDebtBondage",
    "meansOfControlTakesEarnings",
    "meansOfControlRestrictsFinancialAccess",
    "meansOfControlThreats",
    "meansOfControlPsychologicalAbuse",
    "meansOfControlPhysicalAbuse",
    "meansOfControlSexualAbuse",
    "meansOfControlFalsePromises",
    "meansOfControlPsychoactiveSubstances",
    "meansOfControlRestrictsMovement",
    "meansOfControlRestrictsMedicalCare",
    "meansOfControlExcessiveWorkingHours",
    "meansOfControlUsesChildren",
    "meansOfControlThreatOfLawEnforcement",
    "meansOfControlWithholdsNecessities",
    "meansOfControlWithholdsDocuments",
    "meansOfControlOther",
    "meansOfControlNotSpecified",
    "meansOfControlConcatenated",
    "isForcedLabour",
    "isSexualExploit",
    "isOtherExploit",
    "isSexAndLabour",
    "isForcedMarriage",
    "isForcedMilitary",
    "isOrganRemoval",
    "isSlaveryAndPractices",
    "typeOfExploitConcatenated",
    "typeOfLabourAgriculture",
    "typeOfLabourAquafarming",
    "typeOfLabourBegging",
    "typeOfLabourConstruction",
    "typeOfLabourDomesticWork",
    "typeOfLabourHospitality",
    "typeOfLabourIllicitActivities",
    "typeOfLabourManufacturing",
    "typeOfLabourMiningOrDrilling",
    "typeOfLabourPeddling",
    "typeOfLabourTransportation",
    "typeOfLabourOther",
    "typeOfLabourNotSpecified",
    "typeOfLabourConcatenated",
    "typeOfSexProstitution",
    "typeOfSexPornography",
    "typeOfSexRemoteInteractiveServices",
    "typeOfSexPrivateSexualServices",
    "typeOfSexConcatenated",
    "isAbduction",
    "RecruiterRelationship",
    "CountryOfExploitation",
    "recruiterRelationIntimatePartner",
    "recruiterRelationFriend",
    "recruiterRelationFamily",
    "recruiterRelationOther",
    "recruiterRelationUnknown",
]

# Means of control flags and their label in meansOfControlConcatenated (codebook v7, var. 27).
# The third item: whether the flag is ever 0 (v7 lists only NULL/1 for some of them).
MEANS = [
    ("meansOfControlDebtBondage", "Debt bondage", True, 0.20),
    ("meansOfControlTakesEarnings", "Takes/Withholds Earnings", True, 0.25),
    ("meansOfControlRestrictsFinancialAccess", "Restricts access to finances", False, 0.10),
    ("meansOfControlThreats", "Threats to individual or others", True, 0.35),
    ("meansOfControlPsychologicalAbuse", "Psychological abuse", True, 0.40),
    ("meansOfControlPhysicalAbuse", "Physical abuse", True, 0.30),
    ("meansOfControlSexualAbuse", "Sexual abuse", True, 0.12),
    ("meansOfControlFalsePromises", "False promises/deception", True, 0.30),
    ("meansOfControlPsychoactiveSubstances", "Use of psychoactive substances", True, 0.08),
    ("meansOfControlRestrictsMovement", "Denied freedom of movement/kept in isolation", True, 0.35),
    ("meansOfControlRestrictsMedicalCare", "Limits/restricts medical services", True, 0.05),
    ("meansOfControlExcessiveWorkingHours", "Excessive working hours", True, 0.15),
    ("meansOfControlUsesChildren", "Restricts access to/manipulates children", False, 0.03),
    ("meansOfControlThreatOfLawEnforcement", "Threat of action by law enforcement", True, 0.06),
    ("meansOfControlWithholdsNecessities", "Withholds/denies basic necessities", True, 0.15),
    ("meansOfControlWithholdsDocuments", "Withholds/Destroys Important Documents", False, 0.20),
    ("meansOfControlOther", "Other", False, 0.05),
]
# Type of exploitation: the single type a record is drawn with, its flag and its label.
EXPLOIT = [
    ("isForcedLabour", "Forced labour", 0.36),
    ("isSexualExploit", "Sexual exploitation", 0.48),
    ("isOtherExploit", "Other", 0.04),
    ("isSexAndLabour", "Combined sexual and labour exploitation", 0.05),
    ("isForcedMarriage", "Forced marriage", 0.035),
    ("isForcedMilitary", "Other", 0.01),
    ("isOrganRemoval", "Other", 0.005),
    ("isSlaveryAndPractices", "Slavery and similar practices", 0.02),
]
LABOUR = [
    ("typeOfLabourAgriculture", "Agriculture", 0.16),
    ("typeOfLabourAquafarming", "Aquafarming", 0.06),
    ("typeOfLabourBegging", "Begging", 0.08),
    ("typeOfLabourConstruction", "Construction", 0.14),
    ("typeOfLabourDomesticWork", "Domestic Work", 0.22),
    ("typeOfLabourHospitality", "Hospitality", 0.08),
    ("typeOfLabourIllicitActivities", "Illicit Activities", 0.03),
    ("typeOfLabourManufacturing", "Manufacturing", 0.07),
    ("typeOfLabourMiningOrDrilling", "Mining or drilling", 0.02),
    ("typeOfLabourPeddling", "Peddling", 0.03),
    ("typeOfLabourTransportation", "Transportation", 0.02),
    ("typeOfLabourOther", "Other", 0.05),
    ("typeOfLabourNotSpecified", "Not Specified", 0.04),
]
SEX = [
    ("typeOfSexProstitution", "Prostitution", 0.82),
    ("typeOfSexPornography", "Pornography", 0.08),
    ("typeOfSexRemoteInteractiveServices", "Remote interactive services", 0.05),
    ("typeOfSexPrivateSexualServices", "Private sexual services", 0.05),
]
RECRUITER = [
    ("recruiterRelationIntimatePartner", "Intimate Partner", 0.20),
    ("recruiterRelationFriend", "Friend/Acquaintance", 0.30),
    ("recruiterRelationFamily", "Family/Relative", 0.25),
    ("recruiterRelationOther", "Other", 0.15),
    ("recruiterRelationUnknown", "Unknown/Not specified", 0.10),
]
AGES = ["0--8", "9--17", "18--20", "21--23", "24--26", "27--29", "30--38", "39--47", "48+"]
AGE_P = [0.04, 0.18, 0.14, 0.13, 0.11, 0.09, 0.18, 0.09, 0.04]
MINOR_AGES = 2  # the first two ranges are minors
# ISO 3166-1 alpha-2 as in the dictionaries' Country lookup; 00 = unknown country, and a few
# codes that only the dictionaries know (ZR Zaire, Y1 Kosovo, TB Tibet, AN Netherlands Antilles).
CITIZENSHIPS = [
    "UA",
    "MD",
    "PH",
    "KH",
    "ID",
    "BY",
    "RO",
    "VN",
    "MM",
    "TH",
    "BD",
    "NP",
    "HT",
    "GH",
    "UZ",
    "KG",
    "NG",
    "ET",
    "BO",
    "MX",
    "US",
    "00",
    "ZR",
    "Y1",
    "TB",
    "AN",
]
CITIZENSHIP_P = np.array(
    [10, 9, 8, 6, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3, 3, 3, 3, 2, 2, 4, 6, 4, 0.3, 0.3, 0.2, 0.2]
)
EXPLOITED_IN = [
    "RU",
    "US",
    "TH",
    "MY",
    "UA",
    "MD",
    "TR",
    "PL",
    "AE",
    "SA",
    "KH",
    "ID",
    "PH",
    "GH",
    "HT",
    "KZ",
    "00",
    "Y1",
]
EXPLOITED_P = np.array([12, 14, 8, 6, 7, 4, 5, 4, 5, 4, 4, 4, 4, 3, 2, 3, 4, 0.3])


def _choice(rng: np.random.Generator, options: list[str], n: int, p) -> np.ndarray:
    weights = np.asarray(p, dtype=float)
    return rng.choice(np.array(options, dtype=object), n, p=weights / weights.sum())


def _flags_text(flags: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """0/1 flags as text; missing cells None (written as -99 or empty)."""
    text = np.where(flags == 1, "1", "0").astype(object)
    text[missing] = None
    return text


def _concatenate(columns: dict, items: list, missing: np.ndarray, n: int) -> np.ndarray:
    """The `*Concatenated` list: labels of the flags set to 1, joined by ';'.

    Built once per distinct combination of flags (a few hundred), not once per record.
    """
    on = np.column_stack([columns[name] == "1" for name, *_ in items])
    labels = [label for _, label, *_ in items]
    bits = 1 << np.arange(len(items), dtype=np.int64)
    patterns, inverse = np.unique(on.astype(np.int64) @ bits, return_inverse=True)
    texts = np.array(
        [
            ";".join(lab for lab, bit in zip(labels, bits, strict=True) if code & bit) or None
            for code in patterns
        ],
        dtype=object,
    )
    out = texts[inverse]
    out[missing] = None
    return out


def _records(rng: np.random.Generator, n: int, years: tuple[int, int]) -> dict[str, np.ndarray]:
    """n records of the previous layout, column -> object array; missing cells are None."""
    cols: dict[str, np.ndarray] = {}
    hotline = rng.random(n) < 0.3
    year = rng.integers(years[0], years[1] + 1, n)
    # The hotline partner contributed registrations from 2015 on.
    year = np.where(hotline, np.maximum(year, min(max(2015, years[0]), years[1])), year)
    cols["yearOfRegistration"] = year.astype(str).astype(object)
    cols["Datasource"] = np.where(hotline, "Hotline", "Case Management").astype(object)
    cols["gender"] = _choice(
        rng,
        ["Female", "Male", "Transgender/NonConforming", "Unknown", None],
        n,
        [0.68, 0.26, 0.006, 0.014, 0.04],
    )

    age_idx = rng.choice(len(AGES), n, p=np.array(AGE_P) / sum(AGE_P))
    age_missing = rng.random(n) < 0.3
    ages = np.array(AGES, dtype=object)[age_idx]
    ages[ages == "9--17"] = np.where(
        rng.random(int((ages == "9--17").sum())) < 0.3, "09--17", "9--17"
    )
    ages[age_missing] = None
    cols["ageBroad"] = ages
    minor = age_idx < MINOR_AGES
    status = np.where(minor, "Minor", "Adult").astype(object)
    status[age_missing] = np.where(rng.random(int(age_missing.sum())) < 0.5, "Unknown", None)
    cols["majorityStatus"] = status
    # Exploitation often began before registration: some adults were minors then.
    at_exploit = status.copy()
    earlier = (status == "Adult") & (age_idx <= 3) & (rng.random(n) < 0.25)
    at_exploit[earlier] = "Minor"
    cols["majorityStatusAtExploit"] = at_exploit
    cols["majorityEntry"] = at_exploit.copy()
    cols["citizenship"] = _choice(rng, CITIZENSHIPS + [None], n, [*CITIZENSHIP_P, 6])
    exploited = _choice(rng, EXPLOITED_IN + [None], n, [*EXPLOITED_P, 5])
    exploited[hotline & (rng.random(n) < 0.97)] = "US"
    cols["CountryOfExploitation"] = exploited

    # Means of control: known for about half of the records.
    means_missing = rng.random(n) < 0.5
    for name, _, has_zero, p in MEANS:
        flag = (rng.random(n) < p).astype(np.int8)
        text = _flags_text(flag, means_missing)
        if not has_zero:  # v6/v7 list only missing and 1 for these
            text[text == "0"] = None
        cols[name] = text
    any_means = np.zeros(n, dtype=bool)
    for name, *_ in MEANS:
        any_means |= cols[name] == "1"
    cols["meansOfControlNotSpecified"] = np.where(means_missing | ~any_means, "1", "0").astype(
        object
    )
    cols["meansOfControlConcatenated"] = _concatenate(
        cols, [*MEANS, ("meansOfControlNotSpecified", "Not Specified")], np.zeros(n, dtype=bool), n
    )

    # Type of exploitation: one type per record, known for most records.
    exploit_missing = rng.random(n) < 0.12
    kind = rng.choice(
        len(EXPLOIT), n, p=np.array([p for *_, p in EXPLOIT]) / sum(p for *_, p in EXPLOIT)
    )
    for j, (name, _, _) in enumerate(EXPLOIT):
        cols[name] = _flags_text((kind == j).astype(np.int8), exploit_missing)
    # Half of the combined cases also carry both single flags.
    both = (cols["isSexAndLabour"] == "1") & (rng.random(n) < 0.5)
    cols["isForcedLabour"][both] = "1"
    cols["isSexualExploit"][both] = "1"
    cols["typeOfExploitConcatenated"] = _concatenate(cols, EXPLOIT, exploit_missing, n)

    labour = np.isin(kind, [0, 3]) & ~exploit_missing
    job = rng.choice(
        len(LABOUR), n, p=np.array([p for *_, p in LABOUR]) / sum(p for *_, p in LABOUR)
    )
    for j, (name, _, _) in enumerate(LABOUR):
        cols[name] = _flags_text((job == j).astype(np.int8), ~labour)
    cols["typeOfLabourConcatenated"] = _concatenate(cols, LABOUR, ~labour, n)
    sexual = np.isin(kind, [1, 3]) & ~exploit_missing
    sex = rng.choice(len(SEX), n, p=[p for *_, p in SEX])
    for j, (name, _, _) in enumerate(SEX):
        cols[name] = _flags_text((sex == j).astype(np.int8), ~sexual)
    cols["typeOfSexConcatenated"] = _concatenate(cols, SEX, ~sexual, n)
    cols["isAbduction"] = _flags_text((rng.random(n) < 0.04).astype(np.int8), rng.random(n) < 0.6)

    # Recruiter relation: mostly recorded by the hotline.
    recruiter_missing = rng.random(n) < np.where(hotline, 0.3, 0.85)
    who = rng.choice(len(RECRUITER), n, p=[p for *_, p in RECRUITER])
    for j, (name, _, _) in enumerate(RECRUITER):
        cols[name] = _flags_text((who == j).astype(np.int8), recruiter_missing)
    cols["RecruiterRelationship"] = _concatenate(cols, RECRUITER, recruiter_missing, n)
    return {name: cols[name] for name in COLUMNS}


def _write(columns: dict[str, np.ndarray], path: Path, missing: str) -> Path:
    """Plain CSV (no quotes: no value holds a comma), written by Arrow for speed."""
    table = pa.table(
        {
            name: pa_compute.fill_null(
                pa.array(values, type=pa.string(), from_pandas=True), missing
            )
            for name, values in columns.items()
        }
    )
    with path.open("wb") as handle:
        handle.write((",".join(columns) + "\n").encode("utf-8"))
        pa_csv.write_csv(
            table, handle, pa_csv.WriteOptions(include_header=False, quoting_style="none")
        )
    return path


def generate(out_dir: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    n_2021 = max(1, n // 7) if n >= 2 else 0
    out = Path(out_dir) / PARTNER
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        _write(_records(rng, n - n_2021, (2002, 2019)), out / "ctdc_global_2020_kanon.csv", "-99")
    ]
    if n_2021:
        columns = _records(rng, n_2021, (2020, 2021))
        # The 2021 file spells the source as codebook v7 does.
        source = columns["Datasource"]
        columns["Datasource"] = np.where(source == "Case Management", "Case management", source)
        paths.append(_write(columns, out / "ctdc_global_2021.csv", ""))
    return paths
