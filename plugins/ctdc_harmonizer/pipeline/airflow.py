"""A declared pipeline as Airflow tasks: what the DAG files build themselves from.

`pipeline_tasks` turns a `Pipeline` (pipeline/declaration.py) into TaskFlow tasks, one per
step, named like the step's function; their wiring follows the declaration (each task receives
the XCom of the steps its parameters name); the partner chain is a mapped task group whose
instances are named by partner. What crosses into a task:

- in: XCom gives plain dicts; a parameter typed as a pydantic model (or a list of them) is
  validated from them, so steps only ever see typed inputs;
- out: a step's typed result becomes its small dict again, paths and counts only;
- errors: data and mapping errors (every `CtdcError` that is not an `InfrastructureError`,
  and unexpected exceptions, which would fail the same way again) become
  `AirflowFailException`: the task fails at once, without retry. Infrastructure errors (disk,
  database connection) become `RetryableStepError`, which keeps the task's retries. Both carry
  `safety.describe()`'s value-free text, headed by the task's name as the grid shows it, and
  `from None` keeps the original (possibly value-quoting) exception out of the traceback
  Airflow logs. The same text is also kept in the task's XCom under `ctdc_failure` (task,
  partner, error class as reason code, message), so that `outcome` and the report page say
  which step failed for which partner and why.

Also here, defined once for both DAGs: the release asset and the failure callback. This
module imports Airflow's SDK and the step modules only (light: no pandas at parse time).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ctdc_harmonizer.pipeline.declaration import PARTNER_PARAMETER, Pipeline, Step

log = logging.getLogger("ctdc.airflow")
# The asset the annual update emits once a release is approved, committed and handed off;
# the synthesis DAG is scheduled on it.
OWNER = "ctdc-data-team"  # both DAGs' owner: the UI's owner filter finds them together
RELEASE_ASSET_NAME = "ctdc_harmonized_release"
RELEASE_ASSET_URI = "ctdc://harmonized-release"
BY_PARTNER = "{{ task.op_kwargs['partner'] }}"  # mapped instances named by partner, not 0..n
FAILURE_KEY = "ctdc_failure"  # XCom key of a failed step's value-free record
# XCom key (of `outcome`) of a failed run's healthy partners' counts (annual_update/partial.py)
HEALTHY_PARTNERS_KEY = "ctdc_healthy_partners"
_partner: contextvars.ContextVar[str | None] = contextvars.ContextVar("partner", default=None)


class RetryableStepError(Exception):
    """An infrastructure failure, re-raised without the original message (Airflow retries)."""


def release_asset():
    from airflow.sdk import Asset

    return Asset(name=RELEASE_ASSET_NAME, uri=RELEASE_ASSET_URI)


def log_failure(context) -> None:
    """A task's failure callback: task id, run id and exception class, never the message."""
    ti, error = context["ti"], type(context.get("exception")).__name__
    log.error("%s failed in %s: %s", ti.task_id, ti.run_id, error)


def _validated(kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, dict):
            # A task group mapped over ONE partner hands its downstream task that partner's
            # result itself, not a list of one.
            value = [value]
        return [_validated(item, v) for v in value]
    if isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_validate(value)
    return value


def to_xcom(result: Any) -> Any:
    """A step's result as XCom holds it: a typed result becomes its plain dict."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def boundary(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a package step for an Airflow task (see the module docstring)."""
    from ctdc_harmonizer.safety import describe, is_infrastructure

    @functools.wraps(step)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            hints = typing.get_type_hints(step)
            bound = inspect.signature(step).bind(*args, **kwargs)
            for name, value in bound.arguments.items():
                bound.arguments[name] = _validated(hints.get(name), value)
            return to_xcom(step(*bound.args, **bound.kwargs))
        except Exception as exc:
            ti = _running_task_instance()
            # Headed by the task as the grid lists it, without its group (`plan_release`, not
            # the `plan_scheduled_release` it calls; `stage_partner` in the group `partner`).
            task = ti.task_id.rsplit(".", 1)[-1] if ti is not None else step.__name__
            message = describe(exc, task)
            record_failure(ti, exc, message, is_infrastructure(exc))
            if is_infrastructure(exc):
                raise RetryableStepError(message) from None
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(message) from None

    return guarded


def _running_task_instance() -> Any | None:
    """The running task's instance; None outside a task (the CLI, plain tests)."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()["ti"]
    except Exception:  # noqa: BLE001 (not in a task)
        return None


def record_failure(ti: Any | None, exc: BaseException, message: str, retryable: bool) -> None:
    """Keep a failed step's value-free record in its task's XCom (FAILURE_KEY); outside a
    running task (`ti` None: the CLI, plain tests) there is nowhere to keep it, and nothing
    is done."""
    if ti is None:
        return
    record = {
        "task": ti.task_id,
        "partner": _partner.get(),
        "code": type(exc).__name__,  # the error class: a reason code, never a value
        "message": message,
        "retryable": retryable,
    }
    try:
        ti.xcom_push(key=FAILURE_KEY, value=record)
    except Exception as error:  # noqa: BLE001 (the failure itself is what matters)
        log.warning("failure record not kept: %s", type(error).__name__)


def failures_of(records: list[dict | None]) -> list[dict]:
    """The failure records a run's tasks kept (xcom_pull over every task), `outcome` left out."""
    return [r for r in records if isinstance(r, dict) and r.get("task") != "outcome"]


def kept_partner_reports(plan: dict | None, chains: list | None) -> dict | None:
    """A failed run's healthy partners' counts, for `outcome` to keep in XCom before the
    teardown deletes the work folder. `chains`: the last chain step's XCom over the mapped
    instances (a failed partner has none). Never raises: a report that cannot be read must
    not replace the run's own reason (the warning names the error, never a value)."""
    from ctdc_harmonizer.pipeline.annual_update.partial import healthy_partner_reports
    from ctdc_harmonizer.pipeline.results import PartnerChanges
    from ctdc_harmonizer.run.plan import ReleasePlan
    from ctdc_harmonizer.safety import describe

    if isinstance(chains, dict):  # xcom_pull hands one instance's value alone, not in a list
        chains = [chains]
    done = [c for c in (chains or []) if isinstance(c, dict)]
    if not plan or not done:
        return None
    try:
        kept = healthy_partner_reports(
            ReleasePlan.model_validate(plan), [PartnerChanges.model_validate(c) for c in done]
        )
    except Exception as exc:  # noqa: BLE001 (see the docstring)
        log.warning("healthy partners' reports not kept: %s", describe(exc, "outcome"))
        return None
    return to_xcom(kept)


def _callable(step: Step, label_partner: bool) -> Callable[..., Any]:
    """The task's callable: the guarded step, taking its inputs by name. In the partner chain
    every task also receives `partner` (the UI names each mapped instance by it)."""
    guarded = boundary(step.func)
    takes_partner = PARTNER_PARAMETER in step.parameters

    def run(**kwargs: Any) -> Any:
        token = _partner.set(kwargs.get(PARTNER_PARAMETER))  # for a failure's record
        try:
            if not takes_partner:
                kwargs.pop(PARTNER_PARAMETER, None)
            return guarded(**kwargs)
        finally:
            _partner.reset(token)

    names = step.parameters + ([PARTNER_PARAMETER] if label_partner and not takes_partner else [])
    run.__name__ = run.__qualname__ = step.name
    run.__doc__ = step.func.__doc__
    run.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    )
    return run


def pipeline_tasks(
    pipeline: Pipeline,
    plan: Any,
    gate: Any | None = None,
    teardown_args: dict | None = None,
) -> dict[str, Any]:
    """Create the tasks of `pipeline` in the DAG being defined and wire them. `plan`: the
    XComArg of the DAG's own plan task (it maps the trigger form onto the plan step); `gate`:
    the approval operator between the pipeline's steps and its gated steps. Returns each
    step's XComArg by name (and the gate's under its task id)."""
    from airflow.sdk import task, task_group

    outputs: dict[str, Any] = {pipeline.plan_step.name: plan}

    def inputs(step: Step, chain: dict[str, Any]) -> dict[str, Any]:
        wired = {}
        for parameter, source in pipeline.inputs_of(step).items():
            wired[parameter] = chain.get(source.step.name, outputs.get(source.step.name))
        return wired

    @task.short_circuit(task_id="partners_with_work", ignore_downstream_trigger_rules=True)
    def partners_with_work(plan: dict) -> list[str]:
        """The partners with work in this run; none: nothing to do, the rest is skipped."""
        return plan["partners"]

    @task_group(group_id="partner")
    def partner_chain(plan: Any, partner: Any) -> Any:
        chain: dict[str, Any] = {}
        for step in pipeline.chain:
            make = task(
                _callable(step, label_partner=True),
                task_id=step.name,
                map_index_template=BY_PARTNER,
            )
            chain[step.name] = make(plan=plan, partner=partner, **inputs(step, chain))
        return chain[pipeline.chain[-1].name]

    if pipeline.chain:
        partners = partners_with_work(plan)
        collected = partner_chain.partial(plan=plan).expand(partner=partners)
        outputs[pipeline.chain[-1].name] = collected
    previous = None if pipeline.chain else plan
    for step in pipeline.release_steps:
        made = task(_callable(step, label_partner=False), task_id=step.name)(
            plan=plan, **inputs(step, {})
        )
        outputs[step.name] = made
        if previous is not None:
            previous >> made
        previous = made
    if gate is not None:
        previous >> gate
        previous = gate
        outputs[gate.task_id] = gate
    for step in pipeline.gated_steps:
        made = task(_callable(step, label_partner=False), task_id=step.name)(
            plan=plan, **inputs(step, {})
        )
        outputs[step.name] = made
        previous >> made
        previous = made
    if pipeline.teardown_step is not None:
        step = pipeline.teardown_step
        made = task(
            _callable(step, label_partner=False), task_id=step.name, **(teardown_args or {})
        )(plan=plan)
        outputs[step.name] = made.as_teardown(setups=plan)
    return outputs


def release_outcome(
    summary: dict | None,
    handed: dict | None,
    decision: dict | None,
    failures: list[dict] | None = None,
    healthy: list[str] | None = None,
) -> str:
    """How the annual-update run ended, for the data team: published, or why not (an
    error, so the run shows as failed). `decision` is the approval's recorded answer (None:
    nobody answered before the timeout, or the step was never reached); `failures` the failed
    steps' records (record_failure): the first one is named, with its partner and reason;
    `healthy` the partners whose work was checked and kept for the report tab."""
    from ctdc_harmonizer.errors import CtdcError

    if handed and summary:
        return f"release {summary['release']} committed, published and handed to synthesis"
    release = f"release {summary['release']}" if summary else "release"
    if failures:
        first = failures[0]
        partner = f" for partner {first['partner']}" if first.get("partner") else ""
        more = f" (and {len(failures) - 1} more failed step(s))" if len(failures) > 1 else ""
        kept = (
            f"; the checked work of {', '.join(healthy)} is reported on the run's Release "
            "report tab (nothing committed or published)"
            if healthy
            else ""
        )
        raise CtdcError(
            f"{release} not published: {first['task']} failed{partner} "
            f"[{first['code']}]: {first['message']}{more}{kept}"
        )
    if not summary:
        raise CtdcError("release not published: an earlier step failed")
    why = f"rejected by {decision['by'] or 'the data team'}" if decision else "no approval"
    raise CtdcError(f"{release} NOT committed nor published: {why}")
