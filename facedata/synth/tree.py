"""Write a raw tree in the Multiface layout (``docs/synth.md``): ``write_raw_tree``, the door of ``facedata synth``.

Writing is two steps. ``plan_tree`` (``facedata.synth.plan``) decides everything cheap and global, serially:
identities (folder, shape, voice), sequences, frame numbers and dropped frames. Then each sequence is generated
(``facedata.synth.take``) and written independently (optionally in a process pool): its streams of random numbers
are derived from (seed, identity, sequence name), so the bytes do not depend on the number of workers or on the
order of writing.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.synth import face, speech
from facedata.synth.faults import apply_faults
from facedata.synth.files import (
    SYNTH_DIR,
    audio_path,
    obj_text,
    quantize_mm,
    sequence_dir,
    tiny_png,
    transform_text,
    truth_path,
    write_npz,
)
from facedata.synth.plan import (
    FRAME_STEP,
    MESH_FPS,
    SAMPLES_PER_FRAME,
    STREAM_NOISE,
    IdentityPlan,
    SequencePlan,
    TreePlan,
    name_key,
    plan_tree,
    stream_rng,
)
from facedata.synth.take import generate_take, motion_basis
from facedata.synth.truth import write_face_truth

SYNTH_FORMAT_VERSION = 1


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
    basis = motion_basis(ident.shape)
    noise = stream_rng(job.seed, ident.index, name_key(seq.name), STREAM_NOISE)
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
    order = sorted(sequences, key=lambda s: name_key(s.name))
    if order == sorted(sequences, key=lambda s: s.first_frame):
        order.reverse()
    lines = []
    for seq in order:
        lines += [f"{seq.name} {seq.first_frame + FRAME_STEP * k:06d}\n" for k in range(seq.n_slots)]
    (root / "frame_list.txt").write_text("".join(lines))
    (root / "KRT").write_text("".join(
        f"{400000 + cam}\n1200.0 0.0 512.0\n0.0 1200.0 667.0\n0.0 0.0 1.0\n0.0 0.0 0.0 0.0 0.0\n"
        f"1.0 0.0 0.0 {cam * 100.0:.1f}\n0.0 1.0 0.0 0.0\n0.0 0.0 1.0 1000.0\n\n" for cam in range(2)))
    (root / "tex_mean.png").write_bytes(tiny_png())
    (root / "tex_var.txt").write_text("412.5\n")
    quantize_mm(face.neutral_vertices(ident.shape)).astype("<f4").tofile(root / "vert_mean.bin")
    (root / "vert_var.txt").write_text("1.25\n")



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
        write_face_truth(out, ident)

    fault_records = []
    if faults:
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
