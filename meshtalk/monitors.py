"""Collapse monitors: does the categorical code carry information, and does the decoder use it?

MeshTalk's stage 1 can collapse in two ways (``../shared/spec/measured-here.md``, training sections), and a falling
loss hides both:
- stuck: every frame gets the same class per head (argmax-label perplexity and mean max probability near 1);
- noise: the log-probabilities are nearly uniform, so the Gumbel noise picks the class (flip rate between the
  sampled and the argmax label near 1 - 1/C).
In both the information the code carries about its input (entropy of the batch-average distribution minus the
average entropy) is near 0, the decoder outputs the average face (recon near the mean-face recon) and shuffling
the codes across the batch changes nothing. Stage 2 inherits a collapsed code: its cross-entropy falls to the
entropy of the labels' histogram while it predicts a constant.

A code can also carry the mouth alone: informative, read by the decoder, and blind to the upper face, which the
audio cannot explain (brows, blinks). Two monitors watch the expression path: the change of the upper face when
the expression codes are swapped across the batch (near 0: the decoder ignores the expression), and the upper-face
crossing term (own expression, another sequence's audio) against the mean face's error there, whose fall the
trainer follows over the run (``upper_stalled``).

Everything here runs under ``torch.no_grad`` with the model in eval mode and draws its noise from the generator it
is given, so a monitor never changes the training run's random streams (resumed runs stay exact).
Shapes: B batch, T frames, V vertices, H heads, C classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.model import MeshTalk, quantize


def label_perplexity(labels: Tensor, classes: int) -> Tensor:
    """Per-head perplexity (exp of the entropy) of the label histogram over batch and time. B x T x H -> H.

    1 means every frame has the same label; the maximum is min(C, B * T).
    """
    H = labels.shape[-1]
    flat = labels.reshape(-1, H)  # (B*T, H)
    counts = F.one_hot(flat, classes).sum(dim=0).double()  # (H, C)
    p = counts / counts.sum(dim=-1, keepdim=True)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1))


def code_statistics(logprobs: Tensor, *, uniform: Tensor | None = None, noise_scale: float = 1.0
                    ) -> dict[str, float]:
    """Usage and information of a categorical code. logprobs B x T x H x C (log-softmax over C).

    Returns (nats where entropies are involved):
        perplexity, perplexity_min: per-head perplexity of the argmax labels, mean and min over heads;
        max_prob: mean over frames and heads of the largest class probability;
        flip_rate: share of (frame, head) whose Gumbel-sampled label (noise ``uniform``, scaled by
            ``noise_scale``) differs from the argmax label; only with ``uniform``;
        information: per head, entropy of the batch-average distribution minus the average entropy (the mutual
            information between the frame and its code), averaged over heads;
        information_max: log C, its upper bound.
    """
    logprobs = logprobs.float()
    C = logprobs.shape[-1]
    p = logprobs.exp()  # (B, T, H, C)
    labels = logprobs.argmax(dim=-1)  # (B, T, H)
    perplexity = label_perplexity(labels, C)
    entropy = -(p * logprobs).sum(dim=-1)  # (B, T, H)
    average = p.reshape(-1, *p.shape[2:]).mean(dim=0)  # (H, C)
    average_entropy = -(average * torch.log(average.clamp_min(1e-30))).sum(dim=-1)  # (H,)
    stats = {
        "perplexity": float(perplexity.mean()),
        "perplexity_min": float(perplexity.min()),
        "max_prob": float(p.max(dim=-1).values.mean()),
        "information": float((average_entropy - entropy.reshape(-1, entropy.shape[-1]).mean(dim=0)).mean()),
        "information_max": math.log(C),
    }
    if uniform is not None:
        sampled = quantize(logprobs, uniform, noise_scale=noise_scale).labels
        stats["flip_rate"] = float((sampled != labels).float().mean())
    return stats


def _mse(a: Tensor, b: Tensor) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def _masked_mse(a: Tensor, b: Tensor, weights: Tensor) -> float:
    """Squared difference B x T x V x 3 weighted by V soft vertex weights (as the objective's masked mean)."""
    squared = (a.float() - b.float()).square()
    B, T = squared.shape[:2]
    return float((squared * weights[:, None]).sum() / (B * T * weights.sum() * 3))


@torch.no_grad()
def stage1_monitors(model: MeshTalk, batch: dict[str, Tensor], *, mean_faces: Tensor, generator: torch.Generator,
                    upper_face: Tensor | None = None) -> dict[str, float]:
    """Code usage and decoder sensitivity on one training batch.

    Args:
        model: the model (put in eval mode for the measurement and restored).
        batch: ``vertices`` B x T x V x 3 mm, ``mel`` B x T x 80 x 101, ``template`` B x V x 3, ``identity`` B.
        mean_faces: n_identities x V x 3 mm, each identity's average training face (the mean-face baseline).
        generator: source of the Gumbel noise for the sampled labels.
        upper_face: V soft weights of the upper face; with them the expression-path monitors are measured.

    Returns ``code_statistics`` plus (squared errors in mm^2, as the recon loss):
        recon_argmax, recon_sampled: recon of the argmax and of a Gumbel-sampled code;
        recon_mean_face: recon of each identity's average face (what a decoder ignoring its code converges to);
        recon_ratio: recon_sampled / recon_mean_face (near 1 or above: the output is the average face);
        shuffle_change: mean squared change of the output when the codes are rolled by one across the batch;
        shuffle_ratio: shuffle_change / recon_mean_face (near 0: the decoder ignores the code).
    With ``upper_face`` (squared errors weighted by it, mm^2, as the objective's crossing terms):
        upper_mean_face: the upper face's error of each identity's average face;
        expression_change, expression_ratio: the upper face's mean squared change when the expression codes are
            rolled by one across the batch (each sequence keeps its audio), and that / upper_mean_face (near 0:
            the decoder ignores the expression);
        upper_crossing, upper_ratio: the upper-face crossing term with argmax codes (own expression, the audio
            rolled by one), and that / upper_mean_face (near 1: the expression does not explain the upper face).
    """
    was_training = model.training
    model.eval()
    try:
        vertices, template = batch["vertices"], batch["template"]
        codes = model.encoder(batch["mel"], vertices)
        uniform = torch.rand(codes.logprobs.shape, generator=generator, device=generator.device).to(vertices.device)
        stats = code_statistics(codes.logprobs, uniform=uniform, noise_scale=model.config.gumbel_noise_scale)
        argmax = quantize(codes.logprobs).one_hot
        sampled = quantize(codes.logprobs, uniform, noise_scale=model.config.gumbel_noise_scale).one_hot
        out_argmax = model.decoder(template, argmax)  # (B, T, V, 3)
        out_shuffled = model.decoder(template, argmax.roll(1, dims=0))
        mean_face = mean_faces[batch["identity"]][:, None]  # (B, 1, V, 3)
        recon_mean_face = _mse(vertices, mean_face.expand_as(vertices))
        stats |= {
            "recon_argmax": _mse(out_argmax, vertices),
            "recon_sampled": _mse(model.decoder(template, sampled), vertices),
            "recon_mean_face": recon_mean_face,
            "shuffle_change": _mse(out_argmax, out_shuffled),
        }
        stats["recon_ratio"] = stats["recon_sampled"] / max(recon_mean_face, 1e-12)
        stats["shuffle_ratio"] = stats["shuffle_change"] / max(recon_mean_face, 1e-12)
        if upper_face is not None:
            fusion = model.encoder.fusion
            swapped = model.decoder(template, quantize(fusion(codes.expression.roll(1, dims=0), codes.audio)).one_hot)
            crossed = model.decoder(template, quantize(fusion(codes.expression, codes.audio.roll(1, dims=0))).one_hot)
            upper_mean_face = _masked_mse(vertices, mean_face.expand_as(vertices), upper_face)
            stats |= {
                "upper_mean_face": upper_mean_face,
                "expression_change": _masked_mse(out_argmax, swapped, upper_face),
                "upper_crossing": _masked_mse(crossed, vertices, upper_face),
            }
            stats["expression_ratio"] = stats["expression_change"] / max(upper_mean_face, 1e-12)
            stats["upper_ratio"] = stats["upper_crossing"] / max(upper_mean_face, 1e-12)
        return stats
    finally:
        model.train(was_training)


@torch.no_grad()
def stage2_monitors(model: MeshTalk, batch: dict[str, Tensor], *, generator: torch.Generator) -> dict[str, float]:
    """The context model against the frozen encoder's labels on one training batch.

    Returns ``code_statistics`` of the context model's predictions plus:
        target_perplexity: per-head perplexity of the encoder's argmax labels (near 1: stage 1 collapsed, so
            stage 2 has nothing to learn);
        accuracy: share of (frame, head) whose predicted argmax equals the target;
        cross_entropy: NLL of the targets (nats);
        marginal_entropy: mean over heads of the entropy of the targets' histogram, the cross-entropy of a model
            that predicts the batch's label frequencies and ignores audio and history;
        audio_change: mean KL (nats) between the predictions with each sequence's own audio code and with the
            codes rolled by one across the batch (near 0: the context model ignores the audio).
    """
    was_training = model.training
    model.eval()
    try:
        codes = model.encoder(batch["mel"], batch["vertices"])
        target = quantize(codes.logprobs)
        logprobs = model.context(target.one_hot, codes.audio)  # (B, T, H, C)
        uniform = torch.rand(logprobs.shape, generator=generator, device=generator.device).to(logprobs.device)
        stats = code_statistics(logprobs, uniform=uniform)
        C = logprobs.shape[-1]
        target_perplexity = label_perplexity(target.labels, C)
        counts = F.one_hot(target.labels.reshape(-1, target.labels.shape[-1]), C).sum(dim=0).double()  # (H, C)
        freq = counts / counts.sum(dim=-1, keepdim=True)
        rolled = model.context(target.one_hot, codes.audio.roll(1, dims=0))
        stats |= {
            "target_perplexity": float(target_perplexity.mean()),
            "accuracy": float((logprobs.argmax(dim=-1) == target.labels).float().mean()),
            "cross_entropy": float(-logprobs.gather(-1, target.labels[..., None]).mean()),
            "marginal_entropy": float((-(freq * torch.log(freq.clamp_min(1e-30))).sum(dim=-1)).mean()),
            "audio_change": float((logprobs.exp() * (logprobs - rolled)).sum(dim=-1).mean()),
        }
        return stats
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class CollapseThresholds:
    """When the monitors count as collapse. Fractions are of the quantity's range (see ``collapse_warnings``).

    ``grace_steps``: a freshly initialised model looks collapsed (nearly uniform codes the decoder has not learned
    to use yet), so the trainer warns only from this step on; the monitors are logged from step 1.
    """

    grace_steps: int = 100

    stuck_perplexity: float = 1.5  # argmax labels use about one class per head
    stuck_max_prob: float = 0.98
    noise_flip_fraction: float = 0.8  # flip rate above this fraction of 1 - 1/C: the noise picks the class
    information_fraction: float = 0.02  # information below this fraction of log C
    mean_face_ratio: float = 0.95  # stage-1 recon at or above this fraction of the mean-face recon
    shuffle_ratio: float = 0.01  # shuffling codes changes the output by less than this fraction
    expression_ratio: float = 0.01  # swapping expression codes changes the upper face by less than this fraction
    # The upper-face crossing ratio has stalled: the mean of the last ``trend_window`` monitor steps is not
    # ``trend_min_drop`` below the mean of the ``trend_window`` before, while the upper face is still mostly
    # unexplained (ratio above ``stalled_upper_ratio``).
    trend_window: int = 4
    trend_min_drop: float = 0.05
    stalled_upper_ratio: float = 0.5
    marginal_fraction: float = 0.98  # stage-2 cross-entropy within this fraction of the marginal entropy


def collapse_warnings(stats: dict[str, Any], *, stage: int, classes: int,
                      thresholds: CollapseThresholds = CollapseThresholds(),
                      history: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Plain-language warnings for the monitors of one step, by kind; empty when nothing looks collapsed.

    Kinds: ``stuck`` (one code per head), ``noise`` (the Gumbel noise picks the code), ``no_information`` (the
    code says nothing about its input, neither stuck nor noise), ``mean_face`` and ``ignored`` (stage 1: the
    decoder outputs the average face, or does not react to the code), ``expression_ignored`` and
    ``upper_stalled`` (stage 1: the upper face does not follow the expression code, or the upper-face crossing
    ratio stopped falling while high; the latter reads ``history``, the earlier monitor steps' stats in order),
    ``targets_stuck`` and ``histogram_only`` (stage 2: stage 1's labels are constant, or the context model
    predicts only label frequencies).
    """
    t = thresholds
    warnings = {}
    information_low = stats["information"] < t.information_fraction * stats["information_max"]
    if stats["perplexity"] < t.stuck_perplexity and stats["max_prob"] > t.stuck_max_prob:
        warnings["stuck"] = (f"stuck on one code: argmax perplexity {stats['perplexity']:.2f} per head, "
                             f"max probability {stats['max_prob']:.3f}")
    flip = stats.get("flip_rate")
    if flip is not None and flip > t.noise_flip_fraction * (1 - 1 / classes) and information_low:
        warnings["noise"] = (f"codes are noise: sampled label differs from argmax in {flip:.0%} of frames "
                             f"(random: {1 - 1 / classes:.0%}), information {stats['information']:.3f} nats")
    elif information_low and not warnings:
        warnings["no_information"] = (f"the code carries almost no information: {stats['information']:.3f} of at "
                                      f"most {stats['information_max']:.2f} nats")
    if stage == 1:
        if stats["recon_ratio"] >= t.mean_face_ratio:
            warnings["mean_face"] = (f"the output is the average face: recon {stats['recon_sampled']:.4g} vs "
                                     f"mean-face recon {stats['recon_mean_face']:.4g} mm^2")
        if stats["shuffle_ratio"] < t.shuffle_ratio:
            warnings["ignored"] = (f"the decoder ignores the code: shuffling codes across the batch changes the "
                                   f"output by {stats['shuffle_ratio']:.2%} of the motion")
        if "expression_ratio" in stats and stats["expression_ratio"] < t.expression_ratio:
            warnings["expression_ignored"] = (
                f"the upper face ignores the expression: swapping expression codes across the batch changes it by "
                f"{stats['expression_ratio']:.2%} of the mean face's error there")
        stalled = upper_trend(history or [], stats, t)
        if stalled is not None:
            warnings["upper_stalled"] = stalled
    else:
        if stats["target_perplexity"] < t.stuck_perplexity:
            warnings["targets_stuck"] = (f"the stage-1 encoder's labels are stuck on one code (perplexity "
                                         f"{stats['target_perplexity']:.2f}): stage 2 has nothing to learn")
        if stats["cross_entropy"] >= t.marginal_fraction * stats["marginal_entropy"]:
            warnings["histogram_only"] = (f"the context model only learns label frequencies: cross-entropy "
                                          f"{stats['cross_entropy']:.3f} vs {stats['marginal_entropy']:.3f} nats "
                                          "for the histogram")
    return warnings


def upper_trend(history: list[dict[str, Any]], stats: dict[str, Any], t: CollapseThresholds) -> str | None:
    """The ``upper_stalled`` warning, or None: over the last two windows of ``t.trend_window`` monitor steps
    (``history`` then ``stats``), the mean upper-face crossing ratio fell by less than ``t.trend_min_drop`` and is
    still above ``t.stalled_upper_ratio``."""
    ratios = [s["upper_ratio"] for s in [*history, stats] if "upper_ratio" in s]
    n = t.trend_window
    if len(ratios) < 2 * n:
        return None
    earlier, recent = sum(ratios[-2 * n : -n]) / n, sum(ratios[-n:]) / n
    if recent <= t.stalled_upper_ratio or recent < (1 - t.trend_min_drop) * earlier:
        return None
    return (f"the upper-face crossing term stopped falling: {recent:.2f} of the mean face's error over the last "
            f"{n} monitor steps, {earlier:.2f} over the {n} before (expected a fall of at least "
            f"{t.trend_min_drop:.0%} while above {t.stalled_upper_ratio:.2f})")


def summarise(stats: dict[str, Any], *, stage: int, warnings: dict[str, str] | None = None) -> str:
    """A short progress-bar summary: perplexity, flip rate, information, the stage's decisive ratio, and the kinds
    of collapse seen."""
    parts = [f"ppl {stats['perplexity']:.1f}", f"flip {stats.get('flip_rate', float('nan')):.2f}",
             f"info {stats['information']:.2f}"]
    if stage == 1:
        parts += [f"rec/mean {stats['recon_ratio']:.2f}", f"shuf {stats['shuffle_ratio']:.3f}"]
        if "expression_ratio" in stats:
            parts += [f"expr {stats['expression_ratio']:.3f}", f"upper {stats['upper_ratio']:.2f}"]
    else:
        parts += [f"tgt ppl {stats['target_perplexity']:.1f}", f"ce/hist {stats['cross_entropy']:.2f}/"
                  f"{stats['marginal_entropy']:.2f}"]
    if warnings:
        parts.append("COLLAPSE? " + ",".join(warnings))
    return " ".join(parts)
