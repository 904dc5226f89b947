"""Cutover: the spec's steps walked over the shadow tables (phases.cutover), each step re-analysed."""

from __future__ import annotations

from ...engine.context import Migration
from ...engine.outcomes import Outcome
from ...phases.cutover import walk_cutover
from ...phases.judge import Judgement
from .shadow import START_OVER, recorded_shadows
from .verify import analyse


async def run_cutover(m: Migration) -> Outcome:
    """Walk the cutover steps: publish weights, pause, and compare the shadows again before each next step."""
    _, tables = await recorded_shadows(m)
    if tables is None:
        return START_OVER
    shadows = tables

    async def analyse_shadows(run: Migration) -> Judgement:
        return await analyse(run, shadows, "shadow")

    return await walk_cutover(m, analyse_shadows, "the new tables")
