"""Sample extract: a national anti-trafficking hotline's yearly export (JSON lines).

One report per line, about one potential victim. Many reports come from third parties,
whose own name, phone and e-mail sit in caller_* fields. Ages are the hotline's own
ranges, several of which straddle the codebook bins; multi-valued answers (citizenships,
industries, control methods, recruiter relations) are JSON arrays. The hotline contributes
from 2015, but the export still holds a few older reports; a few reports have no date;
withdrawals.csv lists a few report numbers whose survivors withdrew consent.

Columns are drawn as integer codes with numpy and rendered to JSON text with Arrow
kernels, so 350,000 reports take a few seconds.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ctdc_harmonizer.samples import fake
from ctdc_harmonizer.samples.iom import (
    date_parts,
    identifiers,
    join,
    random_days,
    take,
    zero_padded,
)

FILE_NAME = "hotline_reports_2025.jsonl"
EARLY_SHARE = 0.02  # reports from 2012-2014, before the hotline contributed

CONTACT_METHODS = {"Phone": 60, "Text": 12, "Webchat": 10, "Email": 8, "Online form": 10}
CALLERS = {
    "Self": 30,
    "Family member": 15,
    "Friend": 12,
    "Community member": 15,
    "Service provider": 15,
    "Law enforcement": 5,
    "Anonymous": 8,
}
GENDERS = {
    "Female": 62,
    "Male": 28,
    "Transgender Female": 1.5,
    "Transgender Male": 0.5,
    "Gender Non-Conforming": 1,
    "Unknown": 7,
}
AGE_RANGES = {
    "Minor": 8,
    "Adult": 15,
    "0-5": 0.5,
    "6-8": 1,
    "9-11": 2,
    "12-14": 5,
    "15-17": 9,
    "18-24": 20,
    "25-29": 10,
    "30-34": 7,
    "35-39": 5,
    "40-44": 3,
    "45-49": 2,
    "50+": 2,
    "Unknown": 10,
}
TYPES = {"Sex": 55, "Labor": 28, "Sex and Labor": 5, "Not specified": 12}
SEX_INDUSTRIES = {
    "Illicit Massage/Spa": 20,
    "Escort Services": 25,
    "Residential Brothel": 12,
    "Outdoor Solicitation": 12,
    "Truck Stop-based": 4,
    "Pornography": 6,
    "Strip Club": 5,
    "Remote Interactive Sexual Acts": 6,
    "Personal Sexual Servitude": 4,
}
LABOUR_INDUSTRIES = {
    "Agriculture/Farms": 18,
    "Domestic Work": 20,
    "Restaurant/Food Service": 14,
    "Hotel/Hospitality": 5,
    "Construction": 10,
    "Traveling Sales Crews": 7,
    "Peddling/Begging": 5,
    "Landscaping": 4,
    "Factories/Manufacturing": 5,
    "Health & Beauty Services": 6,
    "Carnivals": 2,
    "Forestry/Logging": 1,
    "Commercial Cleaning Services": 2,
    "Illicit Activities": 4,
}
CONTROLS = {
    "Induced/Exploited substance abuse": 8,
    "Withholding earnings": 14,
    "Debt bondage": 8,
    "Threats to report to immigration": 6,
    "Threats to harm victim or family": 10,
    "Intimidation": 6,
    "Confiscated documents": 7,
    "Isolation/Confinement": 10,
    "Monitoring/Surveillance": 5,
    "Deprivation of food/sleep/medical care": 5,
    "Physical abuse": 10,
    "Emotional abuse": 12,
    "Sexual abuse": 6,
    "Excessive work hours": 8,
    "False promises": 10,
    "Other": 2,
    "Not specified": 2,
}
RECRUITERS = {
    "Intimate partner/Marriage proposition": 20,
    "Family member/Caregiver": 15,
    "Friend": 12,
    "Acquaintance": 8,
    "Employer": 20,
    "Labor broker/Recruiter": 10,
    "Smuggler": 5,
    "Other": 6,
    "Not specified": 4,
}
CITIZENSHIPS = {  # the three US spellings first, then foreign countries
    "United States": 40,
    "US": 6,
    "USA": 6,
    "Mexico": 14,
    "Honduras": 4,
    "Guatemala": 4,
    "El Salvador": 3,
    "Philippines": 4,
    "China": 3,
    "India": 2,
    "Thailand": 2,
    "South Korea": 2,
    "Haiti": 2,
    "Dominican Republic": 1,
    "Nigeria": 1,
    "Jamaica": 1,
    "Vietnam": 2,
    "Canada": 1,
    "Venezuela": 2,
}
EXPLOITATION_COUNTRIES = {
    "United States": 55,
    "US": 15,
    "USA": 15,
    "U.S.": 4,
    "Mexico": 4,
    "Canada": 2,
    "Unknown": 3,
}
STATES = {
    "California": 12,
    "Texas": 10,
    "Florida": 8,
    "New York": 7,
    "Georgia": 4,
    "Ohio": 3,
    "Illinois": 4,
    "North Carolina": 3,
    "Michigan": 3,
    "Nevada": 2,
    "Washington": 3,
    "Arizona": 3,
    "New Jersey": 3,
    "Virginia": 3,
    "Puerto Rico": 1,
}
FIELDS = [
    "report_id",
    "report_date",
    "contact_method",
    "caller_relationship",
    "caller_name",
    "caller_phone",
    "caller_email",
    "victim_name",
    "victim_gender",
    "victim_age_range",
    "victim_citizenship",
    "trafficking_type",
    "industries",
    "control_methods",
    "recruiter_relations",
    "exploitation_country",
    "location_state",
    "location_city",
    "hotline_advocate",
    "narrative",
]


def _codes(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    p = np.array(list(weights.values()), dtype=float)
    return rng.choice(len(weights), n, p=p / p.sum())


def _json_strings(vocabulary) -> list[str]:
    return [json.dumps(v) for v in vocabulary]


def _quoted(values: pa.Array) -> pa.Array:
    """JSON text of plain strings without quotes or backslashes (invented identifiers)."""
    return join('"', values, '"')


def _null(fragments: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), "null", fragments)


def _weighted_sets(
    rng: np.random.Generator, weights: dict[str, float], n: int, max_k: int, p_several: float
) -> np.ndarray:
    """(n, max_k) indices of distinct weighted choices per row, -1 where unused: one choice,
    or with probability p_several two to max_k (weighted sampling without replacement)."""
    w = np.array(list(weights.values()), dtype=float)
    keys = rng.random((n, len(w))) ** (1.0 / w)
    top = np.argsort(-keys, axis=1)[:, :max_k]
    count = np.where(rng.random(n) < p_several, rng.integers(2, max_k + 1, n), 1)
    return np.where(np.arange(max_k)[None, :] < count[:, None], top, -1)


def _arrays(options: list[str], chosen: np.ndarray) -> pa.Array:
    """JSON arrays from (n, m) indices into options (-1 = no item), via a vocabulary of all
    index tuples coded in base len(options) + 1."""
    base = len(options) + 1
    m = chosen.shape[1]
    vocabulary = [
        json.dumps([options[i - 1] for i in combo if i])
        for combo in itertools.product(range(base), repeat=m)
    ]
    codes = np.zeros(len(chosen), dtype=np.int64)
    for j in range(m):
        codes = codes * base + (chosen[:, j] + 1)
    return take(vocabulary, codes)


def _industries(rng: np.random.Generator, kind: np.ndarray, n: int) -> pa.Array:
    """Industries consistent with the type of trafficking reported."""
    sex, labour = list(SEX_INDUSTRIES), list(LABOUR_INDUSTRIES)
    options = [*sex, *labour, "Other", "Not specified"]
    sex_sets = _weighted_sets(rng, SEX_INDUSTRIES, n, 2, 0.12)
    labour_sets = _weighted_sets(rng, LABOUR_INDUSTRIES, n, 2, 0.08) + len(sex)
    labour_sets[labour_sets < len(sex)] = -1
    unsure = rng.choice(np.array([-1, len(options) - 2, len(options) - 1]), n, p=[0.4, 0.3, 0.3])
    first = np.select(
        [kind == 0, kind == 1, kind == 2],
        [sex_sets[:, 0], labour_sets[:, 0], sex_sets[:, 0]],
        unsure,
    )
    second = np.select(
        [kind == 0, kind == 1, kind == 2],
        [sex_sets[:, 1], labour_sets[:, 1], labour_sets[:, 0]],
        -1,
    )
    chosen = np.stack([first, second], axis=1)
    chosen[rng.random(n) < 0.06] = -1  # industry not recorded: []
    return _arrays(options, chosen)


def _report_days(rng: np.random.Generator, n: int) -> np.ndarray:
    early = rng.random(n) < EARLY_SHARE
    return np.where(
        early,
        random_days(rng, "2012-01-01", "2014-12-31", n),
        random_days(rng, "2015-01-01", "2024-12-31", n),
    )


def _write_lines(lines: pa.Array, path: Path) -> None:
    """Write a string array whose items end in a newline as one file, straight from its buffer."""
    lines = pc.cast(lines, pa.large_string())
    if len(lines) == 0:
        path.write_bytes(b"")
        return
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[
        lines.offset : lines.offset + len(lines) + 1
    ]
    data = memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
    path.write_bytes(data)


def generate(out_dir: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    days = _report_days(rng, n)
    year, month, day = date_parts(days)
    seconds = rng.integers(0, 86_400, n)
    clock = join(
        zero_padded(seconds // 3600, 2),
        zero_padded(seconds // 60 % 60, 2),
        zero_padded(seconds % 60, 2),
        sep=":",
    )
    report_id = join(
        "HL", pc.utf8_slice_codeunits(year, 2), zero_padded(rng.permutation(n) + 1, 7), sep="-"
    )
    people = identifiers(rng, n)
    callers = _codes(rng, CALLERS, n)
    anonymous = callers == list(CALLERS).index("Anonymous")
    kind = _codes(rng, TYPES, n)

    # One citizenship, or a second one: mostly a foreign national who is also a US citizen.
    citizenship = np.stack([_codes(rng, CITIZENSHIPS, n), np.full(n, -1)], axis=1)
    us = list(CITIZENSHIPS).index("United States")
    foreign = citizenship[:, 0] >= list(CITIZENSHIPS).index("Mexico")
    citizenship[foreign & (rng.random(n) < 0.12), 1] = us
    citizenship[rng.random(n) < 0.1] = -1
    unknown_citizenship = rng.random(n) < 0.03
    columns = {
        "report_id": _quoted(report_id),
        "report_date": _null(
            _quoted(join(join(year, month, day, sep="-"), clock, sep="T")), rng.random(n) < 0.005
        ),
        "contact_method": take(_json_strings(CONTACT_METHODS), _codes(rng, CONTACT_METHODS, n)),
        "caller_relationship": take(_json_strings(CALLERS), callers),
        "caller_name": _null(_quoted(join(people["first"], people["last"], sep=" ")), anonymous),
        "caller_phone": _null(_quoted(people["phone"]), anonymous | (rng.random(n) < 0.2)),
        "caller_email": _null(_quoted(people["email"]), anonymous | (rng.random(n) < 0.7)),
        "victim_name": _null(
            _quoted(take(fake.FIRST_NAMES, rng.integers(0, len(fake.FIRST_NAMES), n))),
            rng.random(n) < 0.5,
        ),
        "victim_gender": take(_json_strings(GENDERS), _codes(rng, GENDERS, n)),
        "victim_age_range": take(_json_strings(AGE_RANGES), _codes(rng, AGE_RANGES, n)),
        "victim_citizenship": pc.if_else(
            pa.array(unknown_citizenship), '["Unknown"]', _arrays(list(CITIZENSHIPS), citizenship)
        ),
        "trafficking_type": take(_json_strings(TYPES), kind),
        "industries": _industries(rng, kind, n),
        "control_methods": _arrays(
            list(CONTROLS),
            np.where((rng.random(n) < 0.2)[:, None], -1, _weighted_sets(rng, CONTROLS, n, 3, 0.45)),
        ),
        "recruiter_relations": _arrays(
            list(RECRUITERS),
            np.where(
                (rng.random(n) < 0.4)[:, None], -1, _weighted_sets(rng, RECRUITERS, n, 2, 0.05)
            ),
        ),
        "exploitation_country": _null(
            take(_json_strings(EXPLOITATION_COUNTRIES), _codes(rng, EXPLOITATION_COUNTRIES, n)),
            rng.random(n) < 0.02,
        ),
        "location_state": take(_json_strings(STATES), _codes(rng, STATES, n)),
        "location_city": _quoted(people["city"]),
        "hotline_advocate": _quoted(
            join(
                "Advocate", take(fake.LAST_NAMES, rng.integers(0, len(fake.LAST_NAMES), n)), sep=" "
            )
        ),
        "narrative": _quoted(people["note"]),
    }
    parts: list = []
    for i, name in enumerate(FIELDS):
        parts.append(("{" if i == 0 else ", ") + json.dumps(name) + ": ")
        parts.append(columns[name])
    parts.append("}\n")

    out = out_dir / "hotline"
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    _write_lines(join(*parts), path)
    paths = [path]
    if n:
        withdrawn = report_id.take(pa.array(rng.choice(n, max(1, n // 400), replace=False)))
        paths.append(out / "withdrawals.csv")
        pa_csv.write_csv(
            pa.table({"record_id": withdrawn.take(pc.sort_indices(withdrawn))}), paths[-1]
        )
    return paths
