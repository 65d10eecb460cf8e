"""``sample_fast``, which chooses between the waves and the speculative path (the same labels either way), and
``sample``, either sampler by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.errors import InputError
from meshtalk.device import torch_threads
from meshtalk.model import ContextModel
from meshtalk.sampling.layout import prepare
from meshtalk.sampling.loop import sample_reference
from meshtalk.sampling.noise import Sample, scaled_gumbel
from meshtalk.sampling.speculative import SPECULATION_BLOCK_FRAMES, SamplerStats, sample_speculative
from meshtalk.sampling.waves import sample_waves

DRAFTS = ("auto", "compiled", "eager", "none")
SPECULATION_MIN_WEIGHTS = 1_000_000  # "auto" speculates for context models at least this large (released: 17.7 M)


def sample_fast(context: ContextModel, audio_code: Tensor, *, argmax: bool = False, noise: Tensor | None = None,
                generator: torch.Generator | None = None, noise_scale: float = 1.0, prefix: Tensor | None = None,
                draft: str = "auto", stats: SamplerStats | None = None) -> Sample:
    """The labels of ``sample_reference`` (same arguments) at a fraction of the cost.

    ``prefix`` (B x P x H labels, P <= T) gives the labels of the first P frames instead of sampling them (their
    noise, drawn or given, is not used): with the last ``context.receptive_field`` labels of a sequence and their
    audio codes in front, the next frames are sampled as if the whole sequence had been sampled at once, so that
    long audio can be sampled in chunks.

    ``draft`` chooses how (the labels are the same whichever, see ``meshtalk.sampling``): ``"none"`` samples in
    waves; ``"compiled"`` speculates with an int8 draft compiled as one loop (numba; one sequence at a time, the
    batch in turn), falling back to ``"eager"`` if compiling fails; ``"eager"`` speculates with the same draft in
    torch's operations (slow for large models: for tests); ``"auto"`` is ``"compiled"`` for one float32 sequence
    on the CPU of a context model of at least ``SPECULATION_MIN_WEIGHTS`` weights and more than two blocks of
    frames, where it pays, and ``"none"`` otherwise. The first compiled draft of a process costs about 0.1 s to
    load (2-3 s the first time on a machine, before numba's cache holds it), and its quantised weights about
    0.1 s per model.

    Raises:
        InputError: ``noise``, ``prefix`` or ``draft`` not as described.
    """
    B, T, _ = audio_code.shape
    H, C = context.heads, context.classes
    given = 0 if prefix is None else prefix.shape[1]
    if prefix is not None and (prefix.dim() != 3 or prefix.shape[0] != B or prefix.shape[2] != H or given > T):
        raise InputError("prefix", "wrong shape", expected=f"({B}, <= {T}, {H})", actual=tuple(prefix.shape))
    if draft not in DRAFTS:
        raise InputError("draft", "unknown draft", expected=" or ".join(DRAFTS), actual=repr(draft))
    gumbel = scaled_gumbel(audio_code, H, C, argmax=argmax, noise=noise, generator=generator, noise_scale=noise_scale)
    labels = torch.zeros(B, T, H, dtype=torch.long, device=audio_code.device)
    if prefix is not None:
        labels[:, :given] = prefix.to(device=audio_code.device, dtype=torch.long)
    stats = stats if stats is not None else SamplerStats()
    prepared = prepare(context)
    if draft == "auto":
        worth = (audio_code.device.type == "cpu" and audio_code.dtype == torch.float32 and B == 1
                 and T - given > 2 * SPECULATION_BLOCK_FRAMES and prepared.n_weights >= SPECULATION_MIN_WEIGHTS)
        draft = "compiled" if worth else "none"
    if audio_code.device.type != "cpu":  # the draft's bookkeeping is on the CPU; waves run anywhere
        draft = "none"
    drafter = None if draft == "none" else prepared.drafter(compiled=draft == "compiled")
    # One intra-op thread for the sequential steps: their products are small, and on shared cores a second thread
    # made them 3 to 30 times slower (docs/model.md); the exact checks of the speculative path are large products.
    with torch.no_grad(), torch_threads(1):
        if drafter is None:
            stats.path = "waves"
            sample_waves(context, prepared, audio_code, gumbel, labels, given)
        else:
            stats.path = "speculative"
            for b in range(B):  # the draft proposes for one sequence
                sample_speculative(context, prepared, drafter, audio_code[b], None if gumbel is None else gumbel[b],
                                   labels[b], given, stats)
    one_hot = F.one_hot(labels, C).to(audio_code.dtype)  # (B, T, H, C)
    return Sample(labels=labels, one_hot=one_hot)


SAMPLERS = {"fast": sample_fast, "reference": sample_reference}


def sample(context: ContextModel, audio_code: Tensor, *, method: str = "fast", **options) -> Sample:
    """``sample_fast`` or ``sample_reference`` by name; ``options`` as theirs.

    Raises:
        InputError: an unknown method, or noise of the wrong shape.
    """
    if method not in SAMPLERS:
        raise InputError("sampler", "unknown method", expected=" or ".join(SAMPLERS), actual=repr(method))
    return SAMPLERS[method](context, audio_code, **options)
