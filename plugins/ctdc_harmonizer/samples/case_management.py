"""Sample extract: an NGO's case export in the HTCDS 2.0 Excel template layout.

The template has no case id, so withdrawals.csv names withdrawn survivors by the identifying
fields the NGO holds (first name, second name, date of birth; partner.yaml `withdrawals:`).
One of them was referred twice (two records of the same person: both are erased), and the
request is typed as people type: other case, extra spaces, a different date notation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook

from ctdc_harmonizer.samples import fake

# Row 1 of the real template: column A and the outgoing-referral reason have no field name.
FIELD_ROW = [
    None,
    "cas_CaseOwner",
    "prs_Salutation",
    "prs_FirstName",
    "prs_SecondName",
    "con_Consent",
    "prs_Birthdate",
    "prs_Gender",
    "prs_Citizenship",
    "prs_Title",
    "prs_Email",
    "prs_HomePhone",
    "prs_MobilePhone",
    "prs_MailingCity",
    "prs_MailingCountry",
    "prs_MailingState",
    "prs_MailingStreet",
    "prs_MailingPostalCode",
    "vic_TraffickingStatus",
    "vic_TraffickinStatusDecisionMakingOrg",
    "vic_MethodOfRecruitment",
    "vic_LocationOfRecruitment",
    "vic_MethodsOfControl",
    "vic_TypeOfExploitation",
    "vic_ForcedLabourIndustry",
    "vic_TypeOfSexExploitation",
    "vic_LocationOfExploitation",
    "cas_Status",
    "cas_ReferringOrganisation",
    "cas_IncomingReferralDate",
    "cas_ReferringPrimaryCaseWorker",
    "cas_ReasonForIncomingReferral",
    "cas_IncomingReferralDetails",
    "cas_ReferredOrganisation",
    "cas_ReferredPrimaryCaseWorker",
    None,
    "cas_OutgoingReferralDate",
    "cas_OutgoingReferralDetails",
    "cas_ReasonForCaseClosure",
]
# Row 2: labels. The mailing labels are in a different order than the field names above.
LABEL_ROW = [
    None,
    "Case Owner",
    "Salutation",
    "First Name",
    "Second Name",
    "Consent",
    "Birthdate",
    "Gender",
    "Citizenship",
    "Title",
    "Email",
    "Home Phone",
    "Mobile Phone",
    "Mailing Street",
    "Mailing City",
    "Mailing State/Province",
    "Mailing Zip/Postal Code",
    "Mailing Country",
    "Trafficking Status",
    "Trafficking Status Decision Making Organization",
    "Method of Recruitment",
    "Location of Recruitment",
    "Methods of Control",
    "Type of Exploitation",
    "Forced Labour Industry",
    "Type of Sex Exploitation",
    "Location of Exploitation",
    "Status",
    "Referring Organisation",
    "Incoming Referral Date",
    "Referring Primary Case Worker",
    "Reason for Incoming Referral",
    "Incoming Referral Details",
    "Referred Organisation",
    "Referred Primary Case Worker",
    "Reason for Outgoing Referral",
    "Outgoing Referral Date",
    "Outgoing Referral Details",
    "Reason for Case Closure",
]
GENDERS = [
    "Feminine",
    "Masculine",
    "TransgenderFeminine",
    "TransgenderMasculine",
    "NonConforming",
    "NonSpecifiedUnknown",
    "Female",
    "Male",
    "Transgender/NonConforming",
    "Unknown",
]
GENDER_P = [0.42, 0.28, 0.01, 0.01, 0.01, 0.03, 0.12, 0.08, 0.01, 0.03]
COUNTRIES = [
    "UA",
    "VN",
    "NG",
    "RO",
    "PH",
    "BO",
    "KH",
    "TR",
    "MD",
    "ET",
    "Ukraine",
    "Viet Nam",
    "Nigeria",
    "Bolivia (Plurinational State of)",
    "Turkey",
    "Philippines",
    "Congo, Democratic Republic of the",
    "Iran (Islamic Republic of)",
]
CONTROLS = [
    "Physical threats",
    "Threats of law enforcement",
    "Threatens children/family",
    "Debt bondage ",
    "False promises",
    "Physical abuse",
    "Sexual abuse",
    "Takes earnings",
    "Restricts financial access",
    "Restricts medical care",
    "Withholds necessities",
    "Psychological abuse",
    "Psychoactive substance",
    "Excessive working hours",
    "Withholds documents",
    "Other",
]
EXPLOITATION = [
    "Forced labour",
    "Sexual exploitation",
    "Child labour",
    "Forced marriage",
    "Servitude",
    "Forced military (by non-state actors)",
    "Organ removal",
    "Forced begging",
    "Forced adoption",
    "Surrogacy",
    "Other",
]
INDUSTRIES = [
    "Agriculture, forestry and fishing",
    "Construction",
    "Manufacturing",
    "Accommodation and food service activities",
    "Activities of households as employers; undifferentiated goods- and services- "
    "producing activities of households for own use",
    "Mining and quarrying",
    "Wholesale and retail trade; repair of motor vehicles and motorcycles",
]
SEX_TYPES = [
    "Prostitution",
    "Pornography",
    "Remote Interactive Services",
    "Private Sexual Services",
]
STATUS = [
    "Possible victim of trafficking",
    "Actual victim of trafficking",
    "Not a victim of trafficking",
]


def generate(out_dir: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    first, last = fake.names(rng, n)
    referral = fake.dates_between(rng, "2016-01-01", "2024-12-31", n)
    born = referral - pd.to_timedelta(rng.integers(6 * 365, 60 * 365, n), unit="D")
    seps = ["; ", ";"]
    columns = {
        "cas_CaseOwner": np.char.add("Case team ", rng.choice(fake.LAST_NAMES, n)),
        "prs_Salutation": rng.choice(np.array(["Ms", "Mr", "Mx", ""]), n),
        "prs_FirstName": first,
        "prs_SecondName": last,
        "con_Consent": rng.choice(np.array(["Yes", "No"]), n, p=[0.93, 0.07]),
        "prs_Birthdate": born.dt.to_pydatetime(),
        "prs_Gender": rng.choice(np.array(GENDERS), n, p=GENDER_P),
        "prs_Citizenship": rng.choice(np.array(COUNTRIES), n),
        "prs_Title": rng.choice(np.array(["", "Dr", ""]), n),
        "prs_Email": fake.emails(rng, first, last),
        "prs_HomePhone": fake.phones(rng, n),
        "prs_MobilePhone": fake.phones(rng, n),
        "prs_MailingCity": rng.choice(fake.CITIES, n),
        "prs_MailingCountry": rng.choice(np.array(["Serbia", "Viet Nam", "Ukraine"]), n),
        "prs_MailingState": "",
        "prs_MailingStreet": fake.streets(rng, n),
        "prs_MailingPostalCode": rng.integers(10000, 99999, n).astype(str),
        "vic_TraffickingStatus": rng.choice(np.array(STATUS), n, p=[0.35, 0.6, 0.05]),
        "vic_TraffickinStatusDecisionMakingOrg": rng.choice(
            np.array(["Police", "NGO", "Court or prosecution"]), n
        ),
        "vic_MethodOfRecruitment": rng.choice(
            np.array(["Through friends or social events", "At work", "Other"]), n
        ),
        "vic_LocationOfRecruitment": rng.choice(np.array(COUNTRIES[:10]), n),
        "vic_MethodsOfControl": fake.multi_select(rng, CONTROLS, n, 4, 0.15, seps),
        "vic_TypeOfExploitation": fake.multi_select(rng, EXPLOITATION, n, 2, 0.05, seps),
        "vic_ForcedLabourIndustry": fake.multi_select(rng, INDUSTRIES, n, 2, 0.5, seps),
        "vic_TypeOfSexExploitation": fake.multi_select(rng, SEX_TYPES, n, 2, 0.6, seps),
        "vic_LocationOfExploitation": rng.choice(np.array(COUNTRIES + ["RS", "TH", "MY"]), n),
        "cas_Status": rng.choice(np.array(["Active", "Follow up", "Closed", "Closed Referred"]), n),
        "cas_ReferringOrganisation": rng.choice(
            np.array(["Police", "Shelter network", "Embassy"]), n
        ),
        "cas_IncomingReferralDate": referral.dt.to_pydatetime(),
        "cas_ReferringPrimaryCaseWorker": np.char.add("Officer ", rng.choice(fake.LAST_NAMES, n)),
        "cas_ReasonForIncomingReferral": rng.choice(
            np.array(["Additional Services Required", "Other"]), n
        ),
        "cas_IncomingReferralDetails": fake.notes(rng, n),
        "cas_ReferredOrganisation": "",
        "cas_ReferredPrimaryCaseWorker": np.char.add("Officer ", rng.choice(fake.LAST_NAMES, n)),
        "cas_OutgoingReferralDate": "",
        "cas_OutgoingReferralDetails": fake.notes(rng, n),
        "cas_ReasonForCaseClosure": "",
    }
    frame = pd.DataFrame(columns)
    frame["_no_name"] = rng.choice(np.array(["Other", ""]), n)  # the column without field name
    # A few records miss a birthdate or a referral date, as real extracts do.
    frame.loc[rng.random(n) < 0.05, "prs_Birthdate"] = None
    frame.loc[rng.random(n) < 0.01, "cas_IncomingReferralDate"] = None
    withdrawals = _withdrawals(frame, np.random.default_rng([seed, 1]))
    order = [name if name else ("_no_name" if i else None) for i, name in enumerate(FIELD_ROW)]

    out = out_dir / "case_management"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "htcds_case_export.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Case Sheet")
    sheet.append(FIELD_ROW)
    sheet.append(LABEL_ROW)
    values = frame[[c for c in order if c]].to_numpy(dtype=object)
    for row in values:  # writing a sample workbook, not processing records
        cells = [
            None,
            *[None if (isinstance(v, float) and np.isnan(v)) or v == "" else v for v in row],
        ]
        sheet.append(cells)
    workbook.save(path)
    if withdrawals is None:
        return [path]
    withdrawals.to_csv(out / "withdrawals.csv", index=False)
    return [path, out / "withdrawals.csv"]


def _withdrawals(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame | None:
    """Two survivors who withdrew; the first also has a second record (referred again).
    Edits `frame` in place; returns the withdrawals table (None when too few records)."""
    with_birthdate = np.flatnonzero(frame["prs_Birthdate"].notna().to_numpy())
    if len(with_birthdate) < 3:
        return None
    first, second, again = rng.choice(with_birthdate, 3, replace=False)
    person = ["prs_FirstName", "prs_SecondName", "prs_Birthdate", "prs_Gender", "prs_Citizenship"]
    frame.loc[again, person] = frame.loc[first, person].to_numpy()
    chosen = frame.loc[[first, second], ["prs_FirstName", "prs_SecondName", "prs_Birthdate"]]
    born = pd.to_datetime(chosen["prs_Birthdate"])
    return pd.DataFrame(
        {
            # As typed in a request: `  AMARA ` for `Amara`, 1990-03-05 for the date cell.
            "prs_FirstName": [
                "  " + chosen["prs_FirstName"].iloc[0].upper() + " ",
                chosen["prs_FirstName"].iloc[1],
            ],
            "prs_SecondName": [
                chosen["prs_SecondName"].iloc[0].lower(),
                chosen["prs_SecondName"].iloc[1],
            ],
            "prs_Birthdate": [born.iloc[0].strftime("%Y-%m-%d"), born.iloc[1].strftime("%Y-%m-%d")],
        }
    )
