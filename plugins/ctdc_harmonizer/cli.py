"""`ctdc`: the command line for the data team.

    ctdc run --landing DIR --out DIR [--partners a,b] [--release LABEL] [--warehouse URL]
             [--accept-retirements a,b] [--sources FILE]
    ctdc pull --landing DIR --out DIR [--sources FILE] [--warehouse URL]
    ctdc manifest FOLDER [--name NAME]   (a partner, last: datapackage.json with SHA-256s)
    ctdc history --out DIR [--partner P] [--warehouse URL]
    ctdc rebuild --out DIR --release LABEL --into DIR [--warehouse URL]
    ctdc backfill --history DIR --out DIR [--warehouse URL]
    ctdc generate --out DIR [--records N] [--seed S] [--partners a,b]
    ctdc profile --landing DIR --partner NAME --out DIR
    ctdc check --out DIR [--release LABEL] [--warehouse URL]
    ctdc unmapped --landing DIR --partner NAME --out FILE
    ctdc check-delivery --partner NAME [--out DIR] [--mappings DIR] FILE_OR_FOLDER...
    ctdc synthesize --release LABEL [--out DIR | --handoff DIR] [--epsilon E] [--warehouse URL]

Exit 0 on success; otherwise 1 (bad input, mapping, coverage, out folder, a release being
written by another run, a release folder and warehouse that disagree) or 2 (usage), with a
message that names partner, file, column and row, never a value. Any unexpected exception is
reported by type only (`safety.describe`): no traceback, no library message.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from pathlib import Path


def _partners(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _positive_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("expects a whole number of 1 or more")
    return int(text)


def _cmd_run(args: argparse.Namespace) -> int:
    import datetime as dt

    from ctdc_harmonizer.pipeline.local import run_annual_update
    from ctdc_harmonizer.run.plan import default_release_label

    release = args.release or default_release_label(dt.date.today())
    done = run_annual_update(
        args.landing,
        args.out,
        release,
        partners=_partners(args.partners),
        mappings=args.mappings,
        warehouse_url=args.warehouse,
        accept_retirements=_partners(args.accept_retirements),
        sources=args.sources,
        workers=args.workers,
    )
    plan = done.plan
    for line in plan.arrivals.lines():
        print(line.replace("**", ""))
    if plan.nothing_to_do:
        print(f"release {release}: nothing to do (no new delivery, no mapping change)")
        _print_partners(plan, None)
        return 0
    folder, committed, published, purged = done.folder, done.committed, done.published, done.purged
    print(f"release {published.release}: {published.rows} records in {published.release_dir}")
    print(
        "delivered rows: "
        + ", ".join(f"{k} {v}" for k, v in folder.totals.items() if not k.startswith("records_"))
    )
    _print_partners(plan, published.release_dir)
    if done.receipts and done.receipts.receipts:
        where = Path(args.out) / "receipts" / published.release
        names = ", ".join(sorted(done.receipts.receipts))
        print(f"partners' receipts (counts only, one per delivery): {where}/ ({names})")
    print(
        f"store: release {committed.release} is number {committed.sequence}; "
        f"{committed.versions_inserted} new record version(s), {committed.versions_closed} "
        f"closed, {committed.deliveries} delivery(ies) recorded"
    )
    if plan.unmapped_partner_folders:
        print("not read (no mapping): " + ", ".join(plan.unmapped_partner_folders))
    print(  # PRIVACY: counts only
        f"withdrawals: {committed.withdrawals_recorded} newly registered, "
        f"{committed.records_erased} stored record(s) erased, {purged.records_purged} "
        f"row(s) purged from {purged.folders_rewritten} earlier release folder(s)"
    )
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    """Pull the partners' complete new deliveries into the landing folder, nothing more.
    Credentials: the sources' Airflow connections, as $AIRFLOW_CONN_<ID> variables."""
    from ctdc_harmonizer.deliveries.pull import REFUSED, pull_deliveries
    from ctdc_harmonizer.deliveries.sources import sources_path

    if sources_path(args.sources) is None:
        print("no sources file: give --sources FILE or set CTDC_SOURCES", file=sys.stderr)
        return 1
    arrivals = pull_deliveries(
        args.landing, args.out, sources=args.sources, warehouse_url=args.warehouse
    )
    for line in arrivals.lines():
        print(line.replace("**", ""))
    return 1 if any(a.state == REFUSED for a in arrivals.partners.values()) else 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.deliveries.complete import write_manifest

    if not Path(args.folder).is_dir():
        print(f"folder {args.folder} not found", file=sys.stderr)
        return 1
    written = write_manifest(args.folder, args.name or Path(args.folder).name)
    print(f"wrote {written}: upload it last, after every file it names")
    return 0


def _print_partners(plan, release_dir: str | None) -> None:
    """Per partner: delivered (mode) / re-harmonized / carried from release X, with counts."""
    from pathlib import Path

    from ctdc_harmonizer.release import report
    from ctdc_harmonizer.safety import printable_name

    table = None
    if release_dir:
        table = report.reconciliation(Path(release_dir)).set_index("partner")
    for partner, entry in sorted(plan.partner_plans.items()):
        if table is not None and partner not in table.index:
            continue
        if table is None and not entry.stored_records:
            continue
        text = {
            "delivered": f"delivered ({entry.mode})",
            "reharmonized": f"re-harmonized ({entry.reharmonize})",
            "carried": f"carried from release {entry.last_delivery or '-'}",
            "discontinued": f"discontinued, carried from release {entry.last_delivery or '-'}",
        }[entry.state]
        if entry.flagged:
            text += f"; NOT DELIVERED FOR {entry.releases_without_delivery} RELEASE(S)"
        if table is not None:
            row = table.loc[partner]
            text += (
                f": {row['added']} added, {row['revised']} revised, {row['retired']} retired, "
                f"{row['erased']} erased; {row['previous']} -> {row['current']} records, "
                f"{row['released']} released"
            )
        print(f"  {partner}: {text}")
        for name, reason in entry.not_read.items():
            print(f"    not read: {printable_name(name)}: {reason}")


def _cmd_history(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.store import history
    from ctdc_harmonizer.warehouse import default_warehouse_url

    url = args.warehouse or default_warehouse_url(args.out)
    deliveries = history.deliveries(url, args.partner)
    if deliveries.empty:
        print("no delivery recorded in the store yet")
        return 0
    print("deliveries (per partner and release: rows read and where they went):")
    shown = deliveries.drop(columns=["sequence"]).astype({"received_at": str})
    shown["received_at"] = shown["received_at"].str.slice(0, 19)
    print(shown.to_string(index=False))
    held = history.releases(url)
    if args.partner:
        held = held[held["partner"] == args.partner]
    print("\nreleases (records each held, per partner):")
    print(
        held.pivot_table(
            index=["release", "sequence", "rows"], columns="partner", values="records", fill_value=0
        ).to_string()
    )
    return 0


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.store import history
    from ctdc_harmonizer.warehouse import default_warehouse_url

    url = args.warehouse or default_warehouse_url(args.out)
    rebuilt = history.rebuild_release(url, args.release, args.into)
    print(f"release {rebuilt['release']}: {rebuilt['rows']} records rebuilt in {args.into}")
    published = Path(args.out) / args.release
    for name, digest in rebuilt["files"].items():
        if (published / name).is_file():
            from ctdc_harmonizer.fileio import sha256_of

            same = sha256_of(published / name) == digest
            print(f"  {name}: {'identical to' if same else 'DIFFERS from'} {published / name}")
    return 0


def _cmd_backfill(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.pipeline.backfill import backfill

    runs = backfill(args.history, args.out, mappings=args.mappings, warehouse_url=args.warehouse)
    for done in runs:
        plan = done.plan
        if plan.nothing_to_do:
            print(f"release {plan.release}: nothing to do")
            continue
        published = done.published
        print(f"release {published.release}: {published.rows} records in {published.release_dir}")
        _print_partners(plan, published.release_dir)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.release import consistency as state

    states = state.release_states(args.out, args.warehouse, only=args.release)
    bad = 0
    for label, entry in states.items():
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        print(f"release {label}: {entry['state']}{reason}")
        bad += entry["state"] in state.BAD_STATES or entry["state"] == state.UNREACHABLE
    if bad:
        print(
            f"ctdc: error: {bad} release(s) whose folder and warehouse disagree or cannot be "
            "compared; rerun them to replace both",
            file=sys.stderr,
        )
    return 1 if bad else 0


def _cmd_unmapped(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.run.file_check import unmapped_report

    info = unmapped_report(args.landing, args.partner, args.out, args.mappings)
    print(
        f"partner {info['partner']}: {info['values_listed']} value(s) listed in the restricted "
        f"report {info['report']} ({info['rows']} rows read)"
    )
    return 0


def _cmd_check_delivery(args: argparse.Namespace) -> int:
    # Runs on a partner's machine: no Airflow, no warehouse, no key; nothing is sent.
    from ctdc_harmonizer.release.receipts import receipt_text
    from ctdc_harmonizer.run.delivery_check import check_delivery

    checked = check_delivery(
        args.partner, args.paths, args.mappings, args.out, release_year=args.release_year
    )
    receipt = checked.receipt
    print(receipt_text(receipt))
    if checked.files is not None:
        print(f"receipt written: {checked.files.json_path} and {checked.files.html_path}")
    if receipt.ok:
        print(f"partner {receipt.partner}: the delivery can be sent (nothing was sent)")
        return 0
    for p in receipt.problems:  # located, never quoted
        print(
            f"ctdc: problem: partner '{receipt.partner}', file '{p.file or '-'}', column "
            f"'{p.column or '-'}', row {p.row if p.row is not None else '-'}: {p.reason}",
            file=sys.stderr,
        )
    if not receipt.reconciles:
        print("ctdc: problem: the counts do not reconcile", file=sys.stderr)
    print(
        f"ctdc: error: partner '{receipt.partner}': fix the problem(s) above before sending",
        file=sys.stderr,
    )
    return 1


def _cmd_generate(args: argparse.Namespace) -> int:
    from ctdc_harmonizer import samples

    written = samples.generate_all(
        Path(args.out), args.records, args.seed, _partners(args.partners)
    )
    for partner, paths in written.items():
        print(f"{partner}: " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.mapping import profile

    info = profile.profile_partner(args.landing, args.partner, args.out, args.mappings)
    print(json.dumps(info, indent=2))
    return 0


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.pipeline.synthesis import SYNTHESIS

    result = local.run(
        SYNTHESIS,
        release=args.release,
        handoff=args.handoff,
        out=args.out,
        epsilon=args.epsilon,
        delta=args.delta,
        reporting_length=args.reporting_length,
        seed=args.seed,
        warehouse_url=args.warehouse,
    )
    fitted, evaluated, public = result["fit_aggregates"], result["evaluate"], result["publish"]
    print(f"public dataset: {public.public_dir} ({public.rows} rows)")
    print(
        f"epsilon spent now: {fitted.epsilon_spent_now:g} "
        f"(release total {fitted.epsilon_spent_release:g}; "
        f"aggregates {'reused' if fitted.reused else 'fitted'})"
    )
    print(f"mean abs. error vs DP aggregates by length: {evaluated.mae_vs_dp_by_length}")
    print(f"comparability report (restricted): {evaluated.report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctdc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="harmonize the partners' extracts into a release")
    run.add_argument("--landing", required=True, help="folder with one sub-folder per partner")
    run.add_argument("--out", required=True, help="folder that receives <release>/")
    run.add_argument("--partners", help="comma-separated partner codes (default: all mapped)")
    from ctdc_harmonizer.run.plan import DEFAULT_RELEASE_RULE

    run.add_argument("--release", help=f"release label; empty: {DEFAULT_RELEASE_RULE}")
    run.add_argument("--mappings", help="mapping folders root (default: the repo's mappings/)")
    run.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    run.add_argument(
        "--accept-retirements",
        help="partners whose full delivery may retire more of their records than their "
        "mapping allows (comma-separated)",
    )
    sources_help = "where partners deliver (sources.yaml; default: $CTDC_SOURCES, else none)"
    run.add_argument("--sources", help=sources_help)
    run.add_argument(
        "--workers",
        type=_positive_count,
        help="processes for the partners' chains (default: one per core; 1: everything in "
        "this one process, for a busy machine or a debugger)",
    )
    run.set_defaults(func=_cmd_run)
    pull = sub.add_parser("pull", help="pull complete new deliveries from the partners' drops")
    pull.add_argument("--landing", required=True, help="folder receiving <partner>/ copies")
    pull.add_argument("--out", required=True, help="the out folder of the runs")
    pull.add_argument("--sources", help=sources_help)
    pull.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    pull.set_defaults(func=_cmd_pull)
    manifest = sub.add_parser(
        "manifest", help="(partners) write datapackage.json for a delivery folder, last"
    )
    manifest.add_argument("folder", help="the folder of the delivery's files")
    manifest.add_argument("--name", help="the delivery's name (default: the folder's)")
    manifest.set_defaults(func=_cmd_manifest)
    hist = sub.add_parser("history", help="each partner's deliveries and each release, counts only")
    hist.add_argument("--out", required=True, help="the out folder of the runs")
    hist.add_argument("--partner", help="one partner only")
    hist.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    hist.set_defaults(func=_cmd_history)
    rebuild = sub.add_parser(
        "rebuild", help="write an earlier release's table again from the store"
    )
    rebuild.add_argument("--out", required=True, help="the out folder of the runs")
    rebuild.add_argument("--release", required=True, help="the release label")
    rebuild.add_argument("--into", required=True, help="folder receiving the rebuilt table")
    rebuild.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    rebuild.set_defaults(func=_cmd_rebuild)
    back = sub.add_parser("backfill", help="load a folder of past deliveries, release by release")
    back.add_argument("--history", required=True, help="folder of <release>/<partner>/ folders")
    back.add_argument("--out", required=True, help="folder that receives the releases")
    back.add_argument("--mappings", help="mapping folders root (default: the repo's mappings/)")
    back.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    back.set_defaults(func=_cmd_backfill)
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
    check = sub.add_parser(
        "check", help="compare each release folder with the warehouse (content hash)"
    )
    check.add_argument("--out", required=True)
    check.add_argument("--release", help="one release label (default: every release)")
    check.add_argument("--warehouse", help="SQLAlchemy URL (default: sqlite file in --out)")
    check.set_defaults(func=_cmd_check)
    unmapped = sub.add_parser(
        "unmapped",
        help="write a partner's restricted unmapped-values report (after a coverage failure)",
    )
    unmapped.add_argument("--landing", required=True)
    unmapped.add_argument("--partner", required=True)
    unmapped.add_argument("--out", required=True, help="report file (created owner-only)")
    unmapped.add_argument("--mappings")
    unmapped.set_defaults(func=_cmd_unmapped)
    checkd = sub.add_parser(
        "check-delivery",
        help="check a delivery on the partner's machine before sending it (prints its receipt)",
    )
    checkd.add_argument("--partner", required=True, help="the partner's code (its mapping)")
    checkd.add_argument("paths", nargs="+", help="the files to send, or their folder")
    checkd.add_argument("--out", help="folder receiving receipt.json and receipt.html")
    checkd.add_argument("--mappings", help="mapping folders root (default: the project's)")
    checkd.add_argument(
        "--release-year", type=int, help="year of the release (default: as ctdc run)"
    )
    checkd.set_defaults(func=_cmd_check_delivery)
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
    from ctdc_harmonizer.safety import ValueFreeTracebacks, describe

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ValueFreeTracebacks) for f in handler.filters):
            handler.addFilter(ValueFreeTracebacks())
    for noisy in ("great_expectations", "alembic", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # the boundary: whatever failed, a value-free line, no traceback
        print(f"ctdc: error: {describe(exc)}", file=sys.stderr)
        return 1
    finally:
        # Everything still referenced is about to be freed by the exit anyway: spare the
        # interpreter's last collections over a few million objects (pandas, pyarrow, GX).
        gc.freeze()


def entry() -> None:
    """The `ctdc` command: `main`, then an exit that skips the interpreter's teardown.

    By then every file is written and closed, every database connection disposed and the
    worker processes are stopped (their pools are shut down and waited for in
    `pipeline/local.py`); what is left is freeing a few
    million objects one by one (pandas, pyarrow), about half a second of a small run.
    Tests call `main` and keep their interpreter."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
