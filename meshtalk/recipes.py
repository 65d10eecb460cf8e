"""The mechanics of the training recipe's departures from the reference (``meshtalk.train.Recipe``).

The reference recipe collapses on small corpora: the categorical code carries nothing and the decoder outputs the
average face (docs/training.md, "Recipe"). Three departures that act outside the model are here:

- audio pre-training (``pretrain_encoder(model, "audio", ...)``): the audio encoder alone regresses the mouth's
  motion, the first K principal components of the mouth region's displacement from the template (standardised),
  through a linear head that is dropped afterwards. It gives the audio code the mouth before the categorical code is
  learned. The expression pre-training does the same for the expression encoder and the upper face.
- a frozen audio encoder with cached codes (``AudioCodeCache``): in eval mode the audio code of a frame is a
  function of that frame's mel window alone, so each training sentence's codes are computed once and every step
  reads them (``batch["audio_code"]``, which the objectives take in place of the encoder's output).
- the information bonus (``information_terms``): minus the entropy of the batch-average class distribution of each
  head plus the mean entropy of each frame's distribution, each with its own weight. With equal weights it is
  minus the mutual information between a frame and its code, which a batch of uniform distributions does not
  lower (the batch entropy term alone does).

Shapes: B batch, T frames, V vertices, H heads, C classes, K components, M region vertices; geometry in mm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facedata.store import Store
from meshtalk.data import SequenceEntry, WindowDataset, WindowSampler, keep_batch, read_sequence
from meshtalk.evaluate import audio_codes
from meshtalk.model import MeshTalk
from meshtalk.objectives import BatchShard


@dataclass
class Components:
    """Principal components of a region's displacement from the template.

    ``vertices`` (M,) the region's vertex indices; ``basis`` (K, 3M); ``mean`` and ``std`` (K,) of the training
    frames' coefficients; ``explained`` the share of the displacement's variance the K components hold.
    """

    vertices: Tensor
    basis: Tensor
    mean: Tensor
    std: Tensor
    explained: float

    def coefficients(self, vertices: Tensor, template: Tensor) -> Tensor:
        """Standardised coefficients of frames B x T x V x 3 around templates B x V x 3 -> B x T x K."""
        B, T = vertices.shape[:2]
        displacement = (vertices[:, :, self.vertices] - template[:, None, self.vertices]).reshape(B, T, -1)
        return (displacement @ self.basis.T - self.mean) / self.std


def region_components(store: Store, entries: list[SequenceEntry], mask: np.ndarray, k: int, *,
                      max_frames: int = 20_000) -> Components:
    """The first ``k`` principal components of the displacement of the vertices where ``mask > 0.5``, over the
    frames of ``entries`` (every n-th frame when there are more than ``max_frames``). Memory: one 3M x 3M
    covariance, whatever the corpus size.
    """
    vertices = np.flatnonzero(mask > 0.5)
    total = sum(e.n_frames for e in entries)
    stride = max(1, -(-total // max_frames))
    n, first = 0, None
    moment1 = np.zeros(3 * len(vertices))
    moment2 = np.zeros((3 * len(vertices),) * 2)
    for entry in entries:
        seq = read_sequence(store, entry)
        x = (seq.vertices[::stride, vertices] - seq.template[vertices]).reshape(-1, 3 * len(vertices))
        x = x.astype(np.float64)
        if first is None:  # a shift keeps the second moment well conditioned
            first = x[0].copy()
        x -= first
        n += x.shape[0]
        moment1 += x.sum(0)
        moment2 += x.T @ x
    centre = moment1 / n
    covariance = moment2 / n - np.outer(centre, centre)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    basis = vectors[:, ::-1][:, :k].T  # (k, 3M)
    coefficient_mean = (centre + first) @ basis.T
    coefficient_std = np.sqrt(np.clip(values[::-1][:k], 1e-12, None))
    explained = float(values[::-1][:k].sum() / max(values.sum(), 1e-30))
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return Components(torch.from_numpy(vertices), as_tensor(basis), as_tensor(coefficient_mean),
                      as_tensor(coefficient_std), explained)


def region_motion_variance(store: Store, entries: list[SequenceEntry], masks: dict[str, np.ndarray], *,
                           max_frames: int = 4096) -> dict[str, float]:
    """Each region's motion variance, mm^2: the squared distance of a vertex from its sequence's mean position,
    averaged over frames and over the region's vertices weighted by the soft mask (V,). Every n-th frame of each
    sentence when there are more than ``max_frames`` in all; a sentence's mean is over all of its frames.
    """
    total = sum(e.n_frames for e in entries)
    stride = max(1, -(-total // max_frames))
    sums, frames = dict.fromkeys(masks, 0.0), 0
    for entry in entries:
        vertices = read_sequence(store, entry).vertices  # (T, V, 3)
        squared = ((vertices[::stride] - vertices.mean(axis=0)) ** 2).sum(axis=-1)  # (F, V)
        for name, mask in masks.items():
            sums[name] += float((squared @ mask).sum() / mask.sum())
        frames += squared.shape[0]
    return {name: value / frames for name, value in sums.items()}


def pretrain_encoder(model: MeshTalk, encoder: str, store: Store, entries: list[SequenceEntry], region: np.ndarray,
                     *, steps: int, lr: float, components: int, frames: int, batch_size: int, seed: int,
                     device: torch.device, log: Callable[..., None], log_every: int = 25,
                     standardise: bool = True, augment: Callable[[dict[str, Tensor]], Tensor] | None = None
                     ) -> dict[str, float]:
    """Train one encoder alone to regress a region's principal components from each frame's code.

    ``encoder`` is ``audio`` (the audio code from the mel windows; the mouth, for the audio pre-training) or
    ``expression`` (the expression code from the geometry; the upper face, for the expression pre-training). A
    linear head (code -> K) reads the code and is dropped afterwards; Adam at ``lr`` on the encoder and the head;
    windows of ``frames`` frames, ``batch_size`` per step, drawn with their own seed. ``log(step, values)`` is
    called every ``log_every`` steps with the loss and the correlation of the first component.

    ``standardise``: each component's coefficient has unit variance (every component counts alike); otherwise
    they keep their variance, divided by the first's (components count by the motion they hold, so components of
    tracking noise, which can only be memorised, hardly count). ``augment(batch)``: the encoder's input in place
    of the batch's (e.g. ``swap_lower_face``); the targets stay the batch's own.

    Returns: the final loss, the correlation of the first component and the seconds taken (PCA included).
    """
    start = time.perf_counter()
    pca = region_components(store, entries, region, components)
    pca = Components(*(t.to(device) for t in (pca.vertices, pca.basis, pca.mean, pca.std)), pca.explained)
    scale = torch.ones_like(pca.std) if standardise else pca.std / pca.std[0]  # (K,)
    module, key, width = {"audio": (model.encoder.audio, "mel", model.config.audio_dim),
                          "expression": (model.encoder.expression, "vertices", model.config.expression_dim)}[encoder]
    module.train()
    dataset = WindowDataset(store, entries, frames=frames, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=WindowSampler(),
                                         collate_fn=keep_batch, num_workers=0)
    loss, r = torch.zeros(()), float("nan")
    # Its own random stream (the head's initialisation, dropout): the run's is left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        head = nn.Linear(width, components).to(device)
        optimizer = torch.optim.Adam([*module.parameters(), *head.parameters()], lr=lr)
        for step, batch in enumerate(loader, 1):
            batch = {k: v.to(device) for k, v in batch.items()}
            vertices, template = batch["vertices"], batch["template"]
            inputs = augment(batch) if augment is not None else batch[key]
            target = pca.coefficients(vertices, template) * scale
            prediction = head(module(inputs))
            loss = F.mse_loss(prediction, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % log_every == 0 or step == steps:
                with torch.no_grad():
                    pair = torch.stack([prediction[..., 0].flatten(), target[..., 0].flatten()])
                    r = float(torch.corrcoef(pair)[0, 1])
                log(step, {"loss": float(loss.detach()), "r_first_component": r})
            if step >= steps:
                break
    return {"loss": float(loss.detach()), "r_first_component": r, "explained": pca.explained,
            "seconds": time.perf_counter() - start}


class AudioCodeCache:
    """The audio codes of every frame of some sentences, from the audio encoder in eval mode.

    ``batch(sequence, start, frames)`` indexes as ``WindowDataset`` does (``sequence`` into ``entries``), so a
    batch's ``sequence`` and ``start`` select its codes. Memory: audio_dim floats per frame (0.5 kB).
    """

    def __init__(self, model: MeshTalk, store: Store, entries: list[SequenceEntry], *, chunk: int = 128):
        encoder = model.encoder.audio
        was = encoder.training
        encoder.eval()
        self.codes = [audio_codes(model, read_sequence(store, entry), chunk_frames=chunk)[0]  # (n_frames, audio_dim)
                      for entry in entries]
        encoder.train(was)

    def batch(self, sequence: Tensor, start: Tensor, frames: int) -> Tensor:
        """B x T x audio_dim codes of windows (``sequence`` and ``start`` B)."""
        return torch.stack([self.codes[int(s)][int(a) : int(a) + frames]
                            for s, a in zip(sequence.tolist(), start.tolist(), strict=True)])


def swap_lower_face(vertices: Tensor, template: Tensor, upper_face: Tensor) -> Tensor:
    """Each window's geometry with the motion outside its upper face taken from the next window of the batch.

    ``vertices + w * ((x' - T') - (x - T))`` with w = 1 - ``upper_face`` (V soft weights) and x', T' the next
    window's frames and template (rolled by one): the own upper face on the own template, another sentence's mouth
    and jaw. Shapes: vertices B x T x V x 3 mm, template B x V x 3 mm -> B x T x V x 3 mm.
    """
    motion = vertices - template[:, None]  # (B, T, V, 3)
    weight = (1.0 - upper_face)[:, None]  # (V, 1)
    return vertices + weight * (motion.roll(1, dims=0) - motion)


class FusionCapture:
    """Keeps the fusion MLP's last output (with its graph) for loss terms on the log-probs (a forward hook)."""

    def __init__(self, model: MeshTalk):
        self.output: Tensor | None = None
        self._handle = model.encoder.fusion.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.output = output

    def close(self) -> None:
        self._handle.remove()


def separation_terms(logprobs: Tensor, expression_heads: int) -> dict[str, Tensor]:
    """How much the expression heads depend on the audio and the audio heads on the expression, nats, with
    gradients: the mean KL divergence between a frame's class distribution with its own inputs and with one of them
    crossed, over the last ``expression_heads`` heads (audio crossed) and over the others (expression crossed).

    Args:
        logprobs: the fusion MLP's 3B x T x H x C output in ``meshtalk.objectives.stage1_losses``' row order: own
            expression and audio, another sequence's expression with the own audio, the own expression with
            another sequence's audio.
        expression_heads: how many heads, counted from the last, the expression alone should decide (>= 1).
    """
    own, expression_crossed, audio_crossed = logprobs.chunk(3)  # (B, T, H, C) each
    H = logprobs.shape[2]
    audio = slice(0, H - expression_heads)
    expression = slice(H - expression_heads, H)

    def kl(p_log: Tensor, q_log: Tensor) -> Tensor:
        return (p_log.exp() * (p_log - q_log)).sum(-1).mean()

    terms = {"expression_heads_on_audio": kl(own[:, :, expression], audio_crossed[:, :, expression])}
    if H > expression_heads:
        terms["audio_heads_on_expression"] = kl(own[:, :, audio], expression_crossed[:, :, audio])
    return terms


def information_terms(logprobs: Tensor, shard: BatchShard) -> dict[str, Tensor]:
    """Entropies of a code, in nats, averaged over heads, with gradients.

    ``batch_entropy``: of the class distribution averaged over the whole batch (every rank's rows; ``shard``), the
    code's use of its classes; ``frame_entropy``: the mean entropy of each frame's own distribution. Their
    difference is the mutual information between a frame and its code.

    Args:
        logprobs: B x T x H x C of this process's rows.
        shard: this process's rows of the batch (``BatchShard.whole(B)`` in one process).
    """
    p = logprobs.exp()
    frame_entropy = -(p * logprobs).sum(-1).mean()
    average = shard.gather(p).flatten(0, 1).mean(0)  # (H, C)
    batch_entropy = -(average * average.clamp_min(1e-30).log()).sum(-1).mean()
    return {"batch_entropy": batch_entropy, "frame_entropy": frame_entropy}
