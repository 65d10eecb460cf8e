"""The waves of one frame: which heads of which layer each matrix product makes final.

At the current frame head h of a strict layer depends only on the previous layer's heads < h, so with the
reference's six strict levels label h depends only on labels <= h - 6, and a frame's 16 labels come in three waves
of six (one head at a time with the first-strict mask).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshtalk.model import ContextModel


@dataclass(frozen=True)
class Step:
    """One matrix product of a wave: output heads [lo, hi) of ``level`` (context layers 0 .. L - 1, then the
    logits as level L) from the first ``cols`` channels of the level's input."""

    level: int
    lo: int
    hi: int
    cols: int


@dataclass(frozen=True)
class Wave:
    steps: tuple[Step, ...]
    first: int  # labels [first, stop) are chosen at the end of the wave
    stop: int


def wave_schedule(context: ContextModel) -> tuple[list[Wave], list[Step]]:
    """The waves of one frame, and the steps after the last one that complete the frame's activations.

    Labels < a make the embedding of heads <= a final (it is strict); a strict level's head j needs its input's
    heads < j, an inclusive one's heads <= j. So each level's final heads follow from the level below, and the
    logits' final heads are the labels the wave can choose. Strict (the reference): waves of 6 heads.
    """
    H = context.heads
    levels = [*context.layers, context.logits]
    done = [0] * len(levels)
    waves, first = [], 0
    while first < H:
        visible = min(H, first + 1)  # final embedding heads
        steps = []
        for level, layer in enumerate(levels):
            ready = min(H, visible + (0 if layer.inclusive else 1))
            if ready > done[level]:
                cols = (ready if layer.inclusive else ready - 1) * layer.in_per_head
                steps.append(Step(level, done[level], ready, cols))
                done[level] = ready
            visible = done[level]
        waves.append(Wave(tuple(steps), first, done[-1]))
        first = done[-1]
    finish = [Step(level, done[level], H, (H if levels[level].inclusive else H - 1) * levels[level].in_per_head)
              for level in range(len(levels) - 1) if done[level] < H]
    return waves, finish


def one_head_per_step(context: ContextModel, steps: tuple[Step, ...] | list[Step]) -> tuple[Step, ...]:
    """The same steps a head at a time, each over exactly the columns its head sees: more products, but none of
    the zero blocks inside a wave's block (29 % of its weights for the reference), which pays once several
    sequences make the products compute-bound."""
    levels = [*context.layers, context.logits]
    return tuple(Step(s.level, h, h + 1, (h + 1 if levels[s.level].inclusive else h) * levels[s.level].in_per_head)
                 for s in steps for h in range(s.lo, s.hi))
