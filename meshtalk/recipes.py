"""The mechanics of the training recipe's departures from the reference (``meshtalk.train.Recipe``).

The reference recipe collapses on small corpora: the categorical code carries nothing and the decoder outputs the
average face (docs/training.md, "Recipe"). Three departures that act outside the model are here:

- audio pre-training (``pretrain_audio``): the audio encoder alone regresses the mouth's motion, the first K
  principal components of the mouth region's displacement from the template (standardised), through a linear head
  that is dropped afterwards. It gives the audio code the mouth before the categorical code is learned.
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


def pretrain_audio(model: MeshTalk, store: Store, entries: list[SequenceEntry], mouth: np.ndarray, *, steps: int,
                   lr: float, components: int, frames: int, batch_size: int, seed: int, device: torch.device,
                   log: Callable[..., None], log_every: int = 25) -> dict[str, float]:
    """Train the audio encoder alone to regress the mouth's principal components from each frame's audio code.

    A linear head (audio_dim -> K) reads the code and is dropped afterwards; Adam at ``lr`` on the encoder and the
    head; windows of ``frames`` frames, ``batch_size`` per step, drawn with their own seed. ``log(step, values)``
    is called every ``log_every`` steps with the loss and the correlation of the first component.

    Returns: the final loss, the correlation of the first component and the seconds taken (PCA included).
    """
    start = time.perf_counter()
    pca = region_components(store, entries, mouth, components)
    pca = Components(*(t.to(device) for t in (pca.vertices, pca.basis, pca.mean, pca.std)), pca.explained)
    encoder = model.encoder.audio
    encoder.train()
    dataset = WindowDataset(store, entries, frames=frames, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=WindowSampler(),
                                         collate_fn=keep_batch, num_workers=0)
    loss, r = torch.zeros(()), float("nan")
    # Its own random stream (the head's initialisation, dropout): the run's is left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        head = nn.Linear(model.config.audio_dim, components).to(device)
        optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
        for step, batch in enumerate(loader, 1):
            mel, vertices, template = (batch[k].to(device) for k in ("mel", "vertices", "template"))
            target = pca.coefficients(vertices, template)
            prediction = head(encoder(mel))
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


class FusionCapture:
    """Keeps the fusion MLP's last output (with its graph) for loss terms on the log-probs (a forward hook)."""

    def __init__(self, model: MeshTalk):
        self.output: Tensor | None = None
        self._handle = model.encoder.fusion.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.output = output

    def close(self) -> None:
        self._handle.remove()


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
