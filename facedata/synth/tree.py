"""Plan and write a raw tree in the Multiface layout (``docs/synth.md``).

Writing is two steps. ``plan_tree`` decides everything cheap and global, serially: identities (folder, shape,
voice), sequences, frame numbers and dropped frames. Then each sequence is generated and written independently
(optionally in a process pool): its streams of random numbers are derived from (seed, identity, sequence name), so
the bytes do not depend on the number of workers or on the order of writing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import os
import shutil
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.synth import face, motion, names, speech

MESH_FPS = 30
FRAME_STEP = 3  # consecutive frames differ by 3 in the session counter
SAMPLES_PER_FRAME = speech.AUDIO_RATE_HZ // MESH_FPS  # 1600
OBJ_DECIMALS = 4  # coordinates are quantised to 0.1 um so the OBJ text parses back to the .bin's float32 exactly
DROP_PROBABILITY = 0.01  # per frame; far above the corpus' 1 in 2,000 so that small trees have some
SYNTH_DIR = ".synth"
SYNTH_FORMAT_VERSION = 1

# Random streams, one per purpose, so that no quantity can leak into another (audio and brows in particular).
_STREAM_SHAPE, _STREAM_VOICE, _STREAM_NAMES, _STREAM_TIMELINE, _STREAM_POSE_BASE = 1, 2, 3, 4, 5
_STREAM_SPEECH, _STREAM_EXPRESSION, _STREAM_POSE, _STREAM_NOISE = 11, 12, 13, 14


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _name_key(name: str) -> int:
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


# ----------------------------------------------------------------------------------------------------------------
# Planning


def plan_identity(seed: int, index: int, *, fault: str | None = None) -> IdentityPlan:
    """Identity ``index`` of any tree generated with ``seed`` (the number of identities does not matter)."""
    shape = face.FaceShape.draw(_rng(seed, index, _STREAM_SHAPE))
    speaker = speech.Speaker.draw(_rng(seed, index, _STREAM_VOICE))
    folder = names.identity_folder(index, _rng(seed, index, _STREAM_NAMES))
    pose = _rng(seed, index, _STREAM_POSE_BASE)
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
        timeline = _rng(seed, ident.index, _STREAM_TIMELINE)
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
        timeline = _rng(seed, orphan.index, _STREAM_TIMELINE)
        frame = 4000 + FRAME_STEP * int(timeline.integers(0, 100))
        for name, kind, slots, sentence in ((names.EXPRESSION_SEQUENCE, "expression", 45, None),
                                            (names.SENTENCES[0], "sentence", 45, 0)):
            seqs.append(SequencePlan(identity=orphan.index, name=name, kind=kind, first_frame=frame, n_slots=slots,
                                     sentence=sentence))
            frame += FRAME_STEP * (slots + 300)
    options = {"identities": identities, "sentences": sentences, "seconds": seconds, "seed": seed, "faults": faults}
    return TreePlan(seed=seed, identities=tuple(id_plans), sequences=tuple(seqs), options=options)


# ----------------------------------------------------------------------------------------------------------------
# Generating one sequence


def generate_take(seed: int, ident: IdentityPlan, seq: SequencePlan) -> Take:
    """The curves, head pose and audio of a planned sequence."""
    key = _name_key(seq.name)
    times = np.arange(seq.n_slots) / MESH_FPS
    audio = None
    lead_ms = 0.0
    if seq.kind == "sentence":
        speech_rng = _rng(seed, ident.index, key, _STREAM_SPEECH)
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
        motion.add_blinks_and_brows(curves, times, _rng(seed, ident.index, key, _STREAM_EXPRESSION))
    rotations, translations = motion.head_pose(times, np.array(ident.base_translation_mm), ident.base_yaw_rad,
                                               _rng(seed, ident.index, key, _STREAM_POSE))
    return Take(times_s=times, curves=curves, rotations=rotations, translations=translations, audio=audio,
                lead_ms=lead_ms)


def sentence_take(*, seed: int = 0, identity: int = 0, sentence: int = 0, seconds: float = 3.0) -> Take:
    """A sentence take of any length without writing anything (for tests and analysis)."""
    ident = plan_identity(seed, identity)
    seq = SequencePlan(identity=identity, name=names.SENTENCES[sentence], kind="sentence", first_frame=0,
                       n_slots=round(seconds * MESH_FPS), sentence=sentence)
    return generate_take(seed, ident, seq)


@functools.lru_cache(maxsize=4)
def _motion_basis(shape: face.FaceShape) -> motion.MotionBasis:
    return motion.build_basis(shape)


def quantize_mm(vertices: np.ndarray) -> np.ndarray:
    """Round to 0.1 um and cast to float32: the OBJ's 4-decimal text then parses back to these exact values."""
    return (np.round(vertices * 10**OBJ_DECIMALS) / 10**OBJ_DECIMALS).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# File formats


@functools.cache
def obj_static_text() -> str:
    """The ``vt`` and ``f v/vt`` lines shared by every frame of every identity (built once per process)."""
    topo = face.read_topology()
    uv_lines = ("vt %.6f %.6f\n" * len(topo.uvs)) % tuple(topo.uvs.ravel().tolist())
    corners = np.stack([topo.faces + 1, topo.face_uvs + 1], axis=2).reshape(-1)  # 1-based v/vt pairs
    face_lines = ("f %d/%d %d/%d %d/%d\n" * len(topo.faces)) % tuple(corners.tolist())
    return uv_lines + face_lines


def obj_text(vertices_mm: np.ndarray) -> str:
    """A frame's OBJ: ``v`` lines with 4 decimals, then the shared ``vt`` and ``f`` lines. (V, 3) -> text."""
    v_lines = ("v %.4f %.4f %.4f\n" * len(vertices_mm)) % tuple(np.asarray(vertices_mm, np.float64).ravel().tolist())
    return v_lines + obj_static_text()


def transform_text(rotation: np.ndarray, translation_mm: np.ndarray) -> str:
    """The 3 x 4 ``[R | t]`` text of a ``_transform.txt`` file."""
    matrix = np.concatenate([rotation, translation_mm[:, None]], axis=1)
    return "".join(" ".join(f"{x:.9f}" for x in row) + "\n" for row in matrix)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` readable by ``np.load`` with fixed zip timestamps, so equal arrays give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def _tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A small grey RGB PNG (a placeholder for the mean texture)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([128, 110, 100]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def sequence_dir(out: Path, ident: IdentityPlan, name: str) -> Path:
    return out / ident.folder / "tracked_mesh" / name


def audio_path(out: Path, ident: IdentityPlan, name: str) -> Path:
    return out / ident.folder / "audio" / f"{name}.wav"


def truth_path(out: Path, folder: str, name: str) -> Path:
    return out / SYNTH_DIR / "curves" / folder / f"{name}.npz"


# ----------------------------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class _SequenceJob:
    out: Path
    seed: int
    identity: IdentityPlan
    sequence: SequencePlan
    obj_every: int
    obj_coords: str


@dataclass(frozen=True)
class _SequenceResult:
    frames: int
    obj_files: int
    audio_seconds: float


def write_sequence(job: _SequenceJob) -> _SequenceResult:
    """Generate one sequence and write its frames, audio and truth."""
    ident, seq = job.identity, job.sequence
    take = generate_take(job.seed, ident, seq)
    basis = _motion_basis(ident.shape)
    noise = _rng(job.seed, ident.index, _name_key(seq.name), _STREAM_NOISE)
    folder = sequence_dir(job.out, ident, seq.name)
    folder.mkdir(parents=True, exist_ok=True)
    present = seq.present_slots
    frames = seq.frame_numbers
    obj_files = 0
    chunk = 64  # frames generated at once: bounded memory for long takes
    for start in range(0, len(present), chunk):
        slots = present[start:start + chunk]
        curves = {k: v[slots] for k, v in take.curves.items()}
        vertices = quantize_mm(basis.vertices(curves, noise))  # (B, V, 3) float32
        for b, slot in enumerate(slots):
            k = start + b
            stem = folder / f"{frames[k]:06d}"
            vertices[b].astype("<f4").tofile(stem.with_suffix(".bin"))
            rotation, translation = take.rotations[slot], take.translations[slot]
            stem.with_name(stem.name + "_transform.txt").write_text(transform_text(rotation, translation))
            if k % job.obj_every == 0:
                obj_vertices = vertices[b]
                if job.obj_coords == "world":
                    obj_vertices = quantize_mm(vertices[b].astype(np.float64) @ rotation.T + translation)
                stem.with_suffix(".obj").write_text(obj_text(obj_vertices))
                obj_files += 1
    audio_seconds = 0.0
    if take.audio is not None:
        import soundfile

        path = audio_path(job.out, ident, seq.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, take.audio, speech.AUDIO_RATE_HZ, subtype="PCM_24", format="WAV")
        audio_seconds = len(take.audio) / speech.AUDIO_RATE_HZ
    slots_frames = seq.first_frame + FRAME_STEP * np.arange(seq.n_slots)
    present_mask = np.zeros(seq.n_slots, dtype=bool)
    present_mask[present] = True
    write_npz(truth_path(job.out, ident.folder, seq.name), {
        "frame": slots_frames.astype(np.int64), "present": present_mask, "time_s": take.times_s,
        **{k: v.astype(np.float64) for k, v in take.curves.items()},
        "rotation": take.rotations, "translation_mm": take.translations,
        "lead_ms": np.float64(take.lead_ms),
    })
    return _SequenceResult(frames=len(present), obj_files=obj_files, audio_seconds=audio_seconds)


def _write_identity_files(out: Path, ident: IdentityPlan, sequences: list[SequencePlan]) -> None:
    """frame_list.txt (every slot, dropped ones included, not in frame order) and the placeholder files."""
    root = out / ident.folder
    root.mkdir(parents=True, exist_ok=True)
    # Sequence blocks in a scrambled but fixed order (by a hash of the name), so readers cannot rely on it.
    order = sorted(sequences, key=lambda s: _name_key(s.name))
    if order == sorted(sequences, key=lambda s: s.first_frame):
        order.reverse()
    lines = []
    for seq in order:
        lines += [f"{seq.name} {seq.first_frame + FRAME_STEP * k:06d}\n" for k in range(seq.n_slots)]
    (root / "frame_list.txt").write_text("".join(lines))
    (root / "KRT").write_text("".join(
        f"{400000 + cam}\n1200.0 0.0 512.0\n0.0 1200.0 667.0\n0.0 0.0 1.0\n0.0 0.0 0.0 0.0 0.0\n"
        f"1.0 0.0 0.0 {cam * 100.0:.1f}\n0.0 1.0 0.0 0.0\n0.0 0.0 1.0 1000.0\n\n" for cam in range(2)))
    (root / "tex_mean.png").write_bytes(_tiny_png())
    (root / "tex_var.txt").write_text("412.5\n")
    quantize_mm(face.neutral_vertices(ident.shape)).astype("<f4").tofile(root / "vert_mean.bin")
    (root / "vert_var.txt").write_text("1.25\n")


def _write_face_truth(out: Path, ident: IdentityPlan) -> None:
    truth = identity_truth_from_plan(ident)
    write_npz(out / SYNTH_DIR / "faces" / f"{ident.folder}.npz", {
        "neutral_mm": truth.neutral_mm, "faces": truth.faces, "kept_faces": truth.kept_faces, "keep": truth.keep,
        **{f"region_{k}": v for k, v in truth.regions.items()},
        **{f"landmark_{k}": np.int64(v) for k, v in truth.landmarks.items()},
    })


@dataclass(frozen=True)
class IdentityTruth:
    """Ground truth of one identity (see the package docstring).

    Attributes:
        folder: the identity folder name.
        neutral_mm: (7306, 3) float32 head-local neutral mesh, as the E001 frames hold it before tracking noise.
        faces: (F, 3) int32 full-mesh faces (0-based).
        kept_faces: (F_k, 3) int32 faces among the 6172 kept vertices, in kept indexing.
        keep: (6172,) int64 kept vertex indices into the full mesh.
        regions: name -> (6172,) bool over kept vertices: mouth, lips, upper_face, eyelid, forehead, neck.
        region_weights: name -> (6172,) float64 soft weights in [0, 1] (the regions are weights > 0.5).
        landmarks: name -> kept-vertex index: nose_tip, mouth_corner_left/right, upper/lower_lip_centre,
            eye_centre_left/right (left is the subject's left, +x).
        shape: the identity's proportions.
    """

    folder: str
    neutral_mm: np.ndarray
    faces: np.ndarray
    kept_faces: np.ndarray
    keep: np.ndarray
    regions: dict[str, np.ndarray]
    region_weights: dict[str, np.ndarray]
    landmarks: dict[str, int]
    shape: face.FaceShape


def identity_truth_from_plan(ident: IdentityPlan) -> IdentityTruth:
    topo = face.read_topology()
    keep = topo.keep
    remap = np.full(face.N_VERTICES, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    kept_faces = remap[topo.faces[:topo.n_kept_faces]].astype(np.int32)
    weights = {k: v[keep] for k, v in face.region_weights().items()}
    return IdentityTruth(
        folder=ident.folder, neutral_mm=quantize_mm(face.neutral_vertices(ident.shape)), faces=topo.faces,
        kept_faces=kept_faces, keep=keep, regions={k: v > 0.5 for k, v in weights.items()}, region_weights=weights,
        landmarks=face.landmark_indices(), shape=ident.shape,
    )


@dataclass(frozen=True)
class SynthSummary:
    """What ``write_raw_tree`` wrote."""

    out: Path
    identities: int  # identity folders, the fault catalogue's extra one included
    sequences: int
    frames: int
    obj_files: int
    audio_seconds: float
    bytes: int
    faults: int
    seconds: float  # wall time of the generation

    def describe(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        return (f"wrote {self.out}: {self.identities} identities, {self.sequences} sequences, {self.frames} frames "
                f"({self.obj_files} OBJ), {self.audio_seconds:.1f} s of audio, {self.bytes / 1e6:.1f} MB, "
                f"{self.faults} faults; {self.seconds:.1f} s ({rate:.0f} frames/s)")


def _tree_bytes(out: Path) -> int:
    total = 0
    for root, _, files in os.walk(out):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path is a file", expected="a new or empty directory", actual="a file")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "output directory is not empty", expected="a new or empty directory",
                             actual="existing files (pass overwrite=True / --overwrite to replace a synth tree)")
        if not (out / SYNTH_DIR / "synth.json").is_file():
            raise InputError(out, "refusing to overwrite a directory that synth did not write",
                             expected=f"{SYNTH_DIR}/synth.json inside", actual="none")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_raw_tree(out: Path | str, *, identities: int = 2, sentences: int = 6, seconds: float = 3.0, seed: int = 0,
                   faults: bool = False, obj_coords: str = "local", obj_every: int = 1, workers: int = 1,
                   overwrite: bool = False) -> SynthSummary:
    """Generate a raw tree in the Multiface layout under ``out`` (see ``docs/synth.md``).

    Args:
        out: directory to create (must be new or empty; with ``overwrite``, a previous synth tree is replaced).
        identities: identity folders (1..13; 1..12 with faults, which add one).
        sentences: SEN_ sentences per identity (1..54), the first ones of the fixed list.
        seconds: mean sentence length (s); each sentence's length follows its word count.
        seed: the same seed gives the same bytes.
        faults: add the catalogue of bad inputs (``.synth/faults.json``).
        obj_coords: "local" (as the .bin) or "world" (R @ x + t) coordinates in the OBJ files.
        obj_every: write the OBJ of every N-th frame of a sequence only (1 = every frame, as in the corpus).
        workers: processes writing sequences in parallel.
        overwrite: replace ``out`` if it holds a tree that synth wrote.

    Raises:
        InputError: an option out of range, or ``out`` not empty.
    """
    started = time.perf_counter()
    out = Path(out)
    if obj_coords not in ("local", "world"):
        raise InputError("obj_coords", "OBJ coordinates", expected="local or world", actual=obj_coords)
    if obj_every < 1 or workers < 1:
        raise InputError("obj_every/workers", "a count", expected=">= 1", actual=f"{obj_every}/{workers}")
    plan = plan_tree(identities=identities, sentences=sentences, seconds=seconds, seed=seed, faults=faults)
    _prepare_out(out, overwrite)

    jobs = [_SequenceJob(out=out, seed=seed, identity=plan.identity(s.identity), sequence=s, obj_every=obj_every,
                         obj_coords=obj_coords) for s in plan.sequences]
    jobs.sort(key=lambda j: -j.sequence.n_slots)  # longest first balances the pool
    if workers == 1:
        results = [write_sequence(j) for j in jobs]
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(write_sequence, jobs))
    for ident in plan.identities:
        _write_identity_files(out, ident, [s for s in plan.sequences if s.identity == ident.index])
        _write_face_truth(out, ident)

    fault_records = []
    if faults:
        from facedata.synth.faults import apply_faults

        fault_records = apply_faults(out, plan, obj_coords=obj_coords)
    _write_manifest(out, plan, obj_coords=obj_coords, obj_every=obj_every, faults=fault_records)
    return SynthSummary(
        out=out, identities=len(plan.identities), sequences=len(plan.sequences),
        frames=sum(r.frames for r in results), obj_files=sum(r.obj_files for r in results),
        audio_seconds=sum(r.audio_seconds for r in results), bytes=_tree_bytes(out), faults=len(fault_records),
        seconds=time.perf_counter() - started,
    )


def _write_manifest(out: Path, plan: TreePlan, *, obj_coords: str, obj_every: int, faults: list[dict]) -> None:
    from facedata import __version__

    manifest = {
        "format_version": SYNTH_FORMAT_VERSION,
        "tool": f"facedata {__version__} synth",
        "options": {**plan.options, "obj_coords": obj_coords, "obj_every": obj_every},
        "frame_step": FRAME_STEP,
        "fps": MESH_FPS,
        "audio_rate_hz": speech.AUDIO_RATE_HZ,
        "samples_per_frame": SAMPLES_PER_FRAME,
        "identities": [{
            "index": i.index, "folder": i.folder, "entity": i.entity, "fault": i.fault,
            "shape": i.shape.to_dict(), "speaker": i.speaker.to_dict(),
        } for i in plan.identities],
        "sequences": [{
            "identity": plan.identity(s.identity).folder, "sequence": s.name, "kind": s.kind,
            "first_frame": s.first_frame, "last_frame": s.last_frame, "n_slots": s.n_slots,
            "n_frames": len(s.present_slots),
            "dropped_frames": [s.first_frame + FRAME_STEP * k for k in s.dropped_slots],
            "has_audio": s.has_audio, "audio_samples": s.n_slots * SAMPLES_PER_FRAME if s.has_audio else 0,
            "fault_host": s.fault is not None or plan.identity(s.identity).fault is not None,
        } for s in plan.sequences],
    }
    (out / SYNTH_DIR).mkdir(parents=True, exist_ok=True)
    (out / SYNTH_DIR / "synth.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / SYNTH_DIR / "faults.json").write_text(json.dumps(faults, indent=1) + "\n")
