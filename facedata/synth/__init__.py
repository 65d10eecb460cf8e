"""Generated raw trees in the exact Multiface layout: talking faces with speech, blinks and brow raises.

``facedata synth OUT`` (``write_raw_tree``) writes, deterministically from a seed, identity folders
``m--<YYYYMMDD>--<HHMM>--<entity>--GHS`` with ``E001_Neutral_Eyes_Open``, ``SEN_*`` sentences (with 48 kHz 24-bit
mono audio) and ``EXP_ROM07_Facial_Expressions``; frames as ``.bin``, ``.obj`` and ``_transform.txt`` under a
session frame counter with step 3 and dropped frames. The face is a 7306-vertex head whose 6172 kept vertices
(``facedata/data/multiface_to_meshtalk_keep.txt``) form a closed face surface; the speech drives the mouth with a
lead of 50-100 ms, while blinks and brow raises come from a random stream independent of the audio. See
``docs/synth.md`` for the layout, the truth files and the fault catalogue.

Modules: ``names`` (identities, sequences, sentences), ``face`` (topology, shape, regions, landmarks), ``speech``
(phones, audio, articulation), ``motion`` (curves -> vertices, blinks, brows, pose), ``plan`` (identities,
sequences, frame numbers and drops from the seed), ``take`` (one sequence's curves, pose and audio), ``files`` (file
formats and paths), ``truth`` (an identity's ground truth), ``faults`` (the ``--faults`` catalogue) and ``tree``
(the writer, the door: ``write_raw_tree``).

Public API
----------
``write_raw_tree(out, *, identities=2, sentences=6, seconds=3.0, seed=0, faults=False, obj_coords="local",
obj_every=1, workers=1, overwrite=False) -> SynthSummary``
    Write a tree; ``SynthSummary.describe()`` is a one-line human summary.
``identity_truth(seed, identity) -> IdentityTruth``
    Ground truth of identity ``identity`` (0-based, in folder order) of any tree written with ``seed``: the neutral
    full mesh ``neutral_mm`` (7306, 3) float32, ``faces`` (F, 3), ``kept_faces`` (F_k, 3) in kept indexing,
    ``keep`` (6172,), boolean ``regions`` over the 6172 kept vertices (``mouth``, ``lips``, ``upper_face``,
    ``eyelid``, ``forehead``, ``neck``), their soft ``region_weights``, and ``landmarks`` (kept-vertex indices of
    ``nose_tip``, ``mouth_corner_left/right``, ``upper/lower_lip_centre``, ``eye_centre_left/right``).
``read_identity_truth(out, folder) -> dict[str, np.ndarray]``
    The same, as written to ``out/.synth/faces/<folder>.npz`` (keys ``region_<name>``, ``landmark_<name>``, ...).
``read_sequence_truth(out, folder, sequence) -> dict[str, np.ndarray]``
    The driving curves of a written sequence, one value per frame slot (dropped slots included, see ``present``):
    ``frame``, ``present``, ``time_s``, ``mouth_open_mm``, ``lip_width_mm``, ``lip_pucker_mm``, ``smile``,
    ``brow_raise_mm``, ``blink``, ``rotation`` (T, 3, 3), ``translation_mm`` (T, 3) and ``lead_ms``.
``read_manifest(out) -> dict`` and ``read_faults(out) -> list[dict]``
    ``.synth/synth.json`` (options, identities, sequences with their frames) and ``.synth/faults.json``
    (``{path, kind, description, identity, sequence}`` per fault, ``path`` relative to ``out``).
``sentence_take(*, seed=0, identity=0, sentence=0, seconds=3.0) -> Take``
    A sentence's audio and curves of any length, generated in memory exactly as the tree writer does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facedata.synth.face import LANDMARK_NAMES, N_EYE_PATCH, N_KEPT, N_VERTICES, REGION_NAMES, FaceShape
from facedata.synth.faults import FAULT_KINDS
from facedata.synth.files import SYNTH_DIR
from facedata.synth.motion import CURVE_NAMES
from facedata.synth.plan import plan_identity, plan_tree
from facedata.synth.take import Take, sentence_take
from facedata.synth.tree import SynthSummary, write_raw_tree
from facedata.synth.truth import IdentityTruth, identity_truth_from_plan

__all__ = [
    "CURVE_NAMES", "FAULT_KINDS", "LANDMARK_NAMES", "N_EYE_PATCH", "N_KEPT", "N_VERTICES", "REGION_NAMES",
    "FaceShape", "IdentityTruth", "SynthSummary", "Take", "identity_truth", "plan_tree", "read_faults",
    "read_identity_truth", "read_manifest", "read_sequence_truth", "sentence_take", "write_raw_tree",
]


def identity_truth(seed: int, identity: int) -> IdentityTruth:
    """Ground truth of identity ``identity`` of a tree generated with ``seed`` (computed, nothing is read)."""
    return identity_truth_from_plan(plan_identity(seed, identity))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_identity_truth(out: str | Path, folder: str) -> dict[str, np.ndarray]:
    """``out/.synth/faces/<folder>.npz`` as a dict of arrays."""
    return _read_npz(Path(out) / SYNTH_DIR / "faces" / f"{folder}.npz")


def read_sequence_truth(out: str | Path, folder: str, sequence: str) -> dict[str, np.ndarray]:
    """``out/.synth/curves/<folder>/<sequence>.npz`` as a dict of arrays (one value per frame slot)."""
    return _read_npz(Path(out) / SYNTH_DIR / "curves" / folder / f"{sequence}.npz")


def read_manifest(out: str | Path) -> dict:
    return json.loads((Path(out) / SYNTH_DIR / "synth.json").read_text())


def read_faults(out: str | Path) -> list[dict]:
    return json.loads((Path(out) / SYNTH_DIR / "faults.json").read_text())
