"""Find identities, sequences, frames and audio in a raw Multiface tree, and report what does not belong.

Discovery only lists and stats files; it never reads them. Everything it cannot use becomes a ``Reject`` with
the path, the stage, the reason and, where it applies, the expected and the actual value.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from facedata.errors import InputError

IDENTITY_PATTERN = re.compile(
    r"^m--(?P<date>\d{8})--(?P<time>\d{4})--(?P<entity>[A-Za-z0-9_]+)--(?P<rig>[A-Za-z0-9]+)$"
)
FRAME_PATTERN = re.compile(r"^(?P<number>\d+)(?P<kind>\.bin|\.obj|_transform\.txt)$")
TEMPLATE_SEQUENCE = "E001_Neutral_Eyes_Open"
# Files and folders of a Multiface identity that speech training does not need.
KNOWN_IDENTITY_ENTRIES = frozenset(
    {
        "tracked_mesh",
        "audio",
        "images",
        "unwrapped_uv_1024",
        "frame_list.txt",
        "KRT",
        "tex_mean.png",
        "tex_var.txt",
        "vert_mean.bin",
        "vert_var.txt",
    }
)
AUDIO_SUFFIXES = (".wav", ".WAV")


@dataclass(frozen=True)
class Reject:
    """An input that was not used, and why. ``stage`` is one of discover, template, frame, audio, sequence."""

    path: str
    stage: str
    reason: str
    expected: str | None = None
    actual: str | None = None
    identity: str | None = None
    sequence: str | None = None

    @classmethod
    def from_error(
        cls, error: InputError, stage: str, identity: str | None = None, sequence: str | None = None
    ) -> Reject:
        return cls(
            path=error.path,
            stage=stage,
            reason=error.what,
            expected=error.expected,
            actual=error.actual,
            identity=identity,
            sequence=sequence,
        )

    def as_row(self) -> dict[str, str | None]:
        return {
            "path": self.path,
            "stage": self.stage,
            "reason": self.reason,
            "expected": self.expected,
            "actual": self.actual,
            "identity": self.identity,
            "sequence": self.sequence,
        }


@dataclass(frozen=True)
class FrameFiles:
    """The files of one frame number. Any of them may be absent."""

    number: int
    bin: Path | None = None
    obj: Path | None = None
    transform: Path | None = None


@dataclass
class SequenceSource:
    """One tracked-mesh sequence of an identity, with its frames in numeric order."""

    identity: str
    entity: str
    name: str
    directory: Path
    frames: list[FrameFiles]
    audio: Path | None = None
    step: int = 3

    @property
    def kind(self) -> str:
        return sequence_kind(self.name)

    @property
    def n_frames(self) -> int:
        """Time steps on the uniform grid from the first to the last frame number."""
        if not self.frames:
            return 0
        return (self.frames[-1].number - self.frames[0].number) // self.step + 1

    def files(self) -> list[Path]:
        paths = [p for f in self.frames for p in (f.bin, f.obj, f.transform) if p is not None]
        return paths + ([self.audio] if self.audio is not None else [])


@dataclass
class IdentitySource:
    name: str
    entity: str
    directory: Path
    step: int
    sequences: list[SequenceSource] = field(default_factory=list)

    @property
    def template_sequence(self) -> SequenceSource | None:
        return next((s for s in self.sequences if s.name == TEMPLATE_SEQUENCE), None)


@dataclass
class RawTree:
    root: Path
    identities: list[IdentitySource]
    rejects: list[Reject]

    @property
    def sequences(self) -> list[SequenceSource]:
        return [s for i in self.identities for s in i.sequences]


def sequence_kind(name: str) -> str:
    """sentence (SEN_*, with audio), expression (E### and EXP_*), gaze (GAZ_*) or other."""
    if name.startswith("SEN_"):
        return "sentence"
    if re.match(r"^E\d{3}", name) or name.startswith("EXP_"):
        return "expression"
    if name.startswith("GAZ_"):
        return "gaze"
    return "other"


def discover(root: str | Path) -> RawTree:
    """List a raw tree's identities, sequences, frames and audio files.

    Raises:
        InputError: ``root`` is not a readable directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            root,
            "raw tree",
            expected="a directory of m--<date>--<time>--<entity>--GHS folders",
            actual="missing" if not root.exists() else "not a directory",
        )
    rejects: list[Reject] = []
    identities: list[IdentitySource] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue  # tool metadata (.git, .synth, ...) lives beside the identities
        match = IDENTITY_PATTERN.match(entry.name)
        if not match or not entry.is_dir():
            rejects.append(
                Reject(
                    entry.path,
                    "discover",
                    "not an identity folder",
                    expected="a folder m--<YYYYMMDD>--<HHMM>--<entity>--<rig>",
                    actual=entry.name,
                )
            )
            continue
        identity = _discover_identity(Path(entry.path), match["entity"], rejects)
        if identity is not None:
            identities.append(identity)
    return RawTree(root=root, identities=identities, rejects=rejects)


def _discover_identity(directory: Path, entity: str, rejects: list[Reject]) -> IdentitySource | None:
    name = directory.name
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name not in KNOWN_IDENTITY_ENTRIES:
            rejects.append(
                Reject(
                    entry.path, "discover", "unrecognised entry in an identity folder", identity=name, actual=entry.name
                )
            )
    meshes = directory / "tracked_mesh"
    if not meshes.is_dir():
        rejects.append(
            Reject(
                str(meshes),
                "discover",
                "identity without tracked meshes",
                expected="tracked_mesh/<SEQ>/<frame>.bin",
                actual="missing",
                identity=name,
            )
        )
        return None

    audio_files: dict[str, Path] = {}
    audio_dir = directory / "audio"
    if audio_dir.is_dir():
        for entry in sorted(os.scandir(audio_dir), key=lambda e: e.name):
            stem, suffix = os.path.splitext(entry.name)
            if suffix in AUDIO_SUFFIXES and not entry.is_dir():
                audio_files[stem] = Path(entry.path)
            else:
                rejects.append(
                    Reject(
                        entry.path,
                        "discover",
                        "unrecognised file in audio folder",
                        expected="<SEN_name>.wav",
                        actual=entry.name,
                        identity=name,
                    )
                )

    sequences: list[SequenceSource] = []
    for entry in sorted(os.scandir(meshes), key=lambda e: e.name):
        if not entry.is_dir():
            rejects.append(
                Reject(
                    entry.path,
                    "discover",
                    "unrecognised entry in tracked_mesh",
                    expected="a sequence folder",
                    actual=entry.name,
                    identity=name,
                )
            )
            continue
        frames = _discover_frames(Path(entry.path), name, entry.name, rejects)
        if not frames:
            rejects.append(
                Reject(
                    entry.path,
                    "discover",
                    "sequence without frames",
                    expected="<frame>.bin or <frame>.obj files",
                    actual="none",
                    identity=name,
                    sequence=entry.name,
                )
            )
            continue
        sequences.append(
            SequenceSource(
                identity=name,
                entity=entity,
                name=entry.name,
                directory=Path(entry.path),
                frames=frames,
                audio=audio_files.pop(entry.name, None),
            )
        )
    for stem, path in audio_files.items():
        rejects.append(
            Reject(
                str(path),
                "discover",
                "audio without a mesh sequence",
                expected=f"tracked_mesh/{stem}/",
                actual="missing",
                identity=name,
                sequence=stem,
            )
        )

    step = detect_step(sequences)
    kept: list[SequenceSource] = []
    for seq in sequences:
        seq.step = step
        gaps = [b.number - a.number for a, b in zip(seq.frames, seq.frames[1:], strict=False)]
        off_step = [g for g in gaps if g % step]
        if off_step:
            rejects.append(
                Reject(
                    str(seq.directory),
                    "discover",
                    "frame numbers off the identity's step",
                    expected=f"differences that are multiples of {step}",
                    actual=f"difference {off_step[0]}",
                    identity=name,
                    sequence=seq.name,
                )
            )
            continue
        kept.append(seq)
    return IdentitySource(name=name, entity=entity, directory=directory, step=step, sequences=kept)


def detect_step(sequences: list[SequenceSource]) -> int:
    """The most common difference between consecutive frame numbers (3 in Multiface v1); 1 if undetermined."""
    counts: Counter[int] = Counter()
    for seq in sequences:
        counts.update(b.number - a.number for a, b in zip(seq.frames, seq.frames[1:], strict=False))
    return counts.most_common(1)[0][0] if counts else 1


def _discover_frames(directory: Path, identity: str, sequence: str, rejects: list[Reject]) -> list[FrameFiles]:
    found: dict[int, dict[str, list[Path]]] = {}
    for entry in os.scandir(directory):
        match = FRAME_PATTERN.match(entry.name)
        if not match:
            rejects.append(
                Reject(
                    entry.path,
                    "discover",
                    "unrecognised file in a sequence folder",
                    expected="<frame>.bin, <frame>.obj or <frame>_transform.txt",
                    actual=entry.name,
                    identity=identity,
                    sequence=sequence,
                )
            )
            continue
        if not entry.is_file():  # follows symlinks: a dangling link or a folder lands here
            what = (
                "dangling symbolic link"
                if entry.is_symlink() and not os.path.exists(entry.path)
                else "directory"
                if entry.is_dir()
                else "not a regular file"
            )
            rejects.append(
                Reject(
                    entry.path,
                    "discover",
                    "unreadable frame file",
                    expected="a regular file",
                    actual=what,
                    identity=identity,
                    sequence=sequence,
                )
            )
            continue
        kind = match["kind"].lstrip(".").removeprefix("_transform.txt") or "transform"
        found.setdefault(int(match["number"]), {}).setdefault(kind, []).append(Path(entry.path))

    frames: list[FrameFiles] = []
    for number in sorted(found):
        chosen: dict[str, Path] = {}
        for kind, paths in found[number].items():
            # The same number written twice (000123.bin and 0000123.bin): keep the six-digit spelling.
            paths.sort(key=lambda p: (len(p.name.split(".")[0].split("_")[0]) != 6, p.name))
            chosen[kind] = paths[0]
            for extra in paths[1:]:
                rejects.append(
                    Reject(
                        str(extra),
                        "discover",
                        "duplicate frame number",
                        expected=f"one file per frame number ({paths[0].name})",
                        actual=extra.name,
                        identity=identity,
                        sequence=sequence,
                    )
                )
        if "bin" in chosen or "obj" in chosen:
            frames.append(FrameFiles(number, chosen.get("bin"), chosen.get("obj"), chosen.get("transform")))
    return frames
