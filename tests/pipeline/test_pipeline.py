"""The pipelines declared once: wiring checked at declaration, the same steps run by the
command line and built into Airflow tasks, the task boundary (value-free, data errors fail at
once, infrastructure errors retry), each task importing only what its step needs."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import traceback

import pytest
from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.errors import CoverageError, ExtractError, InfrastructureError
from ctdc_harmonizer.pipeline import airflow as boundary
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.pipeline.annual_update import ANNUAL_UPDATE
from ctdc_harmonizer.pipeline.declaration import DeclarationError, Late, Pipeline, resolved
from ctdc_harmonizer.run.plan import ReleasePlan

PLANTED = "Zarqa Plantedname"


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    partners: list[str]


class Read(BaseModel):
    partner: str
    rows: int


class Mapped(BaseModel):
    partner: str
    rows: int


class Combined(BaseModel):
    rows: int


class Counted(BaseModel):
    rows: int
    partners: int


def make_plan(partners: list[str]) -> Plan:
    return Plan(partners=partners)


def read(plan: Plan, partner: str) -> Read:
    return Read(partner=partner, rows=len(partner))


def map_rows(plan: Plan, read: Read) -> Mapped:
    return Mapped(partner=read.partner, rows=read.rows * 10)


def combine(plan: Plan, mapped: list[Mapped]) -> Combined:
    return Combined(rows=sum(m.rows for m in mapped))


def count(plan: Plan, combined: Combined) -> Counted:
    return Counted(rows=combined.rows, partners=len(plan.partners))


def test_the_annual_update_is_declared_once_and_wired_by_types():
    order = [step.name for step in ANNUAL_UPDATE.ordered()]
    assert order == [
        "plan_release",
        "stage_partner",
        "check_staged_contract",
        "harmonize_partner",
        "check_codebook_contract",
        "compare_with_store",
        "read_carried_records",
        "assemble_release",
        "write_receipts",
        "send_receipts",
        "build_release_folder",
        "summarize_release",
        "commit_release",
        "publish_release_folder",
        "purge_withdrawn_records",
        "hand_off_release",
        "clear_pulled_deliveries",
        "finish_run",
    ]
    # The pull runs before the plan and hands it what arrived.
    assert ANNUAL_UPDATE.before_plan_step.name == "pull_deliveries"
    assert ANNUAL_UPDATE.plan_parameter_for_before() == "arrivals"
    assert ANNUAL_UPDATE.plan_step.produces is ReleasePlan
    commit = next(s for s in ANNUAL_UPDATE.ordered() if s.name == "commit_release")
    sources = {p: i.step.name for p, i in ANNUAL_UPDATE.inputs_of(commit).items()}
    assert sources == {
        "partners": "compare_with_store",
        "assembled": "assemble_release",
        "folder": "build_release_folder",
    }
    assert commit.late_inputs == {"assembled", "folder"}
    assemble = next(s for s in ANNUAL_UPDATE.ordered() if s.name == "assemble_release")
    assert ANNUAL_UPDATE.inputs_of(assemble)["partners"].collected


def test_a_new_step_is_one_function_and_one_line_of_a_declaration():
    """What docs/architecture.md says: write the function, add it to the declaration; both
    runners take it from there."""
    pipeline = Pipeline(
        name="demo",
        plan=make_plan,
        per_partner=(read, map_rows),
        steps=(combine, count),  # `count`: the new step
    )
    results = local.run(pipeline, workers=1, partners=["iom", "ngo"])
    assert results["count"] == Counted(rows=60, partners=2)


class Built(BaseModel):
    rows: int


class Told(BaseModel):
    rows: int


class Stored(BaseModel):
    rows: int


def _gated(name: str, steps: tuple, store) -> Pipeline:
    """Two partners' chains (read, map_rows), then `steps`, then `store` after the gate."""
    return Pipeline(
        name=name,
        plan=make_plan,
        per_partner=(read, map_rows),
        steps=steps,
        gate="approve",
        after_gate=(store,),
    )


def _building(events: list[str], fail: bool, held_until: threading.Event | None = None):
    """A `build` step that notes it ran, and fails with a data error when asked to."""

    def build(plan: Plan, combined: Combined) -> Built:
        if held_until is not None:  # in the background: held until the store step is under way
            held_until.wait(5)
        events.append("build")
        if fail:
            raise CoverageError("too many unknown values")
        return Built(rows=combined.rows)

    return build


def _late_pipeline(events: list[str], store_started: threading.Event, fail: bool = False):
    """combine -> build -> tell, then (after the gate) store, which takes the build as Late."""

    build = _building(events, fail, held_until=store_started)

    def tell(plan: Plan, built: Built) -> Told:
        events.append("tell")
        return Told(rows=built.rows)

    def store(plan: Plan, combined: Combined, built: Late[Built]) -> Stored:
        events.append("store started")
        store_started.set()
        rows = resolved(built).rows
        events.append("store has the build")
        return Stored(rows=rows)

    return _gated("late", (combine, build, tell), store)


def _run_steps(pipeline: Pipeline, background) -> dict:
    plan = make_plan(["iom", "ngo"])
    results = {"make_plan": plan, "map_rows": local.run_chains(pipeline, plan, workers=1)}
    steps = pipeline.release_steps + pipeline.gated_steps
    local.run_steps(pipeline, plan, steps, results, background)
    return results


def test_a_late_input_lets_its_step_start_before_the_result_comes():
    """With a background executor, `build` (whose result `store` takes as Late) runs there;
    `tell`, which needs the build itself, waits for it while `store` starts; in a row
    (no background) the declared order holds. Either way every result is there at the end."""
    from concurrent.futures import ThreadPoolExecutor

    started = threading.Event()
    started.set()  # in a row, nothing waits for the store step
    in_a_row: list[str] = []
    alone = _run_steps(_late_pipeline(in_a_row, started), None)
    assert in_a_row == ["build", "tell", "store started", "store has the build"]

    beside: list[str] = []
    with ThreadPoolExecutor(1) as background:
        results = _run_steps(_late_pipeline(beside, threading.Event()), background)
    assert beside == ["store started", "build", "store has the build", "tell"]
    assert results == alone and results["store"] == Stored(rows=60)
    declared = _late_pipeline([], started)
    steps = declared.release_steps + declared.gated_steps
    assert local._in_background(declared, steps) == {"build"}
    assert local._in_background(declared, declared.release_steps) == set()  # no store step


def test_a_late_input_that_fails_fails_the_step_that_waits_for_it():
    from concurrent.futures import ThreadPoolExecutor

    events: list[str] = []
    with ThreadPoolExecutor(1) as background, pytest.raises(CoverageError):
        _run_steps(_late_pipeline(events, threading.Event(), fail=True), background)
    assert events == ["store started", "build"]  # no "store has the build", no "tell"


def _grouped_pipeline(events: list[str], store_started: threading.Event, fail: bool = False):
    """combine -> build -> tell, then store, which takes the chains' results and both the
    combination and the build as Late (the annual update's commit_release)."""

    def combine_late(plan: Plan, mapped: list[Mapped]) -> Combined:
        store_started.wait(5)  # in the background: held until the store step is under way
        events.append("combine")
        return combine(plan, mapped)

    build = _building(events, fail)

    def tell(plan: Plan, combined: Combined) -> Told:
        events.append("tell")
        return Told(rows=combined.rows)

    def store(
        plan: Plan, mapped: list[Mapped], combined: Late[Combined], built: Late[Built]
    ) -> Stored:
        events.append(f"store started with {len(mapped)} partners")
        store_started.set()
        rows = resolved(combined).rows
        assert resolved(built).rows == rows
        events.append("store has both")
        return Stored(rows=rows)

    return _gated("grouped", (combine_late, tell, build), store)


def test_background_steps_that_feed_each_other_run_there_in_order_beside_the_late_step():
    """`build` needs `combine_late`'s result, both taken as Late by `store`: one submission
    to the background runs them one after the other while `store` starts at once; `tell`
    (which needs the combination itself) runs once it has come. In a row: declared order."""
    from concurrent.futures import ThreadPoolExecutor

    started = threading.Event()
    started.set()
    in_a_row: list[str] = []
    alone = _run_steps(_grouped_pipeline(in_a_row, started), None)
    assert in_a_row == [
        "combine",
        "tell",
        "build",
        "store started with 2 partners",
        "store has both",
    ]
    beside: list[str] = []
    with ThreadPoolExecutor(1) as background:
        results = _run_steps(_grouped_pipeline(beside, threading.Event()), background)
    assert beside == [
        "store started with 2 partners",
        "combine",
        "build",
        "store has both",
        "tell",
    ]
    assert results == alone and results["store"] == Stored(rows=60)
    declared = _grouped_pipeline([], started)
    steps = declared.release_steps + declared.gated_steps
    assert local._in_background(declared, steps) == {"combine_late", "build"}


def test_a_background_group_that_fails_keeps_what_ran_before_the_failure():
    """The combination's result still comes (a step needing only it can go on); the build's
    error reaches whatever waits for the build; a run with it fails with that error."""
    from concurrent.futures import ThreadPoolExecutor

    events: list[str] = []
    released = threading.Event()
    released.set()  # no store step here to wait for
    pipeline = _grouped_pipeline(events, released, fail=True)
    plan = make_plan(["iom", "ngo"])
    chains = local.run_chains(pipeline, plan, workers=1)
    combine_step, tell_step, build_step = pipeline.release_steps
    group = local._background_group(
        pipeline,
        combine_step,
        [tell_step, build_step],
        {"combine_late", "build"},
        {"make_plan": plan, "map_rows": chains},
    )
    assert group == [combine_step, build_step]  # tell runs here, not in the group
    with ThreadPoolExecutor(1) as background:
        submitted = background.submit(local.call_steps, pipeline, group, plan, {"map_rows": chains})
        futures = local._each_result(submitted, group)
        assert futures["combine_late"].result(timeout=10) == Combined(rows=60)
        with pytest.raises(CoverageError):
            futures["build"].result(timeout=10)
    assert events == ["combine", "build"]

    with ThreadPoolExecutor(1) as background, pytest.raises(CoverageError):
        _run_steps(_grouped_pipeline([], threading.Event(), fail=True), background)


class Arrived(BaseModel):
    partners: list[str]


def fetch(inbox: list[str]) -> Arrived:
    return Arrived(partners=sorted(inbox))


def plan_arrived(arrived: Arrived) -> Plan:
    return Plan(partners=arrived.partners)


def test_a_step_before_the_plan_hands_the_plan_its_result():
    """`before_plan`: the caller's arguments it takes go to it, its result to the plan's
    parameter of that type; a plan without such a parameter is refused when declared."""
    pipeline = Pipeline(
        name="demo", before_plan=fetch, plan=plan_arrived, per_partner=(read,), steps=()
    )
    results = local.run(pipeline, workers=1, inbox=["ngo", "iom"])
    assert results["plan_arrived"] == Plan(partners=["iom", "ngo"])
    with pytest.raises(DeclarationError, match="takes no parameter of type Arrived"):
        Pipeline(name="bad", before_plan=fetch, plan=make_plan)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"steps": (count,)}, "needs combined: Combined, which no earlier step produces"),
        ({"steps": (combine, combine)}, "declared twice"),
        ({"per_partner": (read,), "steps": (map_rows,)}, "takes one partner's Read"),
        ({"per_partner": (), "steps": (read,)}, "takes a partner but is not in the chain"),
    ],
)
def test_a_step_that_does_not_fit_is_refused_where_it_is_declared(kwargs, said):
    base = {"name": "demo", "plan": make_plan, "per_partner": (read, map_rows)}
    with pytest.raises(DeclarationError, match=said):
        Pipeline(**{**base, **kwargs})


def test_the_dag_is_built_from_the_same_declaration(repo_root):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(repo_root / "dags")).dags["ctdc_annual_update"]
    declared = {s.name for s in ANNUAL_UPDATE.ordered()}
    chain = {s.name for s in ANNUAL_UPDATE.chain}
    tasks = {t.split(".")[-1] for t in dag.task_ids}
    assert declared <= tasks
    assert {f"partner.{name}" for name in chain} <= set(dag.task_ids)
    for step in ANNUAL_UPDATE.ordered()[1:]:
        task_id = f"partner.{step.name}" if step.name in chain else step.name
        upstream = {t.split(".")[-1] for t in dag.get_task(task_id).upstream_task_ids}
        for source in ANNUAL_UPDATE.inputs_of(step).values():
            assert source.step.name in upstream, (step.name, source.step.name)
    # the approval sits between the steps and the gated ones
    assert "summarize_release" in dag.get_task("approve").upstream_task_ids
    assert "approve" in dag.get_task("commit_release").upstream_task_ids


# --- the task boundary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (CoverageError("too many unknown values"), False),
        (ExtractError("iom", "x.csv", "cannot be read"), False),
        (KeyError(PLANTED), False),
        (InfrastructureError("database busy"), True),
        (OSError(errno.EIO, "Input/output error"), True),
    ],
)
def test_the_boundary_fails_data_errors_fast_and_retries_infrastructure(exc, retry):
    from airflow.sdk.exceptions import AirflowFailException

    def step(plan):
        raise exc

    guarded = boundary.boundary(step)
    expected = boundary.RetryableStepError if retry else AirflowFailException
    with pytest.raises(expected) as caught:
        guarded({})
    assert not isinstance(caught.value, AirflowFailException) if retry else True
    # What Airflow logs is the traceback: it must not carry the original message.
    printed = "".join(traceback.format_exception(caught.value))
    assert PLANTED not in printed
    assert caught.value.__suppress_context__


def test_the_boundary_types_xcom_dicts_and_returns_plain_dicts():
    """XCom carries dicts; a step sees its typed inputs, a list of results included."""
    seen = []

    def step(plan: Plan, mapped: list[Mapped]) -> Combined:
        seen.append((plan, mapped))
        return combine(plan, mapped)

    xcom_plan = {"partners": ["iom", "hotline"]}
    xcom_mapped = [{"partner": "iom", "rows": 3}, {"partner": "hotline", "rows": 4}]
    result = boundary.boundary(step)(xcom_plan, mapped=xcom_mapped)
    assert isinstance(seen[0][0], Plan) and all(isinstance(m, Mapped) for m in seen[0][1])
    assert result == {"rows": 7}


def test_the_lone_result_of_a_group_mapped_over_one_partner_is_a_list_of_one():
    """Airflow hands the downstream task of a task group mapped over one partner that
    partner's result itself: a run of one partner through the DAG must still see a list."""

    def step(plan: Plan, mapped: list[Mapped]) -> Combined:
        return combine(plan, mapped)

    result = boundary.boundary(step)({"partners": ["iom"]}, mapped={"partner": "iom", "rows": 3})
    assert result == {"rows": 3}


def test_a_malformed_plan_in_xcom_fails_fast_without_quoting_it():
    from airflow.sdk.exceptions import AirflowFailException

    def step(plan: ReleasePlan) -> dict:
        return {}

    with pytest.raises(AirflowFailException) as caught:
        boundary.boundary(step)({"release": PLANTED})
    assert PLANTED not in str(caught.value) and "ValidationError" in str(caught.value)


def test_each_task_imports_only_what_its_step_needs():
    """The DAG file imports the declaration: that loads no stage library. A task pays its own
    step's imports when it runs (about a second for pandas and pandera): the teardown loads no
    pandas, the partner chain no Great Expectations."""
    heavy = "print(sorted(m for m in ('pandas', 'great_expectations') if m in sys.modules))"
    code = {
        "declaration": "import sys; import ctdc_harmonizer.pipeline.annual_update; " + heavy,
        "teardown": (
            "import sys; from ctdc_harmonizer.pipeline.annual_update import finish_run; "
            "from ctdc_harmonizer.run.plan import ReleasePlan; "
            "finish_run(ReleasePlan(release='r', landing='/l', out='/o', partners=[])); " + heavy
        ),
        "chain": (
            "import sys; from ctdc_harmonizer.pipeline.annual_update import partner_chain; "
            "from ctdc_harmonizer.harmonize import mapper, contracts; " + heavy
        ),
    }
    loaded = {
        name: subprocess.run(
            [sys.executable, "-c", text], capture_output=True, text=True, check=True
        ).stdout.split("\n")[-2]
        for name, text in code.items()
    }
    assert loaded == {"declaration": "[]", "teardown": "[]", "chain": "['pandas']"}
