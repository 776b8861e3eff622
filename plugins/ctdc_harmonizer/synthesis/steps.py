"""The synthesis as steps over files: what `ctdc synthesize` runs in a row and the DAG as tasks.

Each step takes the typed `SynthesisPlan` (paths and parameters) and returns a small dict of
paths and counts: all that may travel through XCom or a log line. Frames stay on disk in the
restricted folder `<out>/restricted/<release>/` (work files under `work/`, removed once
published).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import read_json, write_json
from ctdc_harmonizer.synthesis import evaluate as evaluate_mod
from ctdc_harmonizer.synthesis import fit as fit_mod
from ctdc_harmonizer.synthesis import handoff as handoff_mod
from ctdc_harmonizer.synthesis.config import (
    SynthesisConfig,
    load_suppression_config,
    load_synthesis_config,
)

log = logging.getLogger(__name__)
PUBLIC, RESTRICTED = "public", "restricted"
RESERVED_LABELS = {PUBLIC, RESTRICTED, "handoff"}


class SynthesisPlan(BaseModel):
    """A planned synthesis: which release, from which hand-off, into which folders, with
    which parameters. Serialises to the small dict XCom holds (no warehouse URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str
    handoff: str
    expected_manifest_sha256: str | None = None
    out: str
    public_root: str
    restricted_dir: str
    work_dir: str
    config: SynthesisConfig
    warehouse_url: str | None = Field(None, exclude=True)  # in memory only

    @property
    def restricted(self) -> Path:
        return Path(self.restricted_dir)

    @property
    def work(self) -> Path:
        return Path(self.work_dir)


def default_out() -> str:
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "ctdc"
    return os.environ.get("CTDC_OUT") or str(home / "releases")


def event_release(extras: list[dict]) -> dict | None:
    """The asset event a run acts on: the newest one, provided all name the same release.

    Several events are queued when the annual update ran more than once before this run; they
    may only be reruns of one release (a rerun rewrites the hand-off, so the newest is it).
    """
    extras = [e for e in extras if e]
    if not extras:
        return None
    releases = sorted({str(e.get("release")) for e in extras})
    if len(releases) > 1:
        raise CtdcError(
            f"the run was triggered by asset events of {len(releases)} releases "
            f"({', '.join(releases)}); trigger the synthesis of each release by hand"
        )
    return dict(extras[-1])


def plan_synthesis(
    release: str | None = None,
    handoff: str | None = None,
    out: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    reporting_length: int | None = None,
    seed: int | None = None,
    event: dict | None = None,
    warehouse_url: str | None = None,
    config_path: str | None = None,
) -> SynthesisPlan:
    """Resolve which release to synthesize, from where, with which parameters.

    `event` is the triggering asset event's extra (release, rows, handoff, manifest_sha256):
    when present it names the release; a manual `release` param may only repeat it. Without
    an event, `release` is required; never "the newest folder".
    """
    expected_sha = None
    if event:
        missing = [k for k in ("release", "handoff", "manifest_sha256") if not event.get(k)]
        if missing:
            raise CtdcError(f"the triggering asset event lacks {', '.join(missing)}")
        if release and release != event["release"]:
            raise CtdcError(
                f"release param '{release}' differs from the release of the triggering asset "
                f"event ('{event['release']}')"
            )
        release, handoff, expected_sha = (
            event["release"],
            event["handoff"],
            event["manifest_sha256"],
        )
    if not release:
        raise CtdcError("no release named: pass the release label (or trigger from the asset)")
    if "/" in release or release.startswith(".") or release in RESERVED_LABELS:
        raise CtdcError("release label must be a plain name such as 2025 or ctdc-2025")
    if handoff:
        root = Path(out) if out else Path(handoff).resolve().parent.parent
    else:
        root = Path(out or default_out())
        handoff = str(handoff_mod.handoff_dir(root, release))
    config = load_synthesis_config(config_path).with_overrides(
        epsilon, delta, reporting_length, seed
    )
    restricted = root.resolve() / RESTRICTED / release
    plan = SynthesisPlan(
        release=release,
        handoff=str(Path(handoff).resolve()),
        expected_manifest_sha256=expected_sha,
        out=str(root.resolve()),
        public_root=str(root.resolve() / PUBLIC),
        restricted_dir=str(restricted),
        work_dir=str(restricted / "work"),
        config=config,
        warehouse_url=warehouse_url,
    )
    log.info("planned synthesis of release %s (epsilon %g)", release, config.dp.epsilon)
    return plan


def _verified(plan: SynthesisPlan) -> handoff_mod.VerifiedHandoff:
    return handoff_mod.verify_handoff(plan.handoff, plan.release, plan.expected_manifest_sha256)


def verify(plan: SynthesisPlan) -> dict:
    """Refuse a hand-off that does not match its manifest, the codebook or the named release."""
    verified = _verified(plan)
    work = plan.work
    if work.exists():
        shutil.rmtree(work)  # a rerun starts from the hand-off again
    work.mkdir(parents=True)
    log.info("hand-off of release %s verified: %d rows", plan.release, verified.rows)
    return {"release": plan.release, "rows": verified.rows, "manifest": verified.manifest_sha256}


def disclosure_risk(plan: SynthesisPlan) -> dict:
    from ctdc_harmonizer.synthesis.risk import disclosure_risk as risk_report

    table = handoff_mod.read_table(_verified(plan))
    report = risk_report(table, plan.config.risk, load_suppression_config())
    path = plan.restricted / "risk_report.json"
    write_json(path, {"release": plan.release, **report})
    log.info(
        "risk: %d of %d records in equivalence classes smaller than k=%d",
        report["records_in_classes_below_k"],
        report["records"],
        report["k"],
    )
    return {
        "risk_report": str(path),
        "records_in_classes_below_k": report["records_in_classes_below_k"],
    }


def suppress(plan: SynthesisPlan) -> dict:
    from ctdc_harmonizer.synthesis.suppress import suppress as apply_suppression

    codebook = default_codebook()
    table = handoff_mod.read_table(_verified(plan))
    done = apply_suppression(table, load_suppression_config(), codebook)
    strings = fit_mod.as_strings(done.frame, codebook)
    strings.to_parquet(plan.work / "sensitive.parquet", index=False)
    write_json(plan.restricted / "suppression_report.json", done.report)
    log.info("suppression: %d cell(s) set to NULL", done.report["cells_set_to_null"])
    return {"cells_set_to_null": done.report["cells_set_to_null"], "rows": len(strings)}


def _ledger(plan: SynthesisPlan):
    from ctdc_harmonizer.synthesis.ledger import Ledger
    from ctdc_harmonizer.warehouse import default_warehouse_url

    return Ledger(plan.warehouse_url or default_warehouse_url(plan.out))


def fit_aggregates(plan: SynthesisPlan) -> dict:
    """DP aggregates: reused when this data and these parameters were already spent on."""
    from ctdc_harmonizer.synthesis.ledger import FAILED, SPENT

    codebook = default_codebook()
    config = plan.config
    params = config.dp
    strings = pd.read_parquet(plan.work / "sensitive.parquet")
    dataset_sha = fit_mod.dataset_hash(strings)
    folder = plan.restricted / "aggregates" / fit_mod.store_key(dataset_sha, params)
    ledger = _ledger(plan)
    try:
        reused = None
        for spend in reversed(ledger.reusable(plan.release, dataset_sha, params.params_hash())):
            if (folder / fit_mod.AGGREGATES_FILE).is_file():
                try:
                    fit_mod.load(folder, spend.aggregates_sha256)
                except fit_mod.FitError:
                    continue  # altered on disk: not trusted, not reused
                reused = spend
                break
        if reused is None:
            ledger.check_budget(plan.release, params, config.budget)  # before fit
            attempt = ledger.start(plan.release, dataset_sha, params)
            want_pacsynth = config.sampling.sampler == "pacsynth" or (
                len(strings) <= config.sampling.compare_with_pacsynth_up_to_rows
            )
            try:
                aggregates, pac_sample, seconds = fit_mod.fit(
                    strings, params, codebook, config.sampling.threads, want_pacsynth
                )
                digest = fit_mod.save(aggregates, folder, pac_sample)
            except CtdcError:
                ledger.close(attempt, plan.release, dataset_sha, params, FAILED)
                raise
            ledger.close(attempt, plan.release, dataset_sha, params, SPENT, digest)
        else:
            digest, seconds = reused.aggregates_sha256, {}
        spent_epsilon, _ = ledger.spent(plan.release)
    finally:
        ledger.dispose()
    aggregates = fit_mod.load(folder, digest)
    state = {
        "aggregates_dir": str(folder),
        "aggregates_sha256": digest,
        "reused": reused is not None,
        "epsilon_spent_now": 0.0 if reused is not None else params.epsilon,
        "epsilon_spent_release": spent_epsilon,
        "combinations": len(aggregates.counts),
        "protected_records": aggregates.protected_records,
        "fit_seconds": seconds.get("fit", 0.0),
        "pacsynth_sample_seconds": seconds.get("pacsynth_sample"),
    }
    write_json(plan.work / "fit.json", state)
    log.info(
        "release %s: %s DP aggregates (%d combinations); epsilon spent now %g, in all %g",
        plan.release,
        "reused stored" if reused is not None else "fitted",
        state["combinations"],
        state["epsilon_spent_now"],
        spent_epsilon,
    )
    return state


def _fit_state(plan: SynthesisPlan) -> dict:
    return read_json(plan.work / "fit.json")


def sample(plan: SynthesisPlan) -> dict:
    """Synthetic records from the stored DP aggregates (spends no epsilon)."""
    from ctdc_harmonizer.synthesis import sample as sample_mod

    codebook = default_codebook()
    config = plan.config
    state = _fit_state(plan)
    folder = Path(state["aggregates_dir"])
    aggregates = fit_mod.load(folder, state["aggregates_sha256"])
    started = time.monotonic()
    if config.sampling.sampler == "own":
        required = frozenset(v.name for v in codebook.variables if v.required or v.type == "year")
        synthetic = sample_mod.sample(
            aggregates, codebook.columns, seed=config.sampling.seed, never_empty=required
        )
    else:
        synthetic = fit_mod.load_pacsynth_sample(folder)
        if synthetic is None:
            raise CtdcError(
                f"release {plan.release}: pac-synth's sampler runs only right after a fit, "
                "and these stored aggregates were fitted without it; a new fit would spend "
                "epsilon again (change a parameter deliberately, or use sampler: own)"
            )
    seconds = round(time.monotonic() - started, 2)
    path = plan.work / "synthetic.parquet"
    synthetic[codebook.columns].to_parquet(path, index=False)
    log.info("sampled %d synthetic records (%s sampler)", len(synthetic), config.sampling.sampler)
    return {
        "rows": len(synthetic),
        "sampler": config.sampling.sampler,
        "sample_seconds": seconds,
        "synthetic": str(path),
    }


def evaluate(plan: SynthesisPlan) -> dict:
    codebook = default_codebook()
    config = plan.config
    state = _fit_state(plan)
    work, restricted = plan.work, plan.restricted
    aggregates = fit_mod.load(Path(state["aggregates_dir"]), state["aggregates_sha256"])
    sensitive = pd.read_parquet(work / "sensitive.parquet")
    sampler = config.sampling.sampler
    synthetic = {sampler: pd.read_parquet(work / "synthetic.parquet")}
    pac = fit_mod.load_pacsynth_sample(Path(state["aggregates_dir"]))
    if pac is not None and sampler != "pacsynth":
        synthetic["pacsynth"] = pac
    report = evaluate_mod.comparability(
        sensitive,
        synthetic,
        aggregates.counts,
        aggregates.params.reporting_length,
        codebook,
        config.evaluation.count_buckets,
    )
    report = {"release": plan.release, "published_sampler": sampler, **report}
    write_json(restricted / "comparability.json", report)
    title = f"Comparability of the synthetic data, release {plan.release} (restricted)"
    (restricted / "comparability.html").write_text(
        evaluate_mod.render_html(report, title, public=False, codebook=codebook), encoding="utf-8"
    )
    public = evaluate_mod.public_report(report, sampler)
    write_json(work / "public_comparability.json", public)
    title = f"Synthetic data vs DP aggregates, release {plan.release}"
    (work / "public_comparability.html").write_text(
        evaluate_mod.render_html(public, title, public=True, codebook=codebook), encoding="utf-8"
    )
    headline = report["headline"]
    log.info("comparability written to %s", restricted / "comparability.html")
    return {
        "report": str(restricted / "comparability.html"),
        "mae_vs_dp_by_length": headline[sampler]["mae_vs_dp_by_length"],
        "mae_vs_sensitive_by_length": headline[sampler]["mae_vs_sensitive_by_length"],
        "fabricated_combinations": headline[sampler]["fabricated_combinations"],
        "own_at_least_as_accurate": headline.get("own_at_least_as_accurate"),
    }


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


def publish(plan: SynthesisPlan) -> dict:
    from ctdc_harmonizer.synthesis import publish as publish_mod

    codebook = default_codebook()
    config = plan.config
    verified = _verified(plan)
    state = _fit_state(plan)
    work = plan.work
    aggregates = fit_mod.load(Path(state["aggregates_dir"]), state["aggregates_sha256"])
    synthetic = pd.read_parquet(work / "synthetic.parquet")
    metadata = publish_mod.descriptive_metadata(
        plan.release,
        verified.manifest,
        _partner_names(verified.manifest),
        aggregates,
        len(synthetic),
        config.sampling.sampler,
        config.version,
        codebook,
    )
    target = publish_mod.publish(
        Path(plan.public_root),
        plan.release,
        synthetic,
        aggregates,
        metadata,
        read_json(work / "public_comparability.json"),
        (work / "public_comparability.html").read_text(encoding="utf-8"),
        codebook,
    )
    write_json(plan.restricted / "synthesis.json", {**state, "public_dir": str(target)})
    shutil.rmtree(work, ignore_errors=True)
    log.info("release %s published in %s", plan.release, target)
    return {
        "public_dir": str(target),
        "rows": len(synthetic),
        "epsilon": aggregates.params.epsilon,
        "epsilon_spent_now": state["epsilon_spent_now"],
    }


def run_all(**kwargs) -> dict:
    """Every step in a row (the CLI): returns the merged small dicts."""
    plan = plan_synthesis(**kwargs)
    result = {"plan": plan}
    for step in (verify, disclosure_risk, suppress, fit_aggregates, sample, evaluate, publish):
        result[step.__name__] = step(plan)
    return result
