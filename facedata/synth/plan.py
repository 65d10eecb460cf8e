"""Planning a raw tree: everything cheap and global, decided serially from the seed (identities with their folder,
shape, voice and base pose; sequences with their frame numbers and dropped frames), before any frame is made.

Every random quantity comes from its own stream derived from (seed, identity, purpose[, sequence name]), so a
sequence's bytes do not depend on the number of workers, the order of writing or the size of the tree.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import numpy as np

from facedata.errors import InputError
from facedata.synth import face, names, speech

MESH_FPS = 30
FRAME_STEP = 3  # consecutive frames differ by 3 in the session counter
SAMPLES_PER_FRAME = speech.AUDIO_RATE_HZ // MESH_FPS  # 1600
DROP_PROBABILITY = 0.01  # per frame; far above the corpus' 1 in 2,000 so that small trees have some

# Random streams, one per purpose, so that no quantity can leak into another (audio and brows in particular).
STREAM_SHAPE, STREAM_VOICE, STREAM_NAMES, STREAM_TIMELINE, STREAM_POSE_BASE = 1, 2, 3, 4, 5
STREAM_SPEECH, STREAM_EXPRESSION, STREAM_POSE, STREAM_NOISE = 11, 12, 13, 14


def stream_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of (seed, *keys): one per purpose, so that no quantity can leak into another."""
    return np.random.default_rng([seed, *keys])


def name_key(name: str) -> int:
    """A stable integer key of a sequence name for ``stream_rng``."""
    return zlib.crc32(name.encode())


@dataclass(frozen=True)
class IdentityPlan:
    """One identity folder: its name, shape, voice and base head pose."""

    index: int  # position in the tree; with the seed it determines everything about the identity
    folder: str
    entity: str
    shape: face.FaceShape
    speaker: speech.Speaker
    base_translation_mm: tuple[float, float, float]
    base_yaw_rad: float
    fault: str | None = None


@dataclass(frozen=True)
class SequencePlan:
    """One sequence: its frame slots (a slot every 3 counter steps) and which of them are dropped."""

    identity: int
    name: str
    kind: str  # "neutral", "sentence" or "expression"
    first_frame: int
    n_slots: int
    dropped_slots: tuple[int, ...] = ()
    sentence: int | None = None  # index into names.SENTENCES
    fault: str | None = None  # the fault this sequence hosts, if any

    @property
    def present_slots(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_slots), np.array(self.dropped_slots, dtype=np.int64))

    @property
    def frame_numbers(self) -> np.ndarray:
        """Session frame numbers of the frames on disk, (n_frames,) int64."""
        return self.first_frame + FRAME_STEP * self.present_slots

    @property
    def last_frame(self) -> int:
        return self.first_frame + FRAME_STEP * (self.n_slots - 1)

    @property
    def has_audio(self) -> bool:
        return self.kind == "sentence"


@dataclass(frozen=True)
class TreePlan:
    seed: int
    identities: tuple[IdentityPlan, ...]
    sequences: tuple[SequencePlan, ...]
    options: dict = field(default_factory=dict)

    def identity(self, index: int) -> IdentityPlan:
        return next(i for i in self.identities if i.index == index)



def plan_identity(seed: int, index: int, *, fault: str | None = None) -> IdentityPlan:
    """Identity ``index`` of any tree generated with ``seed`` (the number of identities does not matter)."""
    shape = face.FaceShape.draw(stream_rng(seed, index, STREAM_SHAPE))
    speaker = speech.Speaker.draw(stream_rng(seed, index, STREAM_VOICE))
    folder = names.identity_folder(index, stream_rng(seed, index, STREAM_NAMES))
    pose = stream_rng(seed, index, STREAM_POSE_BASE)
    translation = (float(pose.uniform(-25, 25)), float(pose.uniform(-40, 10)), float(pose.uniform(970, 1030)))
    return IdentityPlan(index=index, folder=folder, entity=names.ENTITY_IDS[index], shape=shape, speaker=speaker,
                        base_translation_mm=translation, base_yaw_rad=float(np.radians(pose.uniform(-6, 6))),
                        fault=fault)


def sentence_seconds(sentence: int, seconds: float, rng: np.random.Generator) -> float:
    """Length of a sentence take: ``seconds`` scaled by the sentence's natural length relative to the list's mean."""
    natural = [speech.natural_seconds(names.sentence_words(s)) for s in names.SENTENCES[:names.MAX_SENTENCES]]
    own = speech.natural_seconds(names.sentence_words(names.SENTENCES[sentence]))
    return max(1.0, seconds * own / float(np.mean(natural)) * rng.uniform(0.93, 1.07))


def _drops(n_slots: int, rng: np.random.Generator) -> tuple[int, ...]:
    """Dropped slots: gaps of 6 (one frame) or 18 (five frames), never the first or the last slots."""
    dropped: list[int] = []
    slot = 2
    while slot < n_slots - 7:
        if rng.random() < DROP_PROBABILITY:
            width = 1 if rng.random() < 0.8 else 5
            dropped.extend(range(slot, slot + width))
            slot += width + 2
        else:
            slot += 1
    return tuple(dropped)


def plan_tree(*, identities: int = 2, sentences: int = 6, seconds: float = 3.0, seed: int = 0,
              faults: bool = False) -> TreePlan:
    """Everything about a tree except the frames themselves.

    Raises:
        InputError: counts out of range (at most 13 identities, 12 with faults; at most 54 sentences).
    """
    max_identities = len(names.ENTITY_IDS) - (1 if faults else 0)
    if not 1 <= identities <= max_identities:
        raise InputError("identities", "number of identities", expected=f"1..{max_identities}", actual=identities)
    if not 1 <= sentences <= names.MAX_SENTENCES:
        raise InputError("sentences", "number of sentences", expected=f"1..{names.MAX_SENTENCES}", actual=sentences)
    if not seconds >= 0.5:
        raise InputError("seconds", "sentence length", expected=">= 0.5 s", actual=seconds)

    id_plans = [plan_identity(seed, i) for i in range(identities)]
    seqs: list[SequencePlan] = []
    for ident in id_plans:
        timeline = stream_rng(seed, ident.index, STREAM_TIMELINE)
        specs: list[tuple[str, str, int, int | None, str | None]] = []  # name, kind, slots, sentence, fault
        specs.append((names.NEUTRAL_SEQUENCE, "neutral", round(MESH_FPS * timeline.uniform(0.95, 1.2)), None,
                      None))
        if faults and ident.index == 0:
            specs += [(n, "expression", 12, None, "host") for n in names.FAULT_EXPRESSIONS]
        specs.append((names.EXPRESSION_SEQUENCE, "expression", round(MESH_FPS * max(2.0, 1.5 * seconds)), None,
                      None))
        for s in range(sentences):
            slots = round(MESH_FPS * sentence_seconds(s, seconds, timeline))
            specs.append((names.SENTENCES[s], "sentence", slots, s, None))
        if faults and ident.index == 0:
            for k, name in enumerate(names.FAULT_SENTENCES):
                specs.append((name, "sentence", round(MESH_FPS * 1.2), names.MAX_SENTENCES + k, "host"))
        frame = 102 + FRAME_STEP * int(timeline.integers(0, 4))  # E001 starts near 000102, as in the corpus
        for name, kind, slots, sentence, fault in specs:
            dropped = _drops(slots, timeline) if kind != "neutral" and fault is None else ()
            seqs.append(SequencePlan(identity=ident.index, name=name, kind=kind, first_frame=frame, n_slots=slots,
                                     dropped_slots=dropped, sentence=sentence, fault=fault))
            frame += FRAME_STEP * (slots - 1) + FRAME_STEP * int(timeline.integers(150, 900))

    # Promise at least one dropped frame in a sentence of every tree, whatever the dice said.
    regular_sentences = [i for i, s in enumerate(seqs) if s.kind == "sentence" and s.fault is None]
    if not any(seqs[i].dropped_slots for i in regular_sentences):
        first = seqs[regular_sentences[0]]
        seqs[regular_sentences[0]] = dataclasses.replace(first, dropped_slots=(first.n_slots // 2,))

    if faults:
        # An extra identity whose neutral sequence (the template) is missing; its other sequences are fine.
        orphan = plan_identity(seed, identities, fault="missing_template")
        id_plans.append(orphan)
        timeline = stream_rng(seed, orphan.index, STREAM_TIMELINE)
        frame = 4000 + FRAME_STEP * int(timeline.integers(0, 100))
        for name, kind, slots, sentence in ((names.EXPRESSION_SEQUENCE, "expression", 45, None),
                                            (names.SENTENCES[0], "sentence", 45, 0)):
            seqs.append(SequencePlan(identity=orphan.index, name=name, kind=kind, first_frame=frame, n_slots=slots,
                                     sentence=sentence))
            frame += FRAME_STEP * (slots + 300)
    options = {"identities": identities, "sentences": sentences, "seconds": seconds, "seed": seed, "faults": faults}
    return TreePlan(seed=seed, identities=tuple(id_plans), sequences=tuple(seqs), options=options)
