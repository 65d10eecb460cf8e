"""The set-up of a run: which sentences train and validate, the store's region masks, the model (new, or from
``init_from``), the identities' mean faces, the stage's objective and the training loader.

Each piece is a function of the config and the store, built once before the first step (``meshtalk.train.loop``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from facedata.errors import InputError, StoreError
from facedata.store import Store
from meshtalk import objectives
from meshtalk.checkpoint import load_checkpoint, load_state
from meshtalk.config import MeshTalkConfig
from meshtalk.data import SequenceEntry, VertexStatistics, WindowSampler, keep_batch, select_sequences
from meshtalk.distributed import World
from meshtalk.model import MeshTalk
from meshtalk.objectives import BatchShard, ForwardResult
from meshtalk.train.config import TrainConfig


def select_entries(config: TrainConfig, store: Store, warn: Callable[[str], None]
                   ) -> tuple[list[SequenceEntry], list[SequenceEntry]]:
    """(training, validation) sentences of the configured split; all sentences and none when there is no split."""
    split = config.split
    if split is not None and not (store.root / "manifests" / "splits.parquet").exists():
        warn(f"{store.root} has no splits (run `facedata split --store {store.root}`): training on every sentence "
             "with audio, without validation")
        split = None
    min_frames = config.frames
    if split is None:
        return select_sequences(store, min_frames=min_frames), []
    train = select_sequences(store, split=split, subset=config.train_subset, min_frames=min_frames)
    try:
        val = select_sequences(store, split=split, subset=config.val_subset, min_frames=min_frames)
    except StoreError as e:
        warn(f"no validation: {e}")
        val = []
    return train, val


def read_masks(store: Store, n_vertices: int) -> dict[str, np.ndarray]:
    """The store's region masks (V,), checked against the model's vertex count.

    Raises:
        StoreError: no masks, a mask the objective needs is missing, or masks of another vertex count.
    """
    masks = store.masks()
    for name in ("mouth", "upper_face", "eyelid"):
        if name not in masks:
            raise StoreError(f"{store.root}: no {name!r} mask (expected mouth, upper_face and eyelid from "
                             f"`facedata build-masks`; found {sorted(masks)})")
    for name, mask in masks.items():
        if mask.shape != (n_vertices,):
            raise StoreError(f"{store.root}: mask {name!r} has shape {mask.shape} (expected ({n_vertices},))")
    return masks


def build_model(config: TrainConfig, statistics: VertexStatistics, n_vertices: int) -> tuple[MeshTalk, str]:
    """A new model (seeded, with the store's normalisation) or the ``init_from`` checkpoint's. -> (model, origin).

    A checkpoint keeps its own normalisation buffers (they are part of what its weights learned).

    Raises:
        InputError: a bad checkpoint, preset or override, or a vertex count that differs from the store's.
    """
    if config.init_from is not None:
        checkpoint = load_checkpoint(config.init_from)
        model = checkpoint.model
        if config.model:
            state = model.state_dict()
            model = MeshTalk(model.config.replace(**config.model))
            load_state(model, state, path=config.init_from)
        origin = f"init from {config.init_from}"
    else:
        torch.manual_seed(config.seed)
        model = MeshTalk(MeshTalkConfig.preset(config.model_preset, n_vertices=n_vertices, **config.model))
        model.set_vertex_statistics(torch.from_numpy(statistics.mean), torch.from_numpy(statistics.std))
        origin = f"preset {config.model_preset}, normalisation {statistics.source}"
    if model.config.n_vertices != n_vertices:
        raise InputError(config.init_from or "config.model", "the model's vertex count differs from the store's",
                         expected=n_vertices, actual=model.config.n_vertices)
    return model, origin


def mean_face_table(store: Store, statistics: VertexStatistics, identities: list[str]) -> Tensor:
    """n_identities x V x 3 mm: each identity's average training face; an identity without training frames gets
    its template moved by the average training displacement (for the mean-face monitor)."""
    offsets = [statistics.identity_means[i] - store.template(i) for i in statistics.identity_means]
    offset = np.mean(offsets, axis=0)
    faces = [statistics.identity_means.get(i, store.template(i) + offset) for i in identities]
    return torch.from_numpy(np.stack(faces).astype(np.float32))


def make_objective(config: TrainConfig, model: MeshTalk, masks: dict[str, Tensor], *, shard: BatchShard | None = None,
                   upper_weight: float = 1.0) -> Callable[[dict[str, Tensor]], ForwardResult]:
    """The stage's forwarder (``meshtalk.objectives``): a batch (vertices B x T x V x 3 mm, mel B x T x 80 x 101,
    template B x V x 3) -> named scalar losses whose sum is minimised (all weights 1, as the reference, but the
    recipe's ``upper_weight`` on the upper-face crossing term) and named detached outputs. Stage 1 also gets the
    region masks (V,) the cross-modality loss weighs with, and under data parallelism this rank's ``shard`` of the
    batch (stage 2 has no term across the batch)."""
    if config.stage == 1:
        regions = {k: masks[k] for k in ("mouth", "upper_face", "eyelid")}
        return lambda batch: objectives.stage1_losses(model, batch | regions, shard=shard, upper_weight=upper_weight)
    return lambda batch: objectives.stage2_losses(model, batch)


def make_loader(dataset: torch.utils.data.Dataset, config: TrainConfig, device: torch.device, *,
                start: int | None = None, world: World | None = None) -> torch.utils.data.DataLoader:
    """Training windows in counter order from ``start`` (a WindowSampler; ``world``'s rank reads its share of each
    step), or a fixed list in order."""
    sampler, batch_size = None, config.batch_size
    if start is not None:
        world = world or World(device)
        sampler = WindowSampler(start, rank=world.rank, ranks=world.size, batch_size=config.batch_size)
        batch_size = world.local_batch(config.batch_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=config.workers,
        collate_fn=keep_batch, pin_memory=device.type == "cuda", persistent_workers=False,
        worker_init_fn=_ignore_stop_signals,
        # Its own generator: creating the iterator must not draw from the global RNG (resumed runs stay exact).
        generator=torch.Generator().manual_seed(config.seed),
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the training process, which saves a checkpoint and then stops them (a
    terminal's Ctrl-C or a container's stop signals the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
