"""Generating one planned sequence before it is written: its driving curves, head pose and (for sentences) speech."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from facedata.synth import face, motion, names, speech
from facedata.synth.plan import (
    MESH_FPS,
    SAMPLES_PER_FRAME,
    STREAM_EXPRESSION,
    STREAM_POSE,
    STREAM_SPEECH,
    IdentityPlan,
    SequencePlan,
    name_key,
    plan_identity,
    stream_rng,
)


@dataclass(frozen=True)
class Take:
    """A generated sequence before it is written.

    Attributes:
        times_s: (T,) time of each frame slot from the first frame (dropped slots included).
        curves: name -> (T,) driving curves (``motion.CURVE_NAMES``).
        rotations: (T, 3, 3) and translations: (T, 3) mm, head pose (x_world = R @ x_local + t).
        audio: (T * 1600,) float64 at 48 kHz for sentences, else None.
        lead_ms: how much the mouth leads the audio (sentences).
    """

    times_s: np.ndarray
    curves: dict[str, np.ndarray]
    rotations: np.ndarray
    translations: np.ndarray
    audio: np.ndarray | None = None
    lead_ms: float = 0.0


def generate_take(seed: int, ident: IdentityPlan, seq: SequencePlan) -> Take:
    """The curves, head pose and audio of a planned sequence."""
    key = name_key(seq.name)
    times = np.arange(seq.n_slots) / MESH_FPS
    audio = None
    lead_ms = 0.0
    if seq.kind == "sentence":
        speech_rng = stream_rng(seed, ident.index, key, STREAM_SPEECH)
        words = names.sentence_words(names.SENTENCES[seq.sentence])
        phones = speech.plan_phones(words, seq.n_slots / MESH_FPS, speech_rng)
        audio = speech.synthesize(phones, seq.n_slots * SAMPLES_PER_FRAME, ident.speaker, speech_rng)
        lead_ms = ident.speaker.lead_ms
        # The mouth shows now what will be heard lead_ms later.
        curves = motion.speech_curves(speech.articulation(phones, times + lead_ms / 1000.0),
                                      ident.speaker.jaw_max_mm)
    elif seq.kind == "expression":
        curves = motion.expression_curves(times)
    else:
        curves = motion.zero_curves(seq.n_slots)
    if seq.kind != "neutral":
        motion.add_blinks_and_brows(curves, times, stream_rng(seed, ident.index, key, STREAM_EXPRESSION))
    rotations, translations = motion.head_pose(times, np.array(ident.base_translation_mm), ident.base_yaw_rad,
                                               stream_rng(seed, ident.index, key, STREAM_POSE))
    return Take(times_s=times, curves=curves, rotations=rotations, translations=translations, audio=audio,
                lead_ms=lead_ms)


def sentence_take(*, seed: int = 0, identity: int = 0, sentence: int = 0, seconds: float = 3.0) -> Take:
    """A sentence take of any length without writing anything (for tests and analysis)."""
    ident = plan_identity(seed, identity)
    seq = SequencePlan(identity=identity, name=names.SENTENCES[sentence], kind="sentence", first_frame=0,
                       n_slots=round(seconds * MESH_FPS), sentence=sentence)
    return generate_take(seed, ident, seq)


@functools.lru_cache(maxsize=4)
def motion_basis(shape: face.FaceShape) -> motion.MotionBasis:
    """The identity's vertex motion basis (built once per shape and process)."""
    return motion.build_basis(shape)
