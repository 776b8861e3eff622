"""`ctdc`: the command line for the data team.

    ctdc run --landing DIR --out DIR [--partners a,b] [--release LABEL] [--warehouse URL]
    ctdc generate --out DIR [--records N] [--seed S] [--partners a,b]
    ctdc profile --landing DIR --partner NAME --out DIR
    ctdc synthesize --release LABEL [--out DIR | --handoff DIR] [--epsilon E] [--warehouse URL]

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


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.synthesis.steps import run_all

    result = run_all(
        release=args.release,
        handoff=args.handoff,
        out=args.out,
        epsilon=args.epsilon,
        delta=args.delta,
        reporting_length=args.reporting_length,
        seed=args.seed,
        warehouse_url=args.warehouse,
    )
    fitted, evaluated = result["fit_aggregates"], result["evaluate"]
    print(f"public dataset: {result['publish']['public_dir']} ({result['publish']['rows']} rows)")
    print(
        f"epsilon spent now: {fitted['epsilon_spent_now']:g} "
        f"(release total {fitted['epsilon_spent_release']:g}; "
        f"aggregates {'reused' if fitted['reused'] else 'fitted'})"
    )
    print(f"mean abs. error vs DP aggregates by length: {evaluated['mae_vs_dp_by_length']}")
    print(f"comparability report (restricted): {evaluated['report']}")
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
    syn = sub.add_parser("synthesize", help="DP synthesis of a handed-off release (public data)")
    syn.add_argument("--release", required=True, help="release label")
    syn.add_argument("--out", help="folder holding the releases (default: $CTDC_OUT)")
    syn.add_argument("--handoff", help="hand-off folder (default: <out>/<release>/handoff)")
    syn.add_argument("--epsilon", type=float, help="default: schemas/synthesis_v1.yaml")
    syn.add_argument("--delta", type=float)
    syn.add_argument("--reporting-length", type=int)
    syn.add_argument("--seed", type=int)
    syn.add_argument("--warehouse", help="SQLAlchemy URL of the ledger (default: as ctdc run)")
    syn.set_defaults(func=_cmd_synthesize)
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
