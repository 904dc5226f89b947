"""Cutover: the spec's steps (weights published for the application's router, pauses), each re-analysed.

Argo Rollouts' canary steps, for reads: a strategy that keeps the old and the new side readable
at once (Parallel's shadow tables, Replicate's new database) walks them before it switches. What
"analyse" measures is the strategy's; the walk, the pauses and promotion are the same for both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..api import CutoverStatus, duration_ms
from ..engine.context import Migration
from ..engine.outcomes import Advance, Hold, Outcome, Wait
from ..status import now, seconds_since, set_cutover
from ..vocabulary import Phase, Reason
from .judge import Judgement
from .verify import fail_verification, hold_for_a_decision

Analysis = Callable[[Migration], Awaitable[Judgement]]


async def walk_cutover(m: Migration, analyse: Analysis, new_side: str) -> Outcome:
    """Walk the cutover steps: publish weights, pause, and re-run the analysis before each next step.

    ``new_side`` names where the weighted reads go ("the new tables", "the new database").
    """
    cutover = m.status.cutover or CutoverStatus()
    set_cutover(m.status, cutover)
    steps = m.spec.cutover.steps
    while cutover.step < len(steps):
        current = steps[cutover.step]
        if cutover.step_started_at is None:
            cutover.step_started_at = now()
        if current.set_weight is not None:
            cutover.weight = current.set_weight
            judgement = await analyse(m)
            problems = judgement.problems
            if judgement.held and not problems:
                return hold_for_a_decision(m, judgement.held, f"cutover step {cutover.step + 1} holds")
            if problems:
                step = f"cutover step {cutover.step + 1} (weight {cutover.weight}%): "
                return fail_verification(m, problems, step, reason=Reason.ANALYSIS_FAILED)
        elif current.pause is not None and current.pause.duration is None:
            if not m.decisions.promote or m.facts.promotion_used:
                return Hold(
                    Reason.AWAITING_PROMOTION,
                    f"cutover paused at step {cutover.step + 1} of {len(steps)} with {cutover.weight}% of reads on "
                    f'{new_side}; promote to go on (annotation ruvector.dev/promote: "true", or --promote)',
                )
            m.facts.promotion_used = True
        elif current.pause is not None:
            remaining = duration_ms(current.pause.duration or "0") / 1000 - _age(cutover.step_started_at)
            if remaining > 0:
                return Wait(
                    Reason.CUTOVER_PAUSED,
                    f"cutover paused at step {cutover.step + 1} of {len(steps)} for {remaining:.0f}s more",
                    delay=remaining,
                )
        cutover.step += 1
        cutover.step_started_at = None
    cutover.weight = 100
    return Advance(Phase.FINALIZE, f"cutover steps done ({len(steps)}); finalizing")


def _age(stamp: str | None) -> float:
    return 0.0 if stamp is None else seconds_since(stamp)
