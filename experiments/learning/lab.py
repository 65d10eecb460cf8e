"""The learning experiments: a compact stage-1/stage-2 loop with each departure from the reference recipe named.

Everything the model computes is `meshtalk.model` and `meshtalk.objectives` unchanged; this file adds only what a
recipe option needs around them:

- `audio_pretrain_steps`: regress the mouth motion (the first `audio_pretrain_components` principal components of
  the mouth region's displacement from the template, standardised) from the audio code through a linear head
  that is thrown away afterwards. Only the audio encoder learns.
- `freeze_audio`: after pre-training the audio encoder stays fixed in eval mode. Its codes are then a function of
  each frame's mel window alone, so they are computed once per sentence and cached (`audio_codes`), which takes
  the encoder out of every later step.
- `fusion_logit_init_scale`: the fusion MLP's last layer (weights and bias) multiplied by this at initialisation,
  so that the initial logits differ by more than the Gumbel noise and the sampled code depends on the input.
- `entropy_bonus`: minus this times the entropy of the batch-average class distribution of each head (mean over
  heads, nats) is added to the stage-1 objective, so that a head cannot put every frame in one class.
- `confidence_weight`: plus this times the mean entropy of each frame's class distribution. With
  `entropy_bonus` at the same weight the two make an information bonus: the mutual information between a frame
  and its code (batch-average entropy minus average entropy), which a batch of uniform distributions does not
  raise (the entropy bonus alone does).
- `decoder_weight_decay`, `decay_code_input`: Adam's L2 term on the decoder (the reference: 1e-3); with
  `decay_code_input=False` the decoder's code-fusion layer (the one that reads the one-hot) is left out.
- `expression_pretrain_steps`: the same for the expression encoder, on the upper face's principal components
  (`expression_pretrain_components`), so that the expression code carries the brows and lids before the
  categorical code is learned.
- `encoder_freeze_steps`: the expression encoder and fusion MLP get no update for the first N stage-1 steps.
- `context_mask`, `gumbel_noise_scale`, `heads`, `classes`: `MeshTalkConfig` fields.

Shapes: B batch, T frames, V vertices, H heads, C classes; geometry in mm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facedata.store import Store
from meshtalk.config import MeshTalkConfig
from meshtalk.data import (
    SequenceEntry,
    WindowDataset,
    WindowSampler,
    estimate_vertex_statistics,
    keep_batch,
    read_sequence,
    select_sequences,
)
from meshtalk.model import MeshTalk, quantize
from meshtalk.objectives import stage1_losses, stage2_losses


@dataclass
class Recipe:
    """A training recipe. The defaults are the reference's (`../shared/spec/meshtalk-reference.md`) except the
    model size (H, C) and the step counts, which a 60-minute CPU budget decides."""

    # model
    preset: str = "meshtalk"
    heads: int = 8
    classes: int = 32
    context_mask: str = "strict"
    gumbel_noise_scale: float = 1.0
    # data
    batch: int = 8
    frames1: int = 32
    frames2: int = 64
    # audio pre-training (departure; 0 = none)
    audio_pretrain_steps: int = 0
    audio_pretrain_lr: float = 1e-3
    audio_pretrain_components: int = 16
    audio_pretrain_frames: int = 8
    audio_pretrain_batch: int = 16
    audio_pretrain_pca_stride: int = 1  # PCA over every n-th training frame (the confirm run used all frames)
    freeze_audio: bool = False
    # expression pre-training (departure; 0 = none): regress the upper face's principal components
    expression_pretrain_steps: int = 0
    expression_pretrain_components: int = 8
    # stage 1
    steps1: int = 500
    lr1: float = 1e-4
    decoder_weight_decay: float = 1e-3
    decay_code_input: bool = True
    fusion_logit_init_scale: float = 1.0
    entropy_bonus: float = 0.0
    confidence_weight: float = 0.0
    encoder_freeze_steps: int = 0
    # stage 2
    steps2: int = 500
    lr2: float = 1e-4
    # budget guards (minutes; 0 = none): a stage stops at its step count or its time, whichever comes first
    max_minutes1: float = 0.0
    max_minutes2: float = 0.0
    # bookkeeping
    seed: int = 0
    monitor_every: int = 25
    eval_samples: int = 3

    def model_config(self, n_vertices: int) -> MeshTalkConfig:
        return MeshTalkConfig.preset(self.preset, heads=self.heads, classes=self.classes, n_vertices=n_vertices,
                                     context_mask=self.context_mask, gumbel_noise_scale=self.gumbel_noise_scale)

    @classmethod
    def parse(cls, base: dict[str, Any], overrides: list[str]) -> Recipe:
        """``base`` values, then ``key=value`` strings (typed by the field's default)."""
        values = dict(base)
        types = {f.name: type(f.default) for f in dataclasses.fields(cls)}
        for item in overrides:
            key, _, text = item.partition("=")
            if key not in types:
                raise SystemExit(f"unknown recipe option {key!r} (expected one of {sorted(types)})")
            kind = types[key]
            values[key] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        return cls(**values)


# Named recipes. `reference`: the reference's settings at the chosen size. `proposed`: the confirmed departures.
RECIPES: dict[str, dict[str, Any]] = {
    "reference": {},
    "reference-lr1e-3": {"lr1": 1e-3, "lr2": 1e-3},
    "proposed": {"audio_pretrain_steps": 250, "freeze_audio": True, "lr1": 1e-3, "lr2": 1e-3,
                 "decoder_weight_decay": 0.0, "entropy_bonus": 0.1, "confidence_weight": 0.1,
                 "context_mask": "first-strict", "steps1": 2000, "max_minutes1": 33.0, "steps2": 1000,
                 "max_minutes2": 15.0},
    "proposed-expr": {"audio_pretrain_steps": 250, "freeze_audio": True, "expression_pretrain_steps": 150,
                      "lr1": 1e-3, "lr2": 1e-3, "decoder_weight_decay": 0.0, "entropy_bonus": 0.1,
                      "confidence_weight": 0.1, "context_mask": "first-strict", "steps1": 2000,
                      "max_minutes1": 28.0, "steps2": 1000, "max_minutes2": 12.0},
    "candidate": {"audio_pretrain_steps": 250, "freeze_audio": True, "lr1": 1e-3, "lr2": 1e-3,
                  "decoder_weight_decay": 0.0, "entropy_bonus": 0.1, "confidence_weight": 0.1,
                  "context_mask": "first-strict"},
}


# --- data -----------------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    store: Store
    train: list[SequenceEntry]
    test: list[SequenceEntry]
    masks: dict[str, Tensor]  # name -> (V,) float32 soft weights
    mean: Tensor  # (V, 3) mm
    std: Tensor  # (V, 3) mm
    mean_faces: Tensor  # (n_identities, V, 3): each identity's average training face
    n_vertices: int


def load_corpus(store_path: str | Path, *, split: str = "sentence") -> Corpus:
    store = Store(store_path)
    train = select_sequences(store, split=split, subset="train")
    test = select_sequences(store, split=split, subset="test")
    stats = estimate_vertex_statistics(store, train)
    masks = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in store.masks().items()}
    identities = sorted(store.sequences()["identity"].unique().to_list())
    mean_faces = torch.stack([torch.from_numpy(stats.identity_means.get(i, stats.mean)) for i in identities])
    return Corpus(store=store, train=train, test=test, masks=masks, mean=torch.from_numpy(stats.mean),
                  std=torch.from_numpy(stats.std), mean_faces=mean_faces, n_vertices=stats.mean.shape[0])


def batches(corpus: Corpus, frames: int, batch: int, seed: int):
    """Endless random training windows (the project's loader, read in this process)."""
    dataset = WindowDataset(corpus.store, corpus.train, frames=frames, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=WindowSampler(), collate_fn=keep_batch,
                                         num_workers=0)
    yield from loader


# --- the audio path ------------------------------------------------------------------------------------------------


class FixedAudio(nn.Module):
    """Stands in for the audio encoder: returns given codes B x T x audio_dim whatever the mel."""

    def __init__(self, codes: Tensor):
        super().__init__()
        self.codes = codes

    def forward(self, mel: Tensor) -> Tensor:
        return self.codes


@contextlib.contextmanager
def audio_codes(model: MeshTalk, codes: Tensor | None):
    """Run the model with cached audio codes (None: the real encoder)."""
    if codes is None:
        yield
        return
    real = model.encoder.audio
    model.encoder.audio = FixedAudio(codes)
    try:
        yield
    finally:
        model.encoder.audio = real


class AudioCache:
    """Audio codes of every frame of every training sentence, from the (frozen, eval-mode) audio encoder."""

    def __init__(self, model: MeshTalk, corpus: Corpus, chunk: int = 128):
        encoder = model.encoder.audio
        was = encoder.training
        encoder.eval()
        self.codes: list[Tensor] = []
        with torch.no_grad():
            for entry in corpus.train:
                seq = read_sequence(corpus.store, entry)
                parts = [encoder(torch.from_numpy(seq.mel_windows(a, min(chunk, seq.n_frames - a)))[None])[0]
                         for a in range(0, seq.n_frames, chunk)]
                self.codes.append(torch.cat(parts))  # (T, audio_dim)
        encoder.train(was)

    def window(self, batch: dict[str, Tensor], frames: int) -> Tensor:
        """B x T x audio_dim codes of the batch's windows (``sequence`` indexes the training entries)."""
        return torch.stack([self.codes[int(s)][int(a) : int(a) + frames]
                            for s, a in zip(batch["sequence"], batch["start"], strict=True)])


def mouth_components(corpus: Corpus, k: int, region: str = "mouth", stride: int = 1
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Principal components of a region's displacement from the template over the training frames (every
    ``stride``-th frame).

    Returns (vertex indices (M,), components (k, 3M), coefficient mean (k,), coefficient std (k,)).
    """
    idx = torch.nonzero(corpus.masks[region] > 0.5).squeeze(1)
    rows = []
    for entry in corpus.train:
        seq = read_sequence(corpus.store, entry)
        frames = seq.vertices[::stride, idx.numpy()]
        rows.append((frames - seq.template[idx.numpy()]).reshape(frames.shape[0], -1))
    x = torch.from_numpy(np.concatenate(rows)).double()  # (N, 3M)
    centre = x.mean(0)
    _, s, vt = torch.linalg.svd(x - centre, full_matrices=False)
    comps = vt[:k]
    coef = (x - centre) @ comps.T
    explained = float((s[:k] ** 2).sum() / (s ** 2).sum())
    print(f"{region} PCA: {k} components explain {explained:.3f} of the motion")
    return idx, comps.float(), (centre @ comps.T).float(), coef.std(0).float()


def pretrain_audio(model: MeshTalk, corpus: Corpus, recipe: Recipe, log) -> dict[str, float]:
    """Regress mouth principal components from the audio code (a linear head, dropped afterwards)."""
    start = time.perf_counter()  # the principal components are part of the option's cost
    idx, comps, coef_mean, coef_std = mouth_components(corpus, recipe.audio_pretrain_components,
                                                       stride=recipe.audio_pretrain_pca_stride)
    pca_seconds = time.perf_counter() - start
    head = nn.Linear(model.config.audio_dim, comps.shape[0])
    encoder = model.encoder.audio
    encoder.train()
    params = list(encoder.parameters()) + list(head.parameters())
    optimiser = torch.optim.Adam(params, lr=recipe.audio_pretrain_lr)
    for step, batch in enumerate(batches(corpus, recipe.audio_pretrain_frames, recipe.audio_pretrain_batch,
                                         recipe.seed + 101), 1):
        B, T = batch["vertices"].shape[:2]
        disp = (batch["vertices"][:, :, idx] - batch["template"][:, None, idx]).reshape(B, T, -1)
        target = (disp @ comps.T - coef_mean) / coef_std  # (B, T, k)
        pred = head(encoder(batch["mel"]))
        loss = F.mse_loss(pred, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % recipe.monitor_every == 0 or step == recipe.audio_pretrain_steps:
            with torch.no_grad():
                r = torch.corrcoef(torch.stack([pred[..., 0].flatten(), target[..., 0].flatten()]))[0, 1]
            log({"stage": "audio", "step": step, "loss": float(loss.detach()), "r_pc1": float(r),
                 "seconds": time.perf_counter() - start})
        if step >= recipe.audio_pretrain_steps:
            break
    return {"seconds": time.perf_counter() - start, "pca_seconds": pca_seconds, "loss": float(loss.detach())}


def pretrain_expression(model: MeshTalk, corpus: Corpus, recipe: Recipe, log) -> dict[str, float]:
    """Regress the upper face's principal components from the expression code (a linear head, dropped
    afterwards). Only the expression encoder learns; windows of ``frames1`` frames (its LSTM sees time)."""
    start = time.perf_counter()
    idx, comps, coef_mean, coef_std = mouth_components(corpus, recipe.expression_pretrain_components,
                                                       region="upper_face", stride=4)
    pca_seconds = time.perf_counter() - start
    head = nn.Linear(model.config.expression_dim, comps.shape[0])
    encoder = model.encoder.expression
    encoder.train()
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=recipe.audio_pretrain_lr)
    for step, batch in enumerate(batches(corpus, recipe.frames1, recipe.batch, recipe.seed + 202), 1):
        B, T = batch["vertices"].shape[:2]
        disp = (batch["vertices"][:, :, idx] - batch["template"][:, None, idx]).reshape(B, T, -1)
        target = (disp @ comps.T - coef_mean) / coef_std  # (B, T, k)
        pred = head(encoder(batch["vertices"]))
        loss = F.mse_loss(pred, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % recipe.monitor_every == 0 or step == recipe.expression_pretrain_steps:
            with torch.no_grad():
                r = torch.corrcoef(torch.stack([pred[..., 0].flatten(), target[..., 0].flatten()]))[0, 1]
            log({"stage": "expression", "step": step, "loss": float(loss.detach()), "r_pc1": float(r),
                 "seconds": time.perf_counter() - start})
        if step >= recipe.expression_pretrain_steps:
            break
    return {"seconds": time.perf_counter() - start, "pca_seconds": pca_seconds, "loss": float(loss.detach())}


# --- monitors ------------------------------------------------------------------------------------------------------


def code_usage(logprobs: Tensor, uniform: Tensor, noise_scale: float) -> dict[str, float]:
    """Per-head perplexity of the argmax labels, max probability, flip rate and information (nats) of a code.

    logprobs B x T x H x C. Same definitions as the trainer's collapse monitors.
    """
    C = logprobs.shape[-1]
    p = logprobs.exp()
    labels = logprobs.argmax(-1).reshape(-1, logprobs.shape[2])  # (B*T, H)
    counts = F.one_hot(labels, C).sum(0).double()  # (H, C)
    q = counts / counts.sum(-1, keepdim=True)
    perplexity = torch.exp(-(q * q.clamp_min(1e-30).log()).sum(-1))  # (H,)
    average = p.reshape(-1, *p.shape[2:]).mean(0)  # (H, C)
    info = -(average * average.clamp_min(1e-30).log()).sum(-1) + (p * logprobs).sum(-1).reshape(-1, p.shape[2]).mean(0)
    sampled = quantize(logprobs, uniform, noise_scale=noise_scale).labels
    return {"perplexity": float(perplexity.mean()), "perplexity_min": float(perplexity.min()),
            "perplexity_heads": [round(float(v), 2) for v in perplexity],
            "max_prob": float(p.max(-1).values.mean()),
            "flip_rate": float((sampled != logprobs.argmax(-1)).float().mean()),
            "information": float(info.mean()), "information_heads": [round(float(v), 3) for v in info]}


@torch.no_grad()
def stage1_monitors(model: MeshTalk, batch: dict[str, Tensor], corpus: Corpus, generator: torch.Generator
                    ) -> dict[str, Any]:
    was = model.training
    model.eval()
    try:
        vertices, template = batch["vertices"], batch["template"]
        codes = model.encoder(batch["mel"], vertices)
        uniform = torch.rand(codes.logprobs.shape, generator=generator)
        stats = code_usage(codes.logprobs, uniform, model.config.gumbel_noise_scale)
        argmax = quantize(codes.logprobs).one_hot
        sampled = quantize(codes.logprobs, uniform, noise_scale=model.config.gumbel_noise_scale).one_hot
        out = model.decoder(template, argmax)
        mean_face = corpus.mean_faces[batch["identity"]][:, None].expand_as(vertices)
        mse = lambda a, b: float((a - b).square().mean())  # noqa: E731
        stats.update(recon_argmax=mse(out, vertices), recon_sampled=mse(model.decoder(template, sampled), vertices),
                     recon_mean_face=mse(mean_face, vertices),
                     shuffle_change=mse(out, model.decoder(template, argmax.roll(1, 0))))
        stats["recon_ratio"] = stats["recon_sampled"] / stats["recon_mean_face"]
        stats["shuffle_ratio"] = stats["shuffle_change"] / stats["recon_mean_face"]
        return stats
    finally:
        model.train(was)


@torch.no_grad()
def stage2_monitors(model: MeshTalk, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Any]:
    was = model.training
    model.eval()
    try:
        codes = model.encoder(batch["mel"], batch["vertices"])
        target = quantize(codes.logprobs)
        logprobs = model.context(target.one_hot, codes.audio)
        C = logprobs.shape[-1]
        nll = -logprobs.gather(-1, target.labels[..., None])[..., 0]  # (B, T, H)
        counts = F.one_hot(target.labels.reshape(-1, target.labels.shape[-1]), C).sum(0).double()
        freq = counts / counts.sum(-1, keepdim=True)
        marginal = -(freq * freq.clamp_min(1e-30).log()).sum(-1)  # (H,)
        rolled = model.context(target.one_hot, codes.audio.roll(1, 0))
        return {"cross_entropy": float(nll.mean()),
                "cross_entropy_heads": [round(float(v), 3) for v in nll.mean((0, 1))],
                "marginal_entropy": float(marginal.mean()),
                "marginal_heads": [round(float(v), 3) for v in marginal],
                "accuracy": float((logprobs.argmax(-1) == target.labels).float().mean()),
                "audio_change": float((logprobs.exp() * (logprobs - rolled)).sum(-1).mean())}
    finally:
        model.train(was)


# --- training ------------------------------------------------------------------------------------------------------


def build_model(recipe: Recipe, corpus: Corpus) -> MeshTalk:
    torch.manual_seed(recipe.seed)
    model = MeshTalk(recipe.model_config(corpus.n_vertices))
    model.set_vertex_statistics(corpus.mean, corpus.std)
    if recipe.fusion_logit_init_scale != 1.0:
        last = model.encoder.fusion.layers[-1]
        with torch.no_grad():
            last.weight.mul_(recipe.fusion_logit_init_scale)
            last.bias.mul_(recipe.fusion_logit_init_scale)
    return model


def stage1_optimiser(model: MeshTalk, recipe: Recipe) -> torch.optim.Optimizer:
    decoder = model.decoder
    code_input = {id(p) for p in decoder.code_fusion.parameters()}
    decayed = [p for p in decoder.parameters() if recipe.decay_code_input or id(p) not in code_input]
    undecayed = [p for p in decoder.parameters() if id(p) not in {id(q) for q in decayed}]
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": encoder, "weight_decay": 0.0},
              {"params": decayed, "weight_decay": recipe.decoder_weight_decay}]
    if undecayed:
        groups.append({"params": undecayed, "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=recipe.lr1)


def batch_entropy(logprobs: Tensor) -> Tensor:
    """Mean over heads of the entropy (nats) of the batch-average class distribution. B x T x H x C -> ()."""
    average = logprobs.exp().reshape(-1, *logprobs.shape[2:]).mean(0)  # (H, C)
    return -(average * average.clamp_min(1e-30).log()).sum(-1).mean()


def train_stage1(model: MeshTalk, corpus: Corpus, recipe: Recipe, cache: AudioCache | None, log) -> dict[str, Any]:
    if cache is not None:
        for p in model.encoder.audio.parameters():
            p.requires_grad_(False)
    optimiser = stage1_optimiser(model, recipe)
    masks = {k: corpus.masks[k] for k in ("mouth", "upper_face", "eyelid")}
    captured: dict[str, Tensor] = {}
    hook = model.encoder.fusion.register_forward_hook(lambda m, i, o: captured.__setitem__("logprobs", o))
    rng = random.Random(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed + 7)
    trainable = [p for p in (*model.encoder.expression.parameters(), *model.encoder.fusion.parameters())]
    model.train()
    if cache is not None:
        model.encoder.audio.eval()
    start, cpu = time.perf_counter(), time.process_time()
    step = 0
    for step, batch in enumerate(batches(corpus, recipe.frames1, recipe.batch, recipe.seed), 1):
        frozen = step <= recipe.encoder_freeze_steps
        for p in trainable:
            p.requires_grad_(not frozen)
        batch = {**batch, **masks}
        codes = cache.window(batch, recipe.frames1) if cache is not None else None
        with audio_codes(model, codes):
            result = stage1_losses(model, batch, rng=rng)
        loss = result.total
        logprobs = captured["logprobs"][: recipe.batch]  # decode 1's (own expression, own audio)
        entropy = batch_entropy(logprobs)
        frame_entropy = -(logprobs.exp() * logprobs).sum(-1).mean()
        if not frozen:
            loss = loss - recipe.entropy_bonus * entropy + recipe.confidence_weight * frame_entropy
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in model.encoder.fusion.parameters()
                                  if p.grad is not None))
        optimiser.step()
        elapsed = time.perf_counter() - start
        last = step >= recipe.steps1 or (recipe.max_minutes1 and elapsed > 60 * recipe.max_minutes1)
        if step % recipe.monitor_every == 0 or step == 1 or last:
            with audio_codes(model, codes):
                monitors = stage1_monitors(model, batch, corpus, generator)
            log({"stage": 1, "step": step, "seconds": elapsed,
                 **{k: float(v) for k, v in result.losses.items()},
                 "crossing_mouth": float(result.outputs["crossing_mouth"]),
                 "crossing_upper": float(result.outputs["crossing_upper"]), "batch_entropy": float(entropy),
                 "frame_entropy": float(frame_entropy),
                 "fusion_grad_norm": grad_norm,
                 "code_input_weight_norm": float(model.decoder.code_fusion.weight.norm()),
                 **monitors})
        if last:
            break
    hook.remove()
    return {"steps": step, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def train_stage2(model: MeshTalk, corpus: Corpus, recipe: Recipe, cache: AudioCache | None, log) -> dict[str, Any]:
    model.eval()  # the frozen encoder in eval mode, as the reference
    model.context.train()
    optimiser = torch.optim.Adam(model.context.parameters(), lr=recipe.lr2)
    generator = torch.Generator().manual_seed(recipe.seed + 8)
    start, cpu = time.perf_counter(), time.process_time()
    step = 0
    for step, batch in enumerate(batches(corpus, recipe.frames2, recipe.batch, recipe.seed + 1), 1):
        codes = cache.window(batch, recipe.frames2) if cache is not None else None
        with audio_codes(model, codes):
            result = stage2_losses(model, batch)
        optimiser.zero_grad(set_to_none=True)
        result.total.backward()
        optimiser.step()
        elapsed = time.perf_counter() - start
        last = step >= recipe.steps2 or (recipe.max_minutes2 and elapsed > 60 * recipe.max_minutes2)
        if step % recipe.monitor_every == 0 or step == 1 or last:
            with audio_codes(model, codes):
                monitors = stage2_monitors(model, batch, generator)
            log({"stage": 2, "step": step, "seconds": elapsed, "loss": float(result.total), **monitors})
        if last:
            break
    return {"steps": step, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


# --- one run ------------------------------------------------------------------------------------------------------


@dataclass
class RunLog:
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        keys = ("stage", "step", "seconds", "loss", "recon", "crossing_mouth", "crossing_upper", "recon_ratio",
                "perplexity", "flip_rate", "information", "shuffle_ratio", "cross_entropy", "marginal_entropy",
                "accuracy", "audio_change", "r_pc1")
        print(" ".join(f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
                       for k in keys if k in record), flush=True)


def train(recipe: Recipe, corpus: Corpus, out: Path, *, stage1_from: Path | None = None,
          audio_from: Path | None = None) -> tuple[MeshTalk, dict[str, Any]]:
    """Audio pre-training (optional), stage 1, stage 2; returns the model and the timings.

    With ``stage1_from`` (a run directory), the encoder and decoder are that run's and only stage 2 is trained
    (a fresh context model of this recipe's config), for ablations of stage 2 alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    log = RunLog(out / "log.jsonl")
    (out / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=1))
    model = build_model(recipe, corpus)
    timings: dict[str, Any] = {}
    if stage1_from is not None:
        name = "stage1.pt" if (stage1_from / "stage1.pt").exists() else "model.pt"
        saved = torch.load(stage1_from / name, weights_only=True)
        model.load_state_dict({k: v for k, v in saved["model"].items() if not k.startswith("context.")},
                              strict=False)
        timings["stage1_from"] = str(stage1_from)
        previous = saved.get("timings") or json.loads((stage1_from / "result.json").read_text())["timings"]
        for key in ("audio_pretrain", "audio_cache_seconds", "stage1"):
            if key in previous:
                timings[key] = previous[key]
        if recipe.audio_pretrain_steps and not recipe.freeze_audio:
            raise SystemExit("stage1_from needs freeze_audio or no audio pre-training")
    else:
        if audio_from is not None:  # a screen: reuse another run's pre-trained audio encoder
            saved = torch.load(audio_from / "stage1.pt", weights_only=True)
            model.load_state_dict({k: v for k, v in saved["model"].items() if k.startswith("encoder.audio.")},
                                  strict=False)
            timings["audio_from"] = str(audio_from)
        elif recipe.audio_pretrain_steps:
            timings["audio_pretrain"] = pretrain_audio(model, corpus, recipe, log)
        if recipe.expression_pretrain_steps:
            timings["expression_pretrain"] = pretrain_expression(model, corpus, recipe, log)
    cache = None
    if recipe.freeze_audio:
        t = time.perf_counter()
        cache = AudioCache(model, corpus)
        if stage1_from is None:
            timings["audio_cache_seconds"] = time.perf_counter() - t
    if stage1_from is None:
        timings["stage1"] = train_stage1(model, corpus, recipe, cache, log)
        torch.save({"recipe": dataclasses.asdict(recipe), "config": model.config.to_dict(),
                    "model": model.state_dict(), "timings": timings}, out / "stage1.pt")
    timings["stage2"] = train_stage2(model, corpus, recipe, cache, log)
    timings["total_seconds"] = (timings.get("audio_pretrain", {}).get("seconds", 0)
                                + timings.get("expression_pretrain", {}).get("seconds", 0) + timings.get(
        "audio_cache_seconds", 0) + timings["stage1"]["seconds"] + timings["stage2"]["seconds"])
    torch.save({"recipe": dataclasses.asdict(recipe), "config": model.config.to_dict(),
                "model": model.state_dict()}, out / "model.pt")
    return model, timings


def load_model(out: Path, corpus: Corpus) -> tuple[MeshTalk, Recipe]:
    saved = torch.load(out / "model.pt", weights_only=True)
    recipe = Recipe(**saved["recipe"])
    model = MeshTalk(MeshTalkConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["model"])
    return model, recipe


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    return value
