"""The boundary between Airflow tasks and the package's steps.

A DAG task is one line: `steps().stage_partner(plan, partner)`. What crosses here:

- in: XCom gives plain dicts; a step's parameter typed as a pydantic model (`RunPlan`,
  `SynthesisPlan`) is validated from the dict, so steps only ever see typed inputs;
- out: a step's typed result becomes its small dict again (`to_xcom`), paths and counts only;
- errors: data and mapping errors (every `CtdcError` that is not an `InfrastructureError`,
  and unexpected exceptions, which would fail the same way again) become
  `AirflowFailException`: the task fails at once, without retry. Infrastructure errors (disk,
  database connection) become `RetryableStepError`, which keeps the task's retries. Both carry
  `safety.describe()`'s value-free text, and `from None` keeps the original (possibly
  value-quoting) exception out of the traceback Airflow logs.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ctdc_harmonizer.safety import describe, is_infrastructure


class RetryableStepError(Exception):
    """An infrastructure failure, re-raised without the original message (Airflow retries)."""


def _typed_arguments(step: Callable[..., Any], args: tuple, kwargs: dict) -> inspect.BoundArguments:
    hints = typing.get_type_hints(step)
    bound = inspect.signature(step).bind(*args, **kwargs)
    for name, value in bound.arguments.items():
        kind = hints.get(name)
        if isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, BaseModel):
            bound.arguments[name] = kind.model_validate(value)
    return bound


def to_xcom(result: Any) -> Any:
    """A step's result as XCom holds it: a typed result becomes its plain dict."""
    if hasattr(result, "to_xcom"):
        return result.to_xcom()
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def airflow_boundary(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a package step for an Airflow task (see the module docstring)."""

    @functools.wraps(step)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = _typed_arguments(step, args, kwargs)
            return to_xcom(step(*bound.args, **bound.kwargs))
        except Exception as exc:
            message = describe(exc, step.__name__)
            if is_infrastructure(exc):
                raise RetryableStepError(message) from None
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(message) from None

    return guarded


class GuardedSteps:
    """Steps by name, each wrapped by `airflow_boundary`. A step's module is imported when a
    task first asks for it, so each task loads only its own step's libraries (the teardown
    never imports pandas; only `write_release` imports Great Expectations)."""

    def __init__(self, modules: dict[str, str]):
        self._modules = modules  # step name -> module that defines it

    def __getattr__(self, name: str) -> Any:
        if name not in self._modules:
            raise AttributeError(name)
        attribute = getattr(importlib.import_module(self._modules[name]), name)
        return airflow_boundary(attribute) if callable(attribute) else attribute


def _by_module(steps: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {name: module for module, names in steps.items() for name in names}


ANNUAL_UPDATE = _by_module(
    {
        "ctdc_harmonizer.run.plan": ("plan_scheduled_run", "plan_run"),
        "ctdc_harmonizer.run.partner_steps": (
            "stage_partner",
            "check_contract",
            "map_to_codebook",
            "check_codebook",
        ),
        "ctdc_harmonizer.run.release_steps": (
            "combine",
            "write_release",
            "load_warehouse",
            "hand_off",
        ),
        "ctdc_harmonizer.release.report": ("headline",),
        "ctdc_harmonizer.run.finish": ("finish_run", "release_outcome"),
    }
)
SYNTHESIS = _by_module(
    {
        "ctdc_harmonizer.synthesis.steps": (
            "event_release",
            "plan_synthesis",
            "verify",
            "disclosure_risk",
            "suppress",
            "fit_aggregates",
            "sample",
            "evaluate",
            "publish",
        )
    }
)


def annual_update_steps() -> GuardedSteps:
    """What the ctdc_annual_update DAG's tasks call."""
    return GuardedSteps(ANNUAL_UPDATE)


def synthesis_steps() -> GuardedSteps:
    """What the ctdc_synthesis DAG's tasks call."""
    return GuardedSteps(SYNTHESIS)
