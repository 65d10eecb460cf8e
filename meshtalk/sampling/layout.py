"""The context model's weights laid out for sampling: float32, the masks applied, the row blocks of the waves and of
the exact check as contiguous copies, and the drafts made from them; kept per model while its parameters are
unchanged (``prepare``).
"""

from __future__ import annotations

import itertools
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

from meshtalk.device import on_huge_pages
from meshtalk.model import ContextModel
from meshtalk.sampling.draft import Drafter, LoopDrafter
from meshtalk.sampling.kernels import TABLE_COLUMNS
from meshtalk.sampling.schedule import Step, Wave, one_head_per_step, wave_schedule


class WeightLayout:
    """The context model's weights laid out for sampling (float32, the masks applied), kept per model while its
    parameters are unchanged."""

    def __init__(self, context: ContextModel, key: tuple):
        self.key = key
        self.waves, self.finish = wave_schedule(context)
        self.narrow_waves = [Wave(one_head_per_step(context, wave.steps), wave.first, wave.stop)
                             for wave in self.waves]
        self.narrow_finish = list(one_head_per_step(context, self.finish))
        layers = list(context.layers)
        H, C = context.heads, context.classes
        HK = H * context.embedding.out_per_head
        with torch.no_grad():
            # (in, out) per level, masked: the exact products, and the blocks of the waves as views of them.
            self.masked_t = [(m.masked.weight * m.mask).t().contiguous() for m in (*layers, context.logits)]
            self.near_t = torch.stack([m.history.weight[:, HK:].t() for m in layers])  # (L, HK, HK)
            self.far_t = [m.history.weight[:, :HK].t() for m in layers]  # views (HK, HK): torch's products
            self.far = torch.stack(self.far_t)  # (L, HK, HK) rows of inputs: the compiled loops'
            emb = context.embedding
            self.emb_rows = (emb.masked.weight * emb.mask).t().contiguous()  # (H*C, HK): class columns as rows
            self.emb_bias = emb.masked.bias.detach()
            self.logit_bias = context.logits.masked.bias.detach()
        self.class_offset = torch.arange(H, device=self.emb_rows.device) * C  # (H,): row of class 0 of head h
        # Contiguous copies of the wave blocks: strided views of the whole matrix were 20 % slower for 8 sequences.
        # The exact check's masked products in row groups of heads, each over the columns its heads may see: a
        # quarter of the heads per group skips 3/8 of the zero blocks.
        self.check_steps = []
        for level, m in enumerate((*layers, context.logits)):
            bounds = [round(g * H / 4) for g in range(5)]
            self.check_steps.append([Step(level, lo, hi, (hi if m.inclusive else hi - 1) * m.in_per_head)
                                     for lo, hi in itertools.pairwise(bounds) if hi > lo])
        steps = [step for waves in (self.waves, self.narrow_waves) for wave in waves for step in wave.steps]
        steps += self.finish + self.narrow_finish
        steps += [step for level in self.check_steps for step in level]
        # All blocks in one flat tensor (each starting on 64 bytes), which the compiled products read by offset.
        blocks = {step: self._view(step).contiguous() for step in steps}
        self._offsets, size = {}, 0
        for step, block in blocks.items():
            self._offsets[step] = size
            size += -(-block.numel() // 16) * 16
        flat = self.near_t.new_zeros(size)
        for step, block in blocks.items():
            flat[self._offsets[step] : self._offsets[step] + block.numel()] = block.reshape(-1)
        # On 2 MB pages what a step reads every frame (the far taps every d + 1 frames).
        packed = on_huge_pages([self.near_t, self.far, self.emb_rows, flat])
        self.near_t, self.far, self.emb_rows, self.flat = packed
        self._blocks = {step: self.flat[self._offsets[step] : self._offsets[step] + block.numel()].view(block.shape)
                        for step, block in blocks.items()}
        self._tables: dict[tuple[Step, ...], np.ndarray] = {}
        self.n_weights = sum(p.numel() for p in context.parameters())
        self._context = weakref.ref(context)
        self._drafters: dict[bool, Drafter | LoopDrafter] = {}

    def block(self, step: Step) -> Tensor:
        """The masked weights of a step, (cols, rows)."""
        return self._blocks[step]

    def table(self, steps: tuple[Step, ...] | list[Step]) -> np.ndarray:
        """The rows of ``meshtalk.sampling.kernels.wave_products`` for ``steps`` (their blocks in ``flat``)."""
        key = tuple(steps)
        if key not in self._tables:
            rows = []
            for s in key:
                width = self._blocks[s].shape[1]  # the outputs of heads lo .. hi - 1
                rows.append((s.level, s.lo * width // (s.hi - s.lo), width, s.cols, self._offsets[s]))
            self._tables[key] = np.array(rows, dtype=np.int64).reshape(len(rows), TABLE_COLUMNS)
        return self._tables[key]

    def _view(self, step: Step) -> Tensor:
        weight = self.masked_t[step.level]
        per_head = weight.shape[1] // len(self.class_offset)
        return weight[: step.cols, step.lo * per_head : step.hi * per_head]

    def drafter(self, *, compiled: bool) -> Drafter | LoopDrafter:
        if compiled not in self._drafters:
            context = self._context()
            assert context is not None  # the model owns this layout
            drafter = LoopDrafter(context, self) if compiled else Drafter(context, self)
            self._drafters[compiled] = drafter if drafter.ok else self.drafter(compiled=False)
        return self._drafters[compiled]


PREPARED: weakref.WeakKeyDictionary[ContextModel, WeightLayout] = weakref.WeakKeyDictionary()
_PREPARING = threading.Lock()  # threads sampling parts of one batch (meshtalk.animate) build one layout, not one each


def prepare(context: ContextModel) -> WeightLayout:
    """The sampling layout of ``context``'s weights, rebuilt when a parameter changed (in-place updates raise a
    tensor's version) or moved."""
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in context.parameters())
    with _PREPARING:
        prepared = PREPARED.get(context)
        if prepared is None or prepared.key != key:
            prepared = PREPARED[context] = WeightLayout(context, key)
    return prepared
