"""Synthetic records from the stored DP aggregates: post-processing, spends no epsilon.

The sampler reads only the DP aggregates (never the sensitive table). It draws the columns one
after another, each from its DP conditional distribution given up to `reporting_length - 1`
already drawn columns (those most associated with it in the DP 2-counts), like a Bayesian
network whose tables are the released counts:

- pac-synth does not count empty values, so a joint table that includes "empty" is rebuilt by
  inclusion-exclusion: count(a empty, B) = count(B) - sum over non-empty a of count(a, B);
- noisy counts that come out negative are clipped at zero;
- within each parent combination, records take evenly spaced quantiles of the conditional
  distribution (systematic sampling), so counts carry no extra multinomial noise;
- a record whose parents' combination the aggregates do not support falls back to fewer
  parents, finally to the column's own DP distribution.

Everything is vectorised over records: integer codes, dense numpy tables (0 = empty).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR, DpAggregates

EMPTY = ""


class AggregateTables:
    """The DP aggregates as dense joint tables over column sets, index 0 = empty value."""

    def __init__(
        self,
        aggregates: DpAggregates,
        columns: list[str],
        never_empty: frozenset[str] = frozenset(),
        ipf_iterations: int = 8,
    ):
        self.columns = list(columns)
        self.never_empty = never_empty
        self.ipf_iterations = ipf_iterations
        self.position = {c: i for i, c in enumerate(self.columns)}
        self.total = float(aggregates.protected_records)
        frame = aggregates.frame()
        attrs = frame["combination"].str.split(DELIMITER, regex=False).explode()
        split = attrs.str.split(SEPARATOR, n=1, expand=True, regex=False)
        pairs = pd.DataFrame({"row": attrs.index, "column": split[0], "value": split[1]})
        values = pairs[["column", "value"]].drop_duplicates().sort_values(["column", "value"])
        self.values = {c: [EMPTY] for c in self.columns}
        for column, group in values.groupby("column"):
            self.values[column] += group["value"].tolist()
        values["code"] = values.groupby("column").cumcount() + 1  # 0 is the empty value
        pairs = pairs.merge(values, on=["column", "value"], how="left")
        pairs["pos"] = pairs["column"].map(self.position)
        pairs = pairs.sort_values(["row", "pos"], kind="stable")
        # One dense array per column set, holding the released (non-empty) counts.
        self.raw: dict[tuple[str, ...], np.ndarray] = {}
        counts = frame["count"].to_numpy(dtype=float)
        by_row = pairs.groupby("row", sort=False)
        names = by_row["column"].agg(DELIMITER.join)
        codes = by_row["code"].agg(tuple)
        for key, rows in names.groupby(names).groups.items():
            combo = tuple(key.split(DELIMITER))
            shape = tuple(len(self.values[c]) for c in combo)
            array = np.zeros(shape)
            index = np.array(codes.loc[rows].tolist()).T
            array[tuple(index)] = counts[np.asarray(rows)]
            self.raw[combo] = array
        self.joint = cache(self._joint)
        self.fitted = cache(self._fitted)

    def ordered(self, columns) -> tuple[str, ...]:
        return tuple(sorted(columns, key=self.position.__getitem__))

    def shape(self, columns: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(len(self.values[c]) for c in columns)

    def _joint(self, columns: tuple[str, ...], forced: frozenset = frozenset()) -> np.ndarray:
        """Counts over `columns` (codebook order); columns in `forced` are non-empty only."""
        if not columns:
            return np.array(self.total)
        free = [c for c in columns if c not in forced]
        if not free:
            array = self.raw.get(columns)
            return array if array is not None else np.zeros(self.shape(columns))
        column = free[0]
        axis = columns.index(column)
        array = self.joint(columns, forced | {column}).copy()
        base = self.joint(tuple(c for c in columns if c != column), forced)
        empty = base - array.sum(axis=axis)
        index = [slice(None)] * len(columns)
        index[axis] = 0
        array[tuple(index)] = empty
        return array

    def _fitted(self, columns: tuple[str, ...]) -> np.ndarray:
        """The joint table made consistent with its lower-order DP tables.

        Inclusion-exclusion puts every unreleased count (combinations pac-synth's thresholds
        suppressed) into "empty"; the longer the combination, the more. Iterative proportional
        fitting to the (already fitted) tables one column shorter moves that mass back where
        the shorter, more complete counts say it belongs. A required column is never empty.
        """
        array = np.clip(self.joint(columns), 0.0, None)
        if len(columns) == 1:
            if columns[0] in self.never_empty:
                array = array.copy()
                array[0] = 0.0
            total = array.sum()
            return array * (self.total / total) if total > 0 else array
        array = array.copy()
        for _ in range(self.ipf_iterations):
            for axis, column in enumerate(columns):
                target = self.fitted(tuple(c for c in columns if c != column))
                current = array.sum(axis=axis)
                ratio = np.divide(target, current, out=np.zeros_like(current), where=current > 0)
                array *= np.expand_dims(ratio, axis)
        return array

    def mutual_information(self, a: str, b: str) -> float:
        p = self.fitted(self.ordered([a, b]))
        if p.sum() <= 0:
            return 0.0
        p = p / p.sum()
        outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
        mask = p > 0
        return float((p[mask] * np.log(p[mask] / outer[mask])).sum())


def plan_parents(tables: AggregateTables, reporting_length: int) -> dict[str, list[str]]:
    """For each column (codebook order), the earlier columns it is drawn conditionally on."""
    parents: dict[str, list[str]] = {}
    for j, column in enumerate(tables.columns):
        earlier = tables.columns[:j]
        scored = sorted(earlier, key=lambda p: -tables.mutual_information(p, column))
        parents[column] = scored[: max(reporting_length - 1, 0)]
    return parents


def _systematic_quantiles(keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """u in [0, 1) per record: evenly spaced within each key, in random order, random offset."""
    n = len(keys)
    order = np.lexsort((rng.random(n), keys))
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    sizes = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(n) - starts[group]
    offset = rng.random(len(starts))[group]
    u = np.empty(n)
    u[order] = (rank + offset) / sizes[group]
    return u


def _draw(
    codes: np.ndarray, parents: list[str], table: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Codes of the drawn column (last axis of `table`) per record; -1 where unsupported."""
    table = np.clip(table, 0.0, None)
    width = table.shape[-1]
    flat_table = table.reshape(-1, width)
    totals = flat_table.sum(axis=1)
    if parents:
        keys = np.ravel_multi_index(tuple(codes.T), table.shape[:-1])
    else:
        keys = np.zeros(len(codes), dtype=np.int64)
    supported = totals[keys] > 0
    drawn = np.full(len(codes), -1, dtype=np.int64)
    if not supported.any():
        return drawn
    keys = keys[supported]
    used = np.unique(keys)
    cdf = np.cumsum(flat_table[used], axis=1) / totals[used][:, None]
    cdf[:, -1] = 1.0
    flat = (np.arange(len(used))[:, None] + cdf).ravel()
    local = np.searchsorted(used, keys)
    u = _systematic_quantiles(keys, rng)
    position = np.searchsorted(flat, local + u, side="right")
    position = np.minimum(position, len(flat) - 1)  # u < 1; guards against rounding only
    drawn[supported] = position - local * width
    return drawn


def _repair_margin(values: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move the fewest records (chosen at random) so value counts meet the DP 1-counts."""
    n = len(values)
    share = target / target.sum() * n if target.sum() > 0 else np.zeros_like(target)
    wanted = np.floor(share).astype(np.int64)
    remainder = n - wanted.sum()  # largest remainders get the leftover records
    wanted[np.argsort(-(share - wanted), kind="stable")[:remainder]] += 1
    current = np.bincount(values, minlength=len(target))
    surplus = np.maximum(current - wanted, 0)
    deficit = np.maximum(wanted - current, 0)
    if not surplus.any():
        return values
    order = np.lexsort((rng.random(n), values))
    starts = np.r_[0, np.cumsum(current)[:-1]]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[values[order]]
    moved = rank < surplus[values]
    replacement = np.repeat(np.arange(len(target)), deficit)
    repaired = values.copy()
    repaired[moved] = rng.permutation(replacement)
    return repaired


def sample(
    aggregates: DpAggregates,
    columns: list[str],
    rows: int | None = None,
    seed: int = 0,
    never_empty: frozenset[str] = frozenset(),
    repair_margins: bool = True,
) -> pd.DataFrame:
    """`rows` synthetic records (default: the DP record count), all columns as strings.

    `never_empty`: columns every record has (the codebook's required year).
    `repair_margins`: after drawing a column, move the fewest records needed for its value
    counts to meet the DP 1-counts (the most accurate released counts).
    """
    tables = AggregateTables(aggregates, columns, never_empty)
    rows = aggregates.protected_records if rows is None else rows
    rng = np.random.default_rng(seed)
    parents = plan_parents(tables, aggregates.params.reporting_length)
    codes = np.zeros((rows, len(columns)), dtype=np.int64)
    for j, column in enumerate(columns):
        values = np.full(rows, -1, dtype=np.int64)
        chosen = list(parents[column])
        while True:  # back off to fewer parents where the aggregates give no support
            todo = values < 0
            if not todo.any():
                break
            ordered = tables.ordered([*chosen, column])
            table = np.moveaxis(tables.fitted(ordered), ordered.index(column), -1)
            parent_axes = [c for c in ordered if c != column]
            parent_codes = codes[np.ix_(todo, [tables.position[c] for c in parent_axes])]
            values[todo] = _draw(parent_codes, parent_axes, table, rng)
            if not chosen:
                break
            chosen = chosen[:-1]
        values = np.maximum(values, 0)  # nothing supported at all: empty
        if repair_margins:
            values = _repair_margin(values, tables.fitted((column,)), rng)
        codes[:, j] = values
    return pd.DataFrame(
        {c: np.asarray(tables.values[c], dtype=object)[codes[:, j]] for j, c in enumerate(columns)}
    )
