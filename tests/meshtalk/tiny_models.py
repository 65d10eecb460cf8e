"""Tiny configurations and batches for fast model tests (imported by the test modules beside it)."""

from __future__ import annotations

import pytest
import torch

from meshtalk.config import MeshTalkConfig

TINY = {"n_vertices": 12, "heads": 3, "classes": 4, "audio_dim": 8, "expression_dim": 8, "expression_hidden": 16,
        "fusion_hidden": 16, "decoder_hidden": (16, 12, 8), "context_channels_per_head": 4}


def tiny_config(**changes) -> MeshTalkConfig:
    """The released structure at toy sizes (the audio encoder keeps its 101-frame window)."""
    return MeshTalkConfig.from_dict({**TINY, **changes})


def tiny_batch(config: MeshTalkConfig, *, batch: int = 2, frames: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stage-1/2 batch of random values: mel B x T x n_mels x 101, geometry in mm, soft masks."""
    g = torch.Generator().manual_seed(seed)
    V = config.n_vertices
    template = 10 * torch.randn(batch, V, 3, generator=g)
    eyelid = (torch.arange(V) % 3 == 0).float()
    return {
        "mel": torch.randn(batch, frames, config.n_mels, 101, generator=g) - 5,
        "vertices": template[:, None] + torch.randn(batch, frames, V, 3, generator=g),
        "template": template,
        "mouth": torch.rand(V, generator=g),
        "upper_face": torch.rand(V, generator=g),
        "eyelid": eyelid,
    }


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot to them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
