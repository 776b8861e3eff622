"""`ctdc`: the command line for the data team.

    ctdc run --landing DIR --out DIR [--partners a,b] [--release LABEL] [--warehouse URL]
    ctdc generate --out DIR [--records N] [--seed S] [--partners a,b]
    ctdc profile --landing DIR --partner NAME --out DIR

Exit 0 on success; otherwise 1 (bad input, mapping or coverage) or 2 (usage),
with a message that names partner, file, column and row, never a value.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _partners(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _cmd_run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ctdc_harmonizer import pipeline

    release = args.release or str(pd.Timestamp.now().year)
    info = pipeline.run(
        args.landing, args.out, release, _partners(args.partners), args.mappings, args.warehouse
    )
    totals = info["totals"]
    print(f"release {info['release']}: {info['rows']} harmonized rows in {info['release_dir']}")
    print(
        "reconciliation: "
        + ", ".join(
            f"{k} {sum(v.values()) if isinstance(v, dict) else v}" for k, v in totals.items()
        )
    )
    print(f"warehouse: {info['warehouse']['case_records']} case records loaded")
    privacy = info["warehouse"].get("privacy", {})  # PRIVACY: counts only
    print(
        f"withdrawals: {privacy.get('withdrawals_recorded', 0)} newly registered, "
        f"{privacy.get('records_purged', 0)} record(s) purged from earlier releases"
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from ctdc_harmonizer import samples

    written = samples.generate_all(
        Path(args.out), args.records, args.seed, _partners(args.partners)
    )
    for partner, paths in written.items():
        print(f"{partner}: " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from ctdc_harmonizer import profile

    info = profile.profile_partner(args.landing, args.partner, args.out, args.mappings)
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctdc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="harmonize the partners' extracts into a release")
    run.add_argument("--landing", required=True, help="folder with one sub-folder per partner")
    run.add_argument("--out", required=True, help="folder that receives <release>/")
    run.add_argument("--partners", help="comma-separated partner codes (default: all mapped)")
    run.add_argument("--release", help="release label (default: the current year)")
    run.add_argument("--mappings", help="mapping folders root (default: the repo's mappings/)")
    run.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    run.set_defaults(func=_cmd_run)
    gen = sub.add_parser("generate", help="write seeded sample extracts into a landing folder")
    gen.add_argument("--out", required=True)
    gen.add_argument("--records", type=int, default=600, help="records per partner")
    gen.add_argument("--seed", type=int, default=2025)
    gen.add_argument("--partners")
    gen.set_defaults(func=_cmd_generate)
    prof = sub.add_parser(
        "profile", help="profile a partner's extract and write a mapping template"
    )
    prof.add_argument("--landing", required=True)
    prof.add_argument("--partner", required=True)
    prof.add_argument("--out", required=True)
    prof.add_argument("--mappings")
    prof.set_defaults(func=_cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "alembic", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    from ctdc_harmonizer.errors import CtdcError

    try:
        return args.func(args)
    except CtdcError as exc:
        print(f"ctdc: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
