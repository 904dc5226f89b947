"""Judging the target's indexes against the baseline, so that noise cannot fail a healthy migration.

Recall is a proportion over queries x k: it is judged by its 95% Wilson interval against its bound
(Pass above, Fail below, Inconclusive across it). An index whose recall misses the bound is built
once more and measured again before the miss counts (an HNSW graph is randomised: two builds over
the same rows differ); an interval across the bound is narrowed with held-out queries, drawn from
other rows than the baseline's, and what still cannot be told is held for a person.

Latency is measured beside a fixed control query and judged as the ratio of the two, so load on
the machine, which slows both, cancels out; a ratio over the bound is measured again, up to
``verify.maxRounds`` rounds, keeping the best round (load only ever adds time). What still exceeds
the bound then does what ``verify.latency.enforce`` says: hold for a person (the default), fail, or
warn. A clear recall failure always fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ..api import IndexVerification, Verification, VerifySpec
from ..database.catalog import index_state
from ..database.measure import (
    SAMPLE_SEED,
    IndexMeasurement,
    combined,
    latency_ms,
    measure_index,
    sample_queries,
)
from ..database.sql import qualify
from ..database.surface import concurrent_build_bug
from ..engine.context import Migration
from ..engine.probe import Probe
from ..vocabulary import LatencyEnforcement, Reason, Verdict
from .reindex import run_build


@dataclass
class Judgement:
    """What the measurements found: failures, and regressions held for a person to decide."""

    problems: list[tuple[Reason, str]] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


async def judge_probes(m: Migration, probes: list[Probe], verification: Verification) -> Judgement:
    """Measure each probe's index now against its baseline: recall, usability, latency."""
    spec = m.spec.verify
    judgement = Judgement()
    by_name = {v.name: v for v in verification.indexes}
    for position, probe in enumerate(probes):
        m.reporter.progress("verify", position, len(probes), f"measuring {probe.index}")
        if not probe.queries:
            continue
        entry = by_name.setdefault(probe.index, IndexVerification(name=probe.index, queries=len(probe.queries)))
        before = probe.baseline
        after = await _measure(m, probe)
        bound = _recall_bound(probe, spec)
        below = bound is not None and after.recall is not None and after.recall < bound[0]
        if below and await _build_again(m, probe):
            entry.recall_after_first_build = after.recall
            after = await _measure(m, probe)
        verdict, figure = await _decide_recall(m, probe, after, entry, bound)
        entry.latency_after = latency_ms(after)
        entry.used_by_planner = after.used_by_planner
        if not after.usable and (before is None or before.usable):
            # Only what the source served is demanded of the target: a partial index the source's
            # planner could not use for the sampled query either is no failure of the migration.
            judgement.problems.append(
                (Reason.VERIFICATION_FAILED, f"index {probe.index} cannot serve its distance query")
            )
        if verdict is Verdict.FAILED:
            judgement.problems.append((Reason.RECALL_DROPPED, f"{figure}: below it"))
        elif verdict is Verdict.INCONCLUSIVE:
            judgement.held.append(f"{figure}: cannot tell, after {entry.held_out_queries or 0} held-out queries")
        if before is not None:
            await _judge_latency(m, probe, before, after, entry, judgement)
    verification.indexes = list(by_name.values())
    m.reporter.task_done("verify")
    return judgement


async def _measure(m: Migration, probe: Probe) -> IndexMeasurement:
    # Exact search again, not the baseline's: the application has written since the checklist.
    return await measure_index(m.session, probe.after, probe.queries, m.spec.verify.k)


def _recall_bound(probe: Probe, spec: VerifySpec) -> tuple[float, str] | None:
    """The recall an index must reach (the stricter of the two bounds), described; None when there is none."""
    bounds = []
    baseline = probe.baseline.recall if probe.baseline is not None else None
    if baseline is not None:
        bounds.append((baseline - spec.max_recall_drop, f"{spec.max_recall_drop} below the baseline {baseline:.3f}"))
    if spec.min_recall is not None:
        bounds.append((spec.min_recall, f"minRecall {spec.min_recall}"))
    return max(bounds) if bounds else None


def recall_verdict(after: IndexMeasurement, bound: float) -> Verdict:
    """Pass when recall's 95% interval lies wholly at or above ``bound``, Fail wholly below, else Inconclusive."""
    low, high = after.recall_interval or (after.recall or 0.0, after.recall or 0.0)
    if low >= bound:
        return Verdict.PASSED
    return Verdict.FAILED if high < bound else Verdict.INCONCLUSIVE


async def _decide_recall(
    m: Migration, probe: Probe, after: IndexMeasurement, entry: IndexVerification, found: tuple[float, str] | None
) -> tuple[Verdict, str]:
    """Recall's verdict, measuring held-out queries (other rows than the baseline's) while it cannot tell.

    An interval across the bound is measured again with fresh queries, up to verify.maxRounds sets in
    all, their counts added: a healthy index's interval narrows above the bound, a losing one's below.
    Still undecided, a point estimate above the bound passes with a warning, and one below it is held
    for a person (VerificationInconclusive): never rolled back on a sample too small to tell.
    """
    spec = m.spec.verify
    if found is None or after.recall is None:
        entry.recall_after = after.recall
        interval = after.recall_interval
        entry.recall_after_interval = list(interval) if interval else None  # reported even with no bound
        return Verdict.PASSED, ""
    bound, described = found
    verdict, rounds, seen, held_out = recall_verdict(after, bound), 1, set(probe.queries), 0
    while verdict is Verdict.INCONCLUSIVE and rounds < spec.max_rounds:
        rounds += 1
        rows = max(probe.table_rows, 4 * len(probe.queries))
        drawn = await sample_queries(m.session, probe.after, len(probe.queries), rows, seed=SAMPLE_SEED + rounds)
        fresh = [query for query in drawn if query not in seen]
        if not fresh:
            break  # no other rows to draw from
        seen.update(fresh)
        held_out += len(fresh)
        after = combined(after, await measure_index(m.session, probe.after, fresh, spec.k))
        verdict = recall_verdict(after, bound)
    recall = after.recall or 0.0
    low, high = after.recall_interval or (recall, recall)
    entry.recall_after, entry.recall_after_interval = after.recall, [low, high]
    entry.recall_verdict, entry.held_out_queries = verdict.value, held_out or None
    figure = (
        f"index {probe.index}: recall@{spec.k} {recall:.3f} (95% interval {low:.3f}-{high:.3f} over "
        f"{after.queries} queries), bound {bound:.3f} ({described})"
    )
    if verdict is Verdict.INCONCLUSIVE and recall >= bound:
        m.warn(f"{figure}: above the bound, though not proven at 95%")
        return Verdict.PASSED, figure
    return verdict, figure


async def _build_again(m: Migration, probe: Probe) -> bool:
    """Build the index once more (REINDEX CONCURRENTLY: writes go on); whether it was.

    Not when it was already built again in this run, nor where the target's concurrent build is
    known to be broken or the target's surface is not known to this run.
    """
    name = qualify(probe.after.schema, probe.after.index_name)
    state = await index_state(m.session, probe.after.schema, probe.after.index_name)
    surface = m.facts.surface
    if name in m.facts.built_again or state is None or surface is None or concurrent_build_bug(surface, state[1]):
        return False
    m.facts.built_again.add(name)
    statement = f"REINDEX INDEX CONCURRENTLY {name}"
    conn = m.session
    try:
        await run_build(m, statement)
    except asyncpg.PostgresError as error:
        # An interrupted REINDEX CONCURRENTLY leaves its new copy INVALID beside the index: drop it.
        await conn.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {qualify(probe.after.schema, probe.after.index_name + '_ccnew')}"
        )
        m.warn(f"index {probe.index}: building it again failed ({error}); judged on its first build")
        return False
    m.warn(f"index {probe.index}: recall missed its bound on the first build; built it once more and measured again")
    return True


async def _judge_latency(
    m: Migration,
    probe: Probe,
    before: IndexMeasurement,
    after: IndexMeasurement,
    entry: IndexVerification,
    judgement: Judgement,
) -> None:
    spec = m.spec.verify
    best, rounds = after, 1
    verdict, excess = latency_verdict(spec, before, best)
    while verdict is not Verdict.PASSED and rounds < spec.max_rounds:
        again = await _measure(m, probe)
        rounds += 1
        if _latency_key(again) < _latency_key(best):
            best = again  # load only ever adds time: the quickest round is the truest
        verdict, excess = latency_verdict(spec, before, best)
    entry.latency_after = latency_ms(best)
    entry.latency_rounds = rounds
    entry.relative_latency_before, entry.relative_latency_after = before.judged_relative, best.judged_relative
    interval = best.judged_relative_interval
    entry.relative_latency_interval = list(interval) if interval else None
    entry.latency_verdict = verdict.value
    if verdict is Verdict.PASSED:
        return
    message = f"index {probe.index}: {excess} in each of {rounds} round(s)"
    enforce = spec.latency.enforce
    if verdict is Verdict.FAILED and enforce is LatencyEnforcement.ROLLBACK:
        judgement.problems.append((Reason.LATENCY_REGRESSED, message))
    elif enforce is LatencyEnforcement.WARN:
        m.warn(f"{message} (verify.latency.enforce: Warn)")
    elif m.decisions.promote and not m.facts.promotion_used:
        m.facts.promotion_used = True
        m.warn(f"{message}; accepted by a person (promote)")
    else:
        # Inconclusive is held whatever enforce says: rolling back needs the interval to say so
        judgement.held.append(message)


def _latency_key(measurement: IndexMeasurement) -> float:
    relative = measurement.judged_relative
    return relative if relative is not None else measurement.judged_percentile[1]


def latency_verdict(spec: VerifySpec, before: IndexMeasurement, after: IndexMeasurement) -> tuple[Verdict, str | None]:
    """Pass within the bound, Fail wholly above it, Inconclusive above it with an interval reaching below.

    With the verdict, how the figure exceeds the bound. Judged on the ratio to the control query
    when both measurements have it (journals written before it existed do not), else on
    milliseconds as before, where no interval can tell noise from a change. The slack in
    milliseconds is counted in control-query units for the ratio.
    """
    label, after_ms = after.judged_percentile
    factor, slack = spec.max_latency_regression, spec.latency_slack_ms
    was, now = before.judged_relative, after.judged_relative
    if was is not None and now is not None and after.control_p50_ms:
        bound = was * factor + slack / after.control_p50_ms
        if now <= bound:
            return Verdict.PASSED, None
        interval = after.judged_relative_interval
        clear = interval is not None and interval[0] > bound
        reaching = "" if clear or interval is None else f", though its 95% interval reaches {interval[0]:.2f}x"
        return Verdict.FAILED if clear else Verdict.INCONCLUSIVE, (
            f"{label} {after_ms:.2f} ms is {now:.2f}x the control query's time, above {bound:.2f}x "
            f"({factor}x the baseline's {was:.2f}x + {slack} ms){reaching}"
        )
    baseline_ms = before.judged_percentile[1]
    bound = baseline_ms * factor + slack
    if after_ms <= bound:
        return Verdict.PASSED, None
    excess = f"{label} {after_ms:.2f} ms exceeds {bound:.2f} ms ({factor}x baseline {baseline_ms:.2f} ms + {slack} ms)"
    return Verdict.FAILED, excess
