"""The synthesis, declared once: what `ctdc synthesize` and the `ctdc_synthesis` DAG run.

    plan_synthesis -> verify_handoff -> account_people -> disclosure_risk -> suppress
    -> fit_aggregates -> sample -> evaluate -> publish

Each step takes the plan and the typed results it needs, writes its own files (intermediates
in the plan's restricted work folder, run/workdir.py's SynthesisWork; restricted reports in
`<out>/restricted/<release>/`; the public release in `<out>/public/<release>/`) and returns a
small typed result. Stage libraries are imported inside the steps (parsing the DAG stays
light). DP aggregates are fitted once per data and parameters: a rerun reuses them from the
privacy-budget ledger and spends nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.pipeline.declaration import Pipeline
from ctdc_harmonizer.synthesis.plan import SynthesisPlan, plan_synthesis

if TYPE_CHECKING:  # imported inside the steps at run time (DAG parsing stays light)
    from ctdc_harmonizer.synthesis.suppress import RareDropped

log = logging.getLogger(__name__)

RISK_REPORT = "risk_report.json"
SUPPRESSION_REPORT = "suppression_report.json"
COMPARABILITY = "comparability.json"
COMPARABILITY_PAGE = "comparability.html"
SYNTHESIS_RECORD = "synthesis.json"
PEOPLE_REPORT = "people_ledger.json"  # restricted: counts and distributions, no pseudonym
PEOPLE_FRAME = "people.parquet"  # work (restricted, removed once published): keys per row


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HandoffVerified(Result):
    """The hand-off matches its manifest, the codebook and the release named."""

    release: str
    rows: int
    manifest: str


class PeopleAccounted(Result):
    """Who the fit will include, against the lifetime cap per person (synthesis/people.py).
    Counts and the distribution of cumulative epsilon only, never a pseudonym."""

    accounted: bool  # False only when the config lets an unaccountable release through
    rows: int
    people: int
    left_out_rows: int
    left_out_people: int
    policy: str
    cap_epsilon: float
    cumulative_epsilon_after_fit: dict  # of the people kept: max, mean, p50, p90, p99


class RiskAssessed(Result):
    risk_report: str
    records_in_classes_below_k: int


class SuppressedTable(Result):
    """The table with its rare values suppressed, as the strings pac-synth takes."""

    cells_set_to_null: int
    rows: int
    sensitive: str


class FittedAggregates(Result):
    aggregates_dir: str
    aggregates_sha256: str
    reused: bool
    epsilon_spent_now: float
    epsilon_spent_release: float
    combinations: int
    protected_records: int
    fit_seconds: float
    pacsynth_sample_seconds: float | None = None


class SyntheticSample(Result):
    rows: int
    sampler: str
    sample_seconds: float
    synthetic: str
    stats: dict = {}
    rare_values_dropped: int = 0  # released values below the rare-value threshold (counts)


class Comparability(Result):
    """Where the restricted report is, and its public headline for the published sampler
    (against the DP aggregates, per combination length). Nothing measured against the
    sensitive data: XCom is readable by every reader of the DAG, and those figures are for
    the data team (the synthesis tab's restricted view reads them from the report)."""

    report: str
    mae_vs_dp_by_length: Any


class PublicRelease(Result):
    public_dir: str
    rows: int
    epsilon: float
    epsilon_spent_now: float


def verify_handoff(plan: SynthesisPlan) -> HandoffVerified:
    """Refuse a hand-off that does not match its manifest, the codebook or the named release;
    start the work folder from nothing (a rerun starts from the hand-off again)."""
    from ctdc_harmonizer.synthesis import handoff

    verified = handoff.verify_handoff(plan.handoff, plan.release, plan.expected_manifest_sha256)
    plan.work.create()
    log.info("hand-off of release %s verified: %d rows", plan.release, verified.rows)
    return HandoffVerified(
        release=plan.release, rows=verified.rows, manifest=verified.manifest_sha256
    )


def _released(fitted: FittedAggregates) -> RareDropped:
    """The stored DP aggregates under the rare-value rule (post-processing; synthesis/suppress.py),
    as every step after the fit reads them."""
    from pathlib import Path

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.synthesis import fit
    from ctdc_harmonizer.synthesis.config import load_suppression_config
    from ctdc_harmonizer.synthesis.suppress import drop_rare_released

    aggregates = fit.load(Path(fitted.aggregates_dir), fitted.aggregates_sha256)
    return drop_rare_released(aggregates, load_suppression_config(), default_codebook())


def _table(plan: SynthesisPlan):
    """The verified hand-off and its table, without the rows account_people left out."""
    from ctdc_harmonizer.synthesis import handoff

    verified = handoff.verify_handoff(plan.handoff, plan.release, plan.expected_manifest_sha256)
    table = handoff.read_table(verified)
    if plan.work.exists(PEOPLE_FRAME):
        keep = plan.work.read_frame(PEOPLE_FRAME, ["keep"])["keep"].to_numpy(dtype=bool)
        table = table[keep].reset_index(drop=True)
    return verified, table


def account_people(plan: SynthesisPlan, verified: HandoffVerified) -> PeopleAccounted:
    """The people of the release (from the store), their cumulative privacy loss after this
    fit, and the lifetime cap per person: refused here when anyone would pass it, or those
    people left out of the synthesis input (over_cap: leave_out), counted and reported."""
    import pandas as pd

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.fileio import write_json
    from ctdc_harmonizer.synthesis import handoff, people
    from ctdc_harmonizer.synthesis.ledger import FAILED, Ledger

    config, url = plan.config, plan.warehouse()
    cap, params = config.per_person, config.dp
    found = people.release_people(url, plan.release, default_codebook())
    if found is None:
        if cap.release_not_in_store == "refuse":
            raise people.NotAccountable(
                f"release {plan.release} is not in the warehouse's store: the people of its "
                "fit cannot be accounted; refused before fit (per_person.release_not_in_store)"
            )
        log.warning("release %s is not in the store: fitted unaccounted per person", plan.release)
        report = {"release": plan.release, "accounted": False, "rows": verified.rows}
        write_json(plan.restricted / PEOPLE_REPORT, report)
        return PeopleAccounted(
            accounted=False,
            rows=verified.rows,
            people=0,
            left_out_rows=0,
            left_out_people=0,
            policy=cap.over_cap,
            cap_epsilon=cap.lifetime_epsilon,
            cumulative_epsilon_after_fit={},
        )
    table = handoff.read_table(handoff.verify_handoff(plan.handoff, plan.release))
    people.check_same_table(found, table, plan.release)
    # A rerun with the same parameters reuses that fit's aggregates and spends nothing: its
    # own earlier attempts are not counted twice in deciding who is over the cap (the fit step
    # checks again, counting everything, whenever it would spend).
    ledger = Ledger(url)
    try:
        same = tuple(
            a.attempt_id
            for a in ledger.attempts(plan.release)
            if a.outcome != FAILED and a.params_sha256 == params.params_hash()
        )
    finally:
        ledger.dispose()
    after = people.projected(url, found.persons, params, same)
    over = people.over_cap(after, cap)
    if over.any() and cap.over_cap == "refuse":
        raise people.PersonalBudgetExceeded(
            people.refusal(plan.release, found.persons[over].nunique(), params, cap)
        )
    keep = ~over
    plan.work.write_frame(
        PEOPLE_FRAME, pd.DataFrame({"person": found.persons, "keep": keep.to_numpy()})
    )
    kept = after[keep].assign(person=found.persons[keep].to_numpy()).drop_duplicates("person")
    result = PeopleAccounted(
        accounted=True,
        rows=len(found.persons),
        people=int(found.persons.nunique()),
        left_out_rows=int(over.sum()),
        left_out_people=int(found.persons[over].nunique()),
        policy=cap.over_cap,
        cap_epsilon=cap.lifetime_epsilon,
        cumulative_epsilon_after_fit=people.distribution(kept["epsilon"]),
    )
    before = people.cumulative(url, found.persons, same)
    write_json(
        plan.restricted / PEOPLE_REPORT,
        {
            "release": plan.release,
            **result.model_dump(mode="json"),
            "epsilon_per_fit": params.epsilon,
            "delta_per_fit": params.delta,
            "cap_delta": cap.lifetime_delta,
            "cumulative_epsilon_before_fit": people.distribution(before["epsilon"]),
            "cumulative_delta_after_fit_max": float(kept["delta"].max()) if len(kept) else 0.0,
        },
    )
    log.info(
        "release %s: %d people; %d left out over the cap per person (epsilon %g); "
        "cumulative epsilon after the fit: max %s",
        plan.release,
        result.people,
        result.left_out_people,
        cap.lifetime_epsilon,
        result.cumulative_epsilon_after_fit.get("max"),
    )
    return result


def disclosure_risk(plan: SynthesisPlan, verified: HandoffVerified) -> RiskAssessed:
    """Records in equivalence classes smaller than k (restricted report)."""
    from ctdc_harmonizer.fileio import write_json
    from ctdc_harmonizer.synthesis.config import load_suppression_config
    from ctdc_harmonizer.synthesis.risk import disclosure_risk as risk_report

    _, table = _table(plan)
    report = risk_report(table, plan.config.risk, load_suppression_config())
    path = plan.restricted / RISK_REPORT
    write_json(path, {"release": plan.release, **report})
    log.info(
        "risk: %d of %d records in equivalence classes smaller than k=%d",
        report["records_in_classes_below_k"],
        report["records"],
        report["k"],
    )
    return RiskAssessed(
        risk_report=str(path), records_in_classes_below_k=report["records_in_classes_below_k"]
    )


def suppress(plan: SynthesisPlan, verified: HandoffVerified) -> SuppressedTable:
    """Rare values set to NULL (schemas/suppression_v1.yaml); the table as pac-synth's
    strings."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.fileio import write_json
    from ctdc_harmonizer.synthesis import fit
    from ctdc_harmonizer.synthesis.config import load_suppression_config
    from ctdc_harmonizer.synthesis.suppress import suppress as apply_suppression

    codebook = default_codebook()
    _, table = _table(plan)
    done = apply_suppression(table, load_suppression_config(), codebook)
    strings = fit.as_strings(done.frame, codebook)
    path = plan.work.write_frame(plan.work.SENSITIVE, strings)
    write_json(plan.restricted / SUPPRESSION_REPORT, done.report)
    log.info("suppression: %d cell(s) set to NULL", done.report["cells_set_to_null"])
    return SuppressedTable(
        cells_set_to_null=done.report["cells_set_to_null"], rows=len(strings), sensitive=path
    )


def fit_aggregates(plan: SynthesisPlan, suppressed: SuppressedTable) -> FittedAggregates:
    """DP aggregates: reused when this data and these parameters were already spent on."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.synthesis import fit
    from ctdc_harmonizer.synthesis.guard import check_release_size
    from ctdc_harmonizer.synthesis.ledger import FAILED, SPENT, Ledger

    codebook = default_codebook()
    config, params = plan.config, plan.config.dp
    strings = plan.work.read_frame(plan.work.SENSITIVE)
    dataset_sha, rows = fit.dataset_hash(strings), len(strings)
    folder = plan.restricted / "aggregates" / fit.store_key(dataset_sha, params)
    ledger = Ledger(plan.warehouse())
    try:
        reused = None
        for spend in reversed(ledger.reusable(plan.release, dataset_sha, params.params_hash())):
            if (folder / fit.AGGREGATES_FILE).is_file():
                try:
                    fit.load(folder, spend.aggregates_sha256)
                except fit.FitError:
                    continue  # altered on disk: not trusted, not reused
                reused = spend
                break
        if reused is None:
            # before fit: a release too small to publish anything, or over budget
            check_release_size(
                plan.release,
                rows,
                params,
                len(codebook.columns),
                config.release_size.min_records_per_threshold,
            )
            ledger.check_budget(plan.release, params, config.budget)
            attempt = _record_people(plan, rows)  # before fit, every attempt counted
            attempt = ledger.start(plan.release, dataset_sha, params, attempt)
            own_engine = config.aggregation.engine == "own"
            want_pacsynth = not own_engine and (
                config.sampling.sampler == "pacsynth"
                or rows <= config.sampling.compare_with_pacsynth_up_to_rows
            )
            try:
                if own_engine:
                    aggregates, seconds = fit.fit_own(strings, dataset_sha, params, codebook)
                    pac_sample = None
                else:
                    data = fit.dataset(strings)
                    del strings  # pac-synth holds its own copy: the frame need not outlive it
                    aggregates, pac_sample, seconds = fit.fit(
                        data, dataset_sha, params, codebook, config.sampling.threads, want_pacsynth
                    )
            except fit.FitError as exc:
                if not exc.noise_drawn:  # refused before any noise: nothing was spent
                    ledger.close(attempt, plan.release, dataset_sha, params, FAILED)
                    raise
                # after noise, the attempt stays `started`: counted as spent
                raise fit.FitError(
                    f"release {plan.release}: {exc}; the fit had drawn noise, so its epsilon "
                    f"{params.epsilon:g} counts as spent although nothing was kept",
                    noise_drawn=True,
                ) from None
            # a failure to store them leaves the attempt `started` too: the noise was drawn
            digest = fit.save(aggregates, folder, pac_sample)
            ledger.close(attempt, plan.release, dataset_sha, params, SPENT, digest)
        else:
            digest, seconds = reused.aggregates_sha256, {}
        spent_epsilon, _ = ledger.spent(plan.release)
    finally:
        ledger.dispose()
    aggregates = fit.load(folder, digest)
    fitted = FittedAggregates(
        aggregates_dir=str(folder),
        aggregates_sha256=digest,
        reused=reused is not None,
        epsilon_spent_now=0.0 if reused is not None else params.epsilon,
        epsilon_spent_release=spent_epsilon,
        combinations=len(aggregates.counts),
        protected_records=aggregates.protected_records,
        fit_seconds=seconds.get("fit", 0.0),
        pacsynth_sample_seconds=seconds.get("pacsynth_sample"),
    )
    log.info(
        "release %s: %s DP aggregates (%d combinations); epsilon spent now %g, in all %g",
        plan.release,
        "reused stored" if fitted.reused else "fitted",
        fitted.combinations,
        fitted.epsilon_spent_now,
        spent_epsilon,
    )
    return fitted


def _record_people(plan: SynthesisPlan, rows: int) -> str:
    """The attempt id of a fit about to run, its people recorded under it first; refused
    when the fit would take anyone past the cap per person, counting every attempt."""
    from ctdc_harmonizer.synthesis import people
    from ctdc_harmonizer.synthesis.ledger import new_attempt_id

    attempt = new_attempt_id()
    if not plan.work.exists(PEOPLE_FRAME):  # a release let through unaccounted (config)
        return attempt
    frame = plan.work.read_frame(PEOPLE_FRAME)
    persons = frame["person"][frame["keep"].to_numpy(dtype=bool)].astype("string")
    if len(persons) != rows:
        raise people.NotAccountable(
            f"release {plan.release}: {rows} rows to fit but {len(persons)} people accounted"
        )
    url, cap, params = plan.warehouse(), plan.config.per_person, plan.config.dp
    over = people.over_cap(people.projected(url, persons, params), cap)
    if over.any():
        raise people.PersonalBudgetExceeded(
            people.refusal(plan.release, persons[over].nunique(), params, cap)
        )
    people.record(url, attempt, plan.release, persons, params)
    return attempt


def sample(plan: SynthesisPlan, fitted: FittedAggregates) -> SyntheticSample:
    """Synthetic records from the stored DP aggregates (post-processing: spends no epsilon)."""
    import time
    from pathlib import Path

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.errors import CtdcError
    from ctdc_harmonizer.synthesis import fit
    from ctdc_harmonizer.synthesis import sample as sampler
    from ctdc_harmonizer.synthesis.suppress import null_rare_values

    codebook = default_codebook()
    config = plan.config
    folder = Path(fitted.aggregates_dir)
    released = _released(fitted)
    aggregates = released.aggregates
    started = time.monotonic()
    if config.sampling.sampler == "own":
        required = frozenset(v.name for v in codebook.variables if v.required or v.type == "year")
        settings = sampler.SamplerSettings(
            waves=config.sampling.waves,
            weight_exponent=config.sampling.weight_exponent,
            first_use_penalty=config.sampling.first_use_penalty,
            one_record_per_protected_record=config.sampling.one_record_per_protected_record,
            leftovers_exceed_pair_counts=config.sampling.leftovers_exceed_pair_counts,
        )
        synthetic = sampler.sample(
            aggregates,
            codebook.columns,
            seed=config.sampling.seed,
            start_with=required,
            settings=settings,
        )
    else:
        synthetic = fit.load_pacsynth_sample(folder)
        if synthetic is None:
            raise CtdcError(
                f"release {plan.release}: pac-synth's sampler runs only right after a fit, "
                "and these stored aggregates were fitted without it; a new fit would spend "
                "epsilon again (change a parameter deliberately, or use sampler: own)"
            )
        synthetic = null_rare_values(synthetic, released.values)
    seconds = round(time.monotonic() - started, 2)
    path = plan.work.write_frame(plan.work.SYNTHETIC, synthetic[codebook.columns])
    log.info(
        "sampled %d synthetic records (%s sampler); %d released value(s) below the rare-value "
        "threshold left out with %d combination(s)",
        len(synthetic),
        config.sampling.sampler,
        len(released.values),
        released.report["combinations_dropped"],
    )
    return SyntheticSample(
        rows=len(synthetic),
        sampler=config.sampling.sampler,
        sample_seconds=seconds,
        synthetic=path,
        rare_values_dropped=len(released.values),
    )


def evaluate(
    plan: SynthesisPlan,
    suppressed: SuppressedTable,
    fitted: FittedAggregates,
    synthetic: SyntheticSample,
) -> Comparability:
    """The synthetic data against the DP aggregates and the sensitive counts (restricted
    report; its public part kept for the public release)."""
    from pathlib import Path

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.fileio import write_json
    from ctdc_harmonizer.synthesis import evaluate as comparability
    from ctdc_harmonizer.synthesis import fit
    from ctdc_harmonizer.synthesis.suppress import null_rare_values

    codebook = default_codebook()
    config, work = plan.config, plan.work
    folder = Path(fitted.aggregates_dir)
    released = _released(fitted)
    aggregates = released.aggregates
    sensitive = work.read_frame(work.SENSITIVE)
    sampler = synthetic.sampler
    samples = {sampler: work.read_frame(work.SYNTHETIC)}
    pac = fit.load_pacsynth_sample(folder)
    if pac is not None and sampler != "pacsynth":
        samples["pacsynth"] = null_rare_values(pac, released.values)
    report = comparability.comparability(
        sensitive,
        samples,
        aggregates.counts,
        aggregates.params.reporting_length,
        codebook,
        config.evaluation.count_buckets,
    )
    report = {"release": plan.release, "published_sampler": sampler, **report}
    restricted = plan.restricted
    write_json(restricted / COMPARABILITY, report)
    title = f"Comparability of the synthetic data, release {plan.release} (restricted)"
    (restricted / COMPARABILITY_PAGE).write_text(
        comparability.render_html(report, title, public=False, codebook=codebook),
        encoding="utf-8",
    )
    public = comparability.public_report(report, sampler)
    work.write_json(work.PUBLIC_COMPARABILITY, public)
    title = f"Synthetic data vs DP aggregates, release {plan.release}"
    work.write_text(
        work.PUBLIC_COMPARABILITY_PAGE,
        comparability.render_html(public, title, public=True, codebook=codebook),
    )
    headline = report["headline"][sampler]
    log.info("comparability written to %s", restricted / COMPARABILITY_PAGE)
    return Comparability(
        report=str(restricted / COMPARABILITY_PAGE),
        mae_vs_dp_by_length=headline["mae_vs_dp_by_length"],
    )


def _partner_names(manifest: dict) -> dict[str, str]:
    from ctdc_harmonizer.errors import MappingError
    from ctdc_harmonizer.mapping.partner import load_partner
    from ctdc_harmonizer.paths import mappings_dir

    names = {}
    for code in manifest.get("mappings", {}):
        try:
            names[code] = load_partner(mappings_dir() / code).name
        except (MappingError, OSError):
            names[code] = code
    return names


def publish(
    plan: SynthesisPlan,
    fitted: FittedAggregates,
    synthetic: SyntheticSample,
    comparable: Comparability,
) -> PublicRelease:
    """The public release: synthetic records, DP aggregates, metadata, the public
    comparability report (`<out>/public/<release>/`); the work folder removed."""
    from pathlib import Path

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.fileio import write_json
    from ctdc_harmonizer.synthesis import public_release as public_folder

    codebook = default_codebook()
    config, work = plan.config, plan.work
    verified, _ = _table(plan)
    aggregates = _released(fitted).aggregates
    records = work.read_frame(work.SYNTHETIC)
    year = next(v.name for v in codebook.variables if v.type == "year")
    metadata = public_folder.descriptive_metadata(
        plan.release,
        verified.manifest,
        _partner_names(verified.manifest),
        aggregates,
        len(records),
        int((records[year].fillna("") == "").sum()),
        config.sampling.sampler,
        config.version,
        codebook,
    )
    target = public_folder.publish(
        Path(plan.public_root),
        plan.release,
        records,
        aggregates,
        metadata,
        work.read_json(work.PUBLIC_COMPARABILITY),
        work.read_text(work.PUBLIC_COMPARABILITY_PAGE),
        codebook,
    )
    write_json(
        plan.restricted / SYNTHESIS_RECORD,
        {**fitted.model_dump(mode="json"), "public_dir": str(target)},
    )
    work.remove()
    log.info("release %s published in %s", plan.release, target)
    return PublicRelease(
        public_dir=str(target),
        rows=len(records),
        epsilon=aggregates.params.epsilon,
        epsilon_spent_now=fitted.epsilon_spent_now,
    )


SYNTHESIS = Pipeline(
    name="synthesis",
    plan=plan_synthesis,
    steps=(
        verify_handoff,
        account_people,
        disclosure_risk,
        suppress,
        fit_aggregates,
        sample,
        evaluate,
        publish,
    ),
)
