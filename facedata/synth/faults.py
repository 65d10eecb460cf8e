"""The catalogue of bad inputs that ``--faults`` adds to a written tree.

Each fault lives on its own named host (a short ``E0xx_*`` sequence, one of the last sentences of the list, an extra
identity or a stray path), so the rest of the tree stays valid and a test can expect exactly one reject per fault.
Every fault is recorded in ``.synth/faults.json`` as ``{path, kind, description, identity, sequence}`` with
``path`` relative to the tree's root.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facedata.synth import names
from facedata.synth.files import audio_path, obj_text, quantize_mm, sequence_dir
from facedata.synth.plan import SAMPLES_PER_FRAME, TreePlan

# kind -> host sequence: frame faults sit on the E0xx hosts in this order, audio faults on the fault sentences.
FRAME_FAULTS = (
    "truncated_bin", "truncated_bin_no_obj", "obj_wrong_vertex_count", "nan_coordinates", "inf_coordinates",
    "duplicate_frame_number", "stray_file", "dangling_symlink", "directory_as_frame",
)
AUDIO_FAULTS = ("wav_unreadable", "wav_empty", "wav_silent", "audio_too_short", "audio_too_long", "wav_missing")
FAULT_KINDS = (*FRAME_FAULTS, *AUDIO_FAULTS, "missing_template", "stray_identity_file", "stray_root_folder")


def apply_faults(out: Path, plan: TreePlan, *, obj_coords: str = "local") -> list[dict]:
    """Corrupt the hosts of a freshly written tree; returns the fault records (also the content of faults.json).

    ``obj_coords`` is the tree's OBJ convention, followed by the OBJ files this writes.
    """
    records: list[dict] = []
    host = plan.identities[0]
    by_name = {s.name: s for s in plan.sequences if s.identity == host.index}

    def record(path: Path, kind: str, description: str, sequence: str | None = None,
               identity: str | None = host.folder) -> None:
        records.append({"path": path.relative_to(out).as_posix(), "kind": kind, "description": description,
                        "identity": identity, "sequence": sequence})

    for kind, name in zip(FRAME_FAULTS, names.FAULT_EXPRESSIONS, strict=True):
        seq = by_name[name]
        folder = sequence_dir(out, host, name)
        frame = int(seq.frame_numbers[len(seq.frame_numbers) // 2])
        stem = folder / f"{frame:06d}"
        bin_path, obj_path = stem.with_suffix(".bin"), stem.with_suffix(".obj")
        if kind == "truncated_bin":
            _ensure_obj(stem, obj_coords)
            _truncate(bin_path)
            record(bin_path, kind, "a .bin cut to half its size; the frame's OBJ is present", name)
        elif kind == "truncated_bin_no_obj":
            obj_path.unlink(missing_ok=True)
            _truncate(bin_path)
            record(bin_path, kind, "a .bin cut to half its size and no OBJ for the frame", name)
        elif kind == "obj_wrong_vertex_count":
            text = obj_text(_obj_vertices(stem, obj_coords))
            bin_path.unlink()
            lines = text.splitlines(keepends=True)
            # Drop the last 306 v lines (7000 vertices left) and the faces that used them.
            kept_v = [line for i, line in enumerate(lines) if not (line.startswith("v ") and i >= 7000)]
            obj_path.write_text("".join(line for line in kept_v if not line.startswith("f ")
                                        or max(int(c.split("/")[0]) for c in line.split()[1:]) <= 7000))
            record(obj_path, kind, "an OBJ with 7000 vertices instead of 7306; its .bin is removed so the OBJ is "
                                   "read", name)
        elif kind in ("nan_coordinates", "inf_coordinates"):
            vertices = np.fromfile(bin_path, dtype="<f4").reshape(-1, 3).copy()
            vertices[100:103, 1] = np.nan if kind == "nan_coordinates" else np.inf
            vertices[4000, 2] = np.nan if kind == "nan_coordinates" else -np.inf
            vertices.astype("<f4").tofile(bin_path)
            obj_path.unlink(missing_ok=True)
            word = "NaN" if kind == "nan_coordinates" else "inf"
            record(bin_path, kind, f"a .bin of the right size holding {word} coordinates (vertices 100-102, 4000)",
                   name)
        elif kind == "duplicate_frame_number":
            twin = folder / f"{frame:07d}.bin"
            twin.write_bytes(bin_path.read_bytes())
            record(twin, kind, f"frame {frame} twice: {frame:06d}.bin and {frame:07d}.bin (seven-digit padding)",
                   name)
        elif kind == "stray_file":
            notes = folder / "notes.txt"
            notes.write_text("tracking restarted here, check frames\n")
            record(notes, kind, "a text file inside a sequence folder", name)
            odd = folder / "frame_abc.bin"
            odd.write_bytes(b"\x00" * 64)
            record(odd, kind, "a .bin whose name is not a frame number", name)
            ds = folder / ".DS_Store"
            ds.write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 24)
            record(ds, kind, "a macOS folder-metadata file inside a sequence folder", name)
        elif kind == "dangling_symlink":
            bin_path.unlink()
            obj_path.unlink(missing_ok=True)
            os.symlink(f"../../../../missing_volume/{frame:06d}.bin", bin_path)
            record(bin_path, kind, "a frame .bin that is a symlink to a file that does not exist (unreadable)", name)
        elif kind == "directory_as_frame":
            bin_path.unlink()
            obj_path.unlink(missing_ok=True)
            bin_path.mkdir()
            record(bin_path, kind, "a directory named like a frame .bin (unreadable as a file)", name)

    for kind, name in zip(AUDIO_FAULTS, names.FAULT_SENTENCES, strict=True):
        seq = by_name[name]
        path = audio_path(out, host, name)
        expected = seq.n_slots * SAMPLES_PER_FRAME
        if kind == "wav_unreadable":
            path.write_bytes(np.random.default_rng(plan.seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
            record(path, kind, "a .wav holding 4096 random bytes, no RIFF header", name)
        elif kind == "wav_empty":
            _write_wav(path, np.zeros(0))
            record(path, kind, "a valid 48 kHz 24-bit WAV header with 0 samples", name)
        elif kind == "wav_silent":
            _write_wav(path, np.zeros(expected))
            record(path, kind, f"a WAV of the right length ({expected} samples) holding only zeros", name)
        elif kind in ("audio_too_short", "audio_too_long"):
            import soundfile

            audio, _ = soundfile.read(path, dtype="float64")
            if kind == "audio_too_short":
                audio = audio[: expected // 2]
            else:
                audio = np.concatenate([audio, audio])
            _write_wav(path, audio)
            record(path, kind, f"audio of {len(audio)} samples for frames needing {expected} "
                               f"({len(audio) / expected:.1f}x)", name)
        elif kind == "wav_missing":
            path.unlink()
            record(path, kind, "a SEN_ sequence with frames but no audio file", name)

    orphan = next((i for i in plan.identities if i.fault == "missing_template"), None)
    if orphan is not None:
        record(out / orphan.folder, "missing_template",
               f"an identity without {names.NEUTRAL_SEQUENCE} (its template); its other sequences exist",
               identity=orphan.folder)
    ds = out / host.folder / ".DS_Store"
    ds.write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 24)
    record(ds, "stray_identity_file", "a macOS folder-metadata file in an identity folder")
    ds = out / host.folder / "tracked_mesh" / ".DS_Store"
    ds.write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 24)
    record(ds, "stray_identity_file", "a macOS folder-metadata file beside the sequence folders")
    stray = out / "export_tmp"
    stray.mkdir()
    (stray / "README.txt").write_text("partial export, delete me\n")
    record(stray, "stray_root_folder", "a folder at the root that is not an identity folder", identity=None)
    return records


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _obj_vertices(stem: Path, obj_coords: str) -> np.ndarray:
    """A frame's vertices as its OBJ holds them, from its .bin (and transform in world mode), (V, 3) float32."""
    vertices = np.fromfile(stem.with_suffix(".bin"), dtype="<f4").reshape(-1, 3)
    if obj_coords == "world":
        matrix = np.loadtxt(stem.with_name(stem.name + "_transform.txt"))
        vertices = quantize_mm(vertices.astype(np.float64) @ matrix[:, :3].T + matrix[:, 3])
    return vertices


def _ensure_obj(stem: Path, obj_coords: str) -> None:
    """Write the frame's OBJ if ``obj_every`` skipped it."""
    obj_path = stem.with_suffix(".obj")
    if not obj_path.exists():
        obj_path.write_text(obj_text(_obj_vertices(stem, obj_coords)))


def _write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile

    soundfile.write(path, audio, 48_000, subtype="PCM_24", format="WAV")
