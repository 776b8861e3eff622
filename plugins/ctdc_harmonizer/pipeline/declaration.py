"""A pipeline declared once: its steps in order, wired by their types.

A step is a typed function. Its parameters say what it needs, its return annotation what it
produces:

- `plan: <the plan's type>`: the plan, which every step receives;
- `partner: str`: the partner a per-partner step works on (the first step of the chain);
- `<name>: T`: the result of the one earlier step that produces a `T` (in a per-partner
  chain, of the same partner);
- `<name>: list[T]`: after the chains, the results of every partner's chain step producing T.

A parameter annotated `Late[T]` is an input the step needs only at its end: the command line
may start the step while the step producing T still runs elsewhere and hand it a future of
that result, which the step resolves (`resolved`) when it comes to it; the DAG always hands
it the result itself. Wiring reads `Late[T]` as `T`.

A pipeline may also declare one step `before_plan`: it takes (some of) the plan's own
arguments by name, and the plan receives its result through the plan's parameter of the
result's type (the annual update pulls the partners' deliveries before planning; in the DAG
a deferrable wait on the triggerer precedes it).

`Pipeline` checks this wiring when it is declared (a step needing a type nobody produced
earlier, or two steps producing the same type, is an error at import), and both runners read
the same declaration: the Airflow DAG (pipeline/airflow.py builds its tasks from it) and the
command line (pipeline/local.py). Adding a step is one function and one line in a
declaration; no step is ever looked up by name.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, TypeVar

PLAN_PARAMETER = "plan"
PARTNER_PARAMETER = "partner"
T = TypeVar("T")


class _LateInput:
    """The marker of `Late[T]` (module docstring)."""

    def __repr__(self) -> str:
        return "LATE"


LATE = _LateInput()
Late = Annotated[T, LATE]


def resolved(value: T | Future[T]) -> T:
    """A `Late[T]` input's value: the result itself, or the future's (its error raised)."""
    return value.result() if isinstance(value, Future) else value


class DeclarationError(Exception):
    """A pipeline's steps do not fit together (raised where the pipeline is declared)."""


@dataclass(frozen=True)
class Step:
    """One declared step: its function, what it needs and what it produces."""

    func: Callable[..., Any]
    per_partner: bool = False

    @property
    def name(self) -> str:
        return self.func.__name__

    @cached_property
    def hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.func)

    @property
    def produces(self) -> type:
        return self.hints["return"]

    @property
    def parameters(self) -> list[str]:
        return list(inspect.signature(self.func).parameters)

    @cached_property
    def late_inputs(self) -> frozenset[str]:
        """Parameters annotated `Late[T]`."""
        hints = typing.get_type_hints(self.func, include_extras=True)
        return frozenset(
            name
            for name, hint in hints.items()
            if typing.get_origin(hint) is Annotated and LATE in hint.__metadata__
        )

    @property
    def inputs(self) -> dict[str, Any]:
        """Parameters fed by earlier steps' results (not the plan, not the partner)."""
        return {
            name: self.hints[name]
            for name in self.parameters
            if name not in (PLAN_PARAMETER, PARTNER_PARAMETER)
        }


@dataclass(frozen=True)
class Input:
    """Where a step's parameter comes from: a producing step, collected over partners or not."""

    step: Step
    collected: bool = False  # list[T] of a per-partner step's results


@dataclass(frozen=True)
class Pipeline:
    """The steps of one pipeline, in order (see the module docstring).

    plan: makes the plan every step receives; per_partner: the chain run for each partner the
    plan names; steps: run once, after the chains; gate: a person's approval between `steps`
    and `after_gate` (the DAG asks for it; the command line has no one to ask and goes on);
    teardown: run at the end whether the run succeeded or not; before_plan: run before the
    plan, its result handed to the plan (module docstring)."""

    name: str
    plan: Callable[..., Any]
    per_partner: tuple[Callable[..., Any], ...] = ()
    steps: tuple[Callable[..., Any], ...] = ()
    gate: str | None = None
    after_gate: tuple[Callable[..., Any], ...] = ()
    teardown: Callable[..., Any] | None = None
    before_plan: Callable[..., Any] | None = None
    wiring: dict[str, dict[str, Input]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.wiring.update(self._wire())

    @property
    def plan_step(self) -> Step:
        return Step(self.plan)

    @property
    def before_plan_step(self) -> Step | None:
        return Step(self.before_plan) if self.before_plan else None

    def plan_parameter_for_before(self) -> str | None:
        """The plan's parameter that receives the before-plan step's result."""
        if self.before_plan is None:
            return None
        produced = self.before_plan_step.produces
        for name, kind in self.plan_step.hints.items():
            if name != "return" and produced in (kind, *typing.get_args(kind)):
                return name
        raise DeclarationError(
            f"{self.name}: the plan takes no parameter of type {produced.__name__}, which "
            f"{self.before_plan_step.name} produces"
        )

    @property
    def chain(self) -> list[Step]:
        return [Step(func, per_partner=True) for func in self.per_partner]

    @property
    def release_steps(self) -> list[Step]:
        return [Step(func) for func in self.steps]

    @property
    def gated_steps(self) -> list[Step]:
        return [Step(func) for func in self.after_gate]

    @property
    def teardown_step(self) -> Step | None:
        return Step(self.teardown) if self.teardown else None

    def ordered(self) -> list[Step]:
        """Every step in the order a single process runs them (teardown last)."""
        tail = [self.teardown_step] if self.teardown else []
        return [self.plan_step, *self.chain, *self.release_steps, *self.gated_steps, *tail]

    def inputs_of(self, step: Step) -> dict[str, Input]:
        return self.wiring[step.name]

    def _wire(self) -> dict[str, dict[str, Input]]:
        self.plan_parameter_for_before()  # checked at declaration
        plan_type = self.plan_step.produces
        produced: dict[Any, Step] = {}
        wiring: dict[str, dict[str, Input]] = {}
        names: set[str] = set()
        for step in self.ordered():
            if step.name in names:
                raise DeclarationError(f"{self.name}: step {step.name} is declared twice")
            names.add(step.name)
            if step.name == self.plan_step.name:  # its parameters come from the caller
                wiring[step.name] = {}
                continue
            wired = {}
            if PLAN_PARAMETER not in step.parameters or step.hints[PLAN_PARAMETER] is not plan_type:
                raise DeclarationError(
                    f"{self.name}: step {step.name} must take `plan: {plan_type.__name__}`"
                )
            if PARTNER_PARAMETER in step.parameters and not step.per_partner:
                raise DeclarationError(
                    f"{self.name}: step {step.name} takes a partner but is not in the chain"
                )
            for parameter, kind in step.inputs.items():
                wired[parameter] = self._source(step, parameter, kind, produced)
            wiring[step.name] = wired
            if step.produces in produced:
                raise DeclarationError(
                    f"{self.name}: {produced[step.produces].name} and {step.name} both "
                    f"produce {step.produces.__name__}"
                )
            produced[step.produces] = step
        return wiring

    def _source(self, step: Step, parameter: str, kind: Any, produced: dict[Any, Step]) -> Input:
        collected = typing.get_origin(kind) is list
        wanted = typing.get_args(kind)[0] if collected else kind
        source = produced.get(wanted)
        name = getattr(wanted, "__name__", str(wanted))
        if source is None:
            raise DeclarationError(
                f"{self.name}: step {step.name} needs {parameter}: {name}, which no earlier "
                "step produces"
            )
        if collected and not (source.per_partner and not step.per_partner):
            raise DeclarationError(
                f"{self.name}: step {step.name} collects {name} over partners, but "
                f"{source.name} is not a step of the partner chain"
            )
        if source.per_partner and not step.per_partner and not collected:
            raise DeclarationError(
                f"{self.name}: step {step.name} takes one partner's {name}: declare "
                f"{parameter}: list[{name}]"
            )
        return Input(source, collected)
