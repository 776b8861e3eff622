"""The public explorer page in a real browser (issue 19, item 4): Debian's Chromium opens the
published explorer.html from disk, a user selects attribute values, and the page shows exactly
the counts of aggregates.csv and synthetic.csv (computed here from those files).

Needs /usr/bin/chromium (`make browser-deps`) and Playwright; part of `make test-e2e`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_synthesis import RELEASE, harmonized_frame, unaccounted_config, write_release

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.pipeline.synthesis import SYNTHESIS
from ctdc_harmonizer.synthesis.handoff import write_handoff

pytestmark = pytest.mark.processes

CHROMIUM = Path("/usr/bin/chromium")
CODEBOOK = default_codebook()
REPORTING_LENGTH = 3


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explorer")
    write_handoff(write_release(root / "out", harmonized_frame(rows=600)))
    done = local.run(
        SYNTHESIS,
        release=RELEASE,
        out=str(root / "out"),
        reporting_length=REPORTING_LENGTH,
        warehouse_url=f"sqlite:///{root}/w.db",
        config_path=unaccounted_config(root),
    )
    return Path(done["publish"].public_dir)


@pytest.fixture(scope="module")
def opened(public):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (make browser-deps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            started = time.monotonic()
            page.goto((public / "explorer.html").as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            # Playwright's Page takes no attributes of ours: the figures travel beside it
            yield SimpleNamespace(
                page=page, load_seconds=time.monotonic() - started, requests=requests
            )
        finally:
            browser.close()


def _files(public: Path) -> tuple[dict[str, int], pd.DataFrame]:
    aggregates = pd.read_csv(public / "aggregates.csv", keep_default_na=False)
    dp = dict(zip(aggregates["combination"], aggregates["count"], strict=True))
    synthetic = pd.read_csv(public / "synthetic.csv", dtype=str, keep_default_na=False)
    return dp, synthetic


def _select(page, pairs: list[tuple[str, str]]) -> tuple[str, str, str]:
    page.click("#clear")
    for column, value in pairs:
        page.select_option(f"#sel-{column}", value)
    return (
        page.get_attribute("#dp-count", "data-count"),
        page.get_attribute("#syn-count", "data-count"),
        page.inner_text("#comparability"),
    )


def _pairs(combination: str) -> list[tuple[str, str]]:
    return [tuple(part.split(":", 1)) for part in combination.split(";")]


def test_the_page_is_self_contained_and_states_the_privacy_parameters(public, opened):
    page = opened.page
    text = (public / "explorer.html").read_text("utf-8")
    assert "<script src" not in text and "<link" not in text
    assert "http://" not in text and "https://" not in text
    assert all(url.startswith("file://") for url in opened.requests), opened.requests
    meta = json.loads((public / "metadata.json").read_text("utf-8"))
    privacy = page.inner_text("#privacy")
    # as JavaScript writes the numbers (3.9e-7, not Python's 3.9e-07)
    epsilon, delta = (page.evaluate(f"String({meta['method'][k]!r})") for k in ("epsilon", "delta"))
    assert f"epsilon {epsilon}, delta {delta} per release" in privacy
    assert delta == "3.9e-7"
    assert "fabricat" in page.inner_text("main")
    assert opened.load_seconds < 10  # generous: the 260k-row figure is measured in benchmarks/


def test_selected_values_show_exactly_the_published_counts(public, opened):
    page = opened.page
    dp, synthetic = _files(public)
    released = pd.Series(dp).drop("(protected number of records)")
    lengths = released.index.str.count(";") + 1
    # per length, the largest and a small released combination
    chosen = []
    for length in range(1, REPORTING_LENGTH + 1):
        at = released[lengths == length].sort_values(kind="stable")
        chosen += [at.index[-1], at.index[len(at) // 4]]
    # a combination the synthetic data holds but the aggregates do not release
    two = synthetic[["gender", "citizenship"]].drop_duplicates()
    missing = [
        f"gender:{g};citizenship:{c}"
        for g, c in two.itertuples(index=False)
        if g and c and f"gender:{g};citizenship:{c}" not in dp
    ]
    for combination in chosen + missing[:1]:
        pairs = _pairs(combination)
        shown_dp, shown_syn, shown_comparability = _select(page, pairs)
        mask = pd.Series(True, index=synthetic.index)
        for column, value in pairs:
            mask &= synthetic[column] == value
        expected_syn = int(mask.sum())
        assert shown_syn == str(expected_syn), combination
        if combination in dp:
            assert shown_dp == str(dp[combination]), combination
            high = max(dp[combination], expected_syn)
            tenths = (
                1000
                if high == 0
                else math.floor(1000 * min(dp[combination], expected_syn) / high + 0.5)
            )
            assert shown_comparability == f"{tenths / 10:.1f}%", combination
        else:
            assert shown_dp == "" and shown_comparability == "n/a", combination
            assert "not released" in page.inner_text("#dp-count")
    # nothing selected: the protected number of records and every synthetic record
    assert _select(page, [])[:2] == (str(dp["(protected number of records)"]), str(len(synthetic)))
    # More synthetic records than people: the page says by how many, and why.
    surplus = len(synthetic) - dp["(protected number of records)"]
    note = page.inner_text("#explain")
    if surplus > 0:
        undated = int((synthetic["yearOfRegistration"] == "").sum())
        number = page.evaluate("(n) => n.toLocaleString('en-US')", surplus)
        assert f"has {number} records more than that" in note
        assert f"({undated:,} synthetic records have no year of registration)" in note
        assert "not by counting synthetic records" in note
    else:
        assert "records more" not in note


def test_no_more_than_the_reporting_length_can_be_selected(opened):
    page = opened.page
    columns = ["gender", "ageBroad", "citizenship", "CountryOfExploitation"]
    page.click("#clear")
    for column in columns[:REPORTING_LENGTH]:
        values = page.eval_on_selector(
            f"#sel-{column}", "s => [...s.options].map(o => o.value).filter(v => v)"
        )
        page.select_option(f"#sel-{column}", values[0])
    assert page.is_disabled(f"#sel-{columns[REPORTING_LENGTH]}")
    page.click("#clear")
    assert page.is_enabled(f"#sel-{columns[REPORTING_LENGTH]}")


def test_charts_use_the_codebook_denominators(public, opened):
    page = opened.page
    _, synthetic = _files(public)
    _select(page, [("gender", "Woman")])
    women = synthetic[synthetic["gender"] == "Woman"]
    # categorical: among records with a known value
    known = women["ageBroad"][women["ageBroad"] != ""]
    note = page.inner_text("#chart-ageBroad .note")
    assert f"n = {len(known):,}" in note
    # binary: among records with any information in the variable's group
    var = next(v for v in CODEBOOK.variables if v.type == "binary")
    group = [v.name for v in CODEBOOK.variables if v.group == var.group]
    denominator = int((women[group] == "1").any(axis=1).sum())
    assert f"n = {denominator:,}" in page.inner_text(f"#chart-{var.name} .note")
    shown = page.inner_text(f"#chart-{var.name} .bar[data-value='1'] .n")
    assert shown == f"{int((women[var.name] == '1').sum()):,}"
