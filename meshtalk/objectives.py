"""Forwarders: a batch in, named losses and named outputs out. No optimiser, no loop (that is the trainer's).

A batch is a dict of tensors:
- ``mel``: B x T x 80 x 101 log-mel, one one-second window per mesh frame (``facedata.audio.mel_windows``);
- ``vertices``: B x T x V x 3 tracked geometry, mm;
- ``template``: B x V x 3 neutral face of each sequence's subject, mm;
- ``mouth``, ``upper_face``, ``eyelid``: V soft vertex weights in [0, 1] (stage 1 only);
- ``audio_code`` (optional): B x T x audio_dim codes of a frozen audio encoder, used in place of running it on
  ``mel`` (the trainer's cache, ``meshtalk.recipes.AudioCodeCache``);
- ``expression_vertices`` (optional): B x T x V x 3, what the expression encoder sees in place of ``vertices``
  (a recipe's augmentation, ``meshtalk.recipes.swap_lower_face``); the losses still compare with ``vertices``.
Stage 1 trains the encoder and decoder, stage 2 the context model over the frozen encoder's labels; the caller
puts the model in train or eval mode (the reference keeps the encoder in eval mode in stage 2).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.errors import InputError
from meshtalk.model import MeshTalk, quantize


@dataclass
class ForwardResult:
    """What a forwarder gives: named scalar losses whose sum is the objective, and detached named outputs."""

    losses: dict[str, Tensor]  # scalars, all weights 1
    outputs: dict[str, Tensor]

    @property
    def total(self) -> Tensor:
        """The objective: the sum of the losses."""
        return torch.stack(list(self.losses.values())).sum()


@dataclass(frozen=True)
class BatchShard:
    """Rows ``start:stop`` of a batch of ``size`` rows split over data-parallel ranks (``meshtalk.distributed``).

    ``gather`` concatenates every rank's rows of a tensor in rank order (rows x ... -> size x ...) and sends their
    gradients back to the rank that owns them. An objective draws its batch-level randomness (noise, rolls) for all
    ``size`` rows and keeps its own, so the ranks together take the step one process takes on the whole batch.
    """

    start: int
    stop: int
    size: int
    gather: Callable[[Tensor], Tensor] = field(default=lambda rows: rows)

    @classmethod
    def whole(cls, size: int) -> BatchShard:
        """The whole batch in one process."""
        return cls(0, size, size)


def audio_code(model: MeshTalk, batch: dict[str, Tensor]) -> Tensor:
    """The batch's audio codes B x T x audio_dim: ``batch["audio_code"]`` when the trainer caches a frozen audio
    encoder's codes (``meshtalk.recipes.AudioCodeCache``), else the audio encoder's output for ``batch["mel"]``."""
    cached = batch.get("audio_code")
    return cached if cached is not None else model.encoder.audio(batch["mel"])


def stage1_losses(model: MeshTalk, batch: dict[str, Tensor], *, rng: random.Random | None = None,
                  shard: BatchShard | None = None, upper_weight: float = 1.0) -> ForwardResult:
    """Stage-1 losses: reconstruction, eyelid landmarks and modality crossing, three decodes in one pass.

    Random draws, in the reference's order (a run seeded with ``torch.manual_seed`` and ``random.seed``
    reproduces its losses): Gumbel noise of decode 1; k1 in [1, B - 1], the expression codes rolled by k1;
    noise of decode 2; k2, the audio codes rolled by k2; noise of decode 3. Decode 1 reconstructs, decode 2
    (another sequence's expression, own audio) is judged on the mouth, decode 3 (own expression, another
    sequence's audio) on the upper face. All three decode towards the batch's own geometry from its own template.

    Args:
        model: the model; its fusion, quantiser and decoder see a 3B batch.
        batch: ``mel``, ``vertices``, ``template``, ``mouth``, ``upper_face``, ``eyelid`` (see the module).
        rng: the source of the batch rolls (default: Python's global ``random``).
        shard: this process's rows of a batch split over ranks (default: the whole batch). Noise and rolls are
            drawn for the whole batch and the expression and audio codes are gathered from every rank, so a
            sequence's partner can be any sequence of the batch, as in one process.
        upper_weight: factor on the upper-face crossing term (1: the reference). The brows move a tenth of the
            mouth's variance, so in mm^2 the mouth rules every term; a recipe may weigh the upper face up.

    Returns:
        losses: ``recon``, ``landmarks`` and ``modality_crossing`` (mouth term + ``upper_weight`` x upper-face
            term).
        outputs: the two crossing terms ``crossing_mouth`` and ``crossing_upper``; of decode 1, ``logprobs``
            B x T x H x C, ``labels`` B x T x H (with noise) and ``geometry`` B x T x V x 3.

    Raises:
        InputError: a missing key, a shape that does not fit the model, or B < 2.
    """
    check_batch(batch, model, ("vertices", "mel", "template", "mouth", "upper_face", "eyelid"))
    randint = rng.randint if rng is not None else random.randint
    mel, vertices, template = batch["mel"], batch["vertices"], batch["template"]
    B, T = vertices.shape[:2]  # B: this process's rows
    rows = shard or BatchShard.whole(B)
    if rows.size < 2:
        raise InputError("batch", "modality crossing needs two sequences", expected="B >= 2",
                         actual=f"B = {rows.size}")
    H, C = model.config.heads, model.config.classes
    encoder = model.encoder
    # (B, T, 128) each
    audio, expression = audio_code(model, batch), encoder.expression(batch.get("expression_vertices", vertices))

    shape = (rows.size, T, H, C)  # drawn for the whole batch, cut to this process's rows
    own = torch.arange(rows.start, rows.stop, device=mel.device)
    noise = [torch.rand(shape, device=mel.device)[rows.start : rows.stop]]
    other = (own + randint(1, rows.size - 1)) % rows.size
    expression_crossed = rows.gather(expression)[other]
    noise.append(torch.rand(shape, device=mel.device)[rows.start : rows.stop])
    other = (own + randint(1, rows.size - 1)) % rows.size
    audio_crossed = rows.gather(audio)[other]
    noise.append(torch.rand(shape, device=mel.device)[rows.start : rows.stop])

    logprobs = encoder.fusion(torch.cat([expression, expression_crossed, expression]),
                              torch.cat([audio, audio, audio_crossed]))  # (3B, T, H, C)
    latent = quantize(logprobs, torch.cat(noise), noise_scale=model.config.gumbel_noise_scale)
    geometry = model.decoder(template.repeat(3, 1, 1), latent.one_hot)  # (3B, T, V, 3)
    squared = (geometry - vertices.repeat(3, 1, 1, 1)).square()  # (3B, T, V, 3)
    recon, mouth, upper = squared.split(B)  # (B, T, V, 3) each

    crossing_mouth, crossing_upper = masked_mean(mouth, batch["mouth"]), masked_mean(upper, batch["upper_face"])
    losses = {
        "recon": recon.mean(),
        "landmarks": masked_mean(recon, batch["eyelid"]),
        "modality_crossing": crossing_mouth + upper_weight * crossing_upper,
    }
    outputs = {"crossing_mouth": crossing_mouth.detach(), "crossing_upper": crossing_upper.detach(),
               "logprobs": logprobs[:B].detach(), "labels": latent.labels[:B], "geometry": geometry[:B].detach()}
    return ForwardResult(losses=losses, outputs=outputs)


def stage2_losses(model: MeshTalk, batch: dict[str, Tensor]) -> ForwardResult:
    """Stage-2 loss: the context model's NLL of the frozen encoder's argmax labels, with teacher forcing.

    The encoder runs under ``torch.no_grad()``; its labels are both the context model's input (one-hot) and its
    target. The audio code given to the context model is the frozen encoder's.

    Args:
        model: the model (only the context model gets gradients).
        batch: ``mel`` and ``vertices`` (see the module).

    Returns:
        losses: ``cross_entropy`` (mean over B x T x H).
        outputs: ``logprobs`` B x T x H x C of the context model, ``labels`` B x T x H (the targets).

    Raises:
        InputError: a missing key or a shape that does not fit the model.
    """
    check_batch(batch, model, ("vertices", "mel"))
    C = model.config.classes
    with torch.no_grad():
        audio = audio_code(model, batch)
        labels = model.encoder.fusion(model.encoder.expression(batch["vertices"]), audio).argmax(dim=-1)  # (B, T, H)
    logprobs = model.context(F.one_hot(labels, C).to(audio.dtype), audio)  # (B, T, H, C)
    cross_entropy = F.nll_loss(logprobs.reshape(-1, C), labels.reshape(-1))
    return ForwardResult(losses={"cross_entropy": cross_entropy},
                         outputs={"logprobs": logprobs.detach(), "labels": labels})


def masked_mean(squared: Tensor, weights: Tensor) -> Tensor:
    """Squared error B x T x V x 3 weighted by V soft vertex weights: sum(e * w) / (B * T * sum(w) * 3)."""
    B, T = squared.shape[:2]
    return (squared * weights[:, None]).sum() / (B * T * weights.sum() * 3)


def check_batch(batch: dict[str, Tensor], model: MeshTalk, keys: tuple[str, ...]) -> None:
    """Check that ``batch`` has ``keys`` with shapes that fit ``model``.

    Raises:
        InputError: a missing key or a wrong shape (the message names the key, the expected and actual shape).
    """
    config = model.config
    B, T = batch["vertices"].shape[:2] if "vertices" in batch else (None, None)
    V = config.n_vertices
    expected = {
        "mel": (B, T, config.n_mels, 101),
        "vertices": (B, T, V, 3),
        "template": (B, V, 3),
        "mouth": (V,),
        "upper_face": (V,),
        "eyelid": (V,),
        "audio_code": (B, T, config.audio_dim),
        "expression_vertices": (B, T, V, 3),
    }
    for key in (*keys, *(k for k in ("audio_code", "expression_vertices") if k in batch)):
        if key not in batch:
            raise InputError(f"batch.{key}", "missing", expected=f"shape {expected[key]}", actual="no key")
        shape = tuple(batch[key].shape)
        if len(shape) != len(expected[key]) or any(e is not None and e != s for e, s in zip(expected[key], shape,
                                                                                           strict=True)):
            raise InputError(f"batch.{key}", "wrong shape", expected=expected[key], actual=shape)
