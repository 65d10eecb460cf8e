"""MP4 writing and probing with the static ffmpeg that the ``imageio-ffmpeg`` package ships (no system ffmpeg).

``Mp4Writer`` streams raw RGB frames into ffmpeg's stdin, so memory stays bounded whatever the sequence length.
The result is what browsers play: H.264 (High profile, yuv420p, even dimensions) at 30 fps, AAC audio, and the
index (``moov``) at the start of the file (faststart). With audio, the video is encoded first and the audio muxed
in afterwards, padded with silence or trimmed to exactly the video's duration.

``probe_media`` decodes a file completely and reports each stream's duration and the number of video frames;
``read_video_frames`` yields its decoded frames. Both exist for tests and sanity checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from facedata.errors import FacedataError, InputError

FPS = 30


class VideoError(FacedataError, RuntimeError):
    """ffmpeg failed (its last message is included) or a file could not be decoded."""


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg bundled with ``imageio-ffmpeg``."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no message"


AudioSource = str | Path | tuple[np.ndarray, int]


class Mp4Writer:
    """Write frames to an H.264 MP4 one at a time, optionally with an audio track.

    Use as a context manager; the file appears at ``path`` only when ``close`` succeeds (an exception inside the
    ``with`` block leaves no partial file)::

        with Mp4Writer("out.mp4", width_px=640, height_px=480, audio="speech.wav") as video:
            for vertices in sequence:
                video.write(renderer.render(vertices))

    Args:
        path: output ``.mp4``.
        width_px, height_px: frame size; an odd size is padded to the even size yuv420p needs by repeating the
            last row or column.
        fps: frame rate (30 for this project's meshes).
        audio: a sound file ffmpeg reads (WAV of any rate, depth and channel count) or ``(samples, rate_hz)`` with
            samples (N,) or (N, C) float in [-1, 1]; ``None`` for a silent video.
        max_audio_mismatch_s: the largest tolerated difference between the audio's and the video's duration; the
            audio is then padded or trimmed to the video. A larger difference is a caller's mistake and raises.
        crf: x264 constant rate factor (lower is better and larger; 18-23 is visually clean for renders).
        preset: x264 speed preset.

    Raises:
        InputError: bad size or fps, unreadable audio, a frame of the wrong shape or type, audio length mismatch.
        VideoError: ffmpeg failed.
    """

    def __init__(self, path: str | Path, *, width_px: int, height_px: int, fps: int = FPS,
                 audio: AudioSource | None = None, max_audio_mismatch_s: float = 0.5, crf: int = 20,
                 preset: str = "veryfast"):
        self.path = Path(path)
        if not (2 <= width_px <= 8192 and 2 <= height_px <= 8192):
            raise InputError(self.path, "video size", expected="2..8192 pixels a side",
                             actual=f"{width_px} x {height_px}")
        if not (1 <= fps <= 240):
            raise InputError(self.path, "frame rate", expected="1..240 fps", actual=fps)
        self.width_px, self.height_px, self.fps = int(width_px), int(height_px), int(fps)
        self._even_width, self._even_height = self.width_px + self.width_px % 2, self.height_px + self.height_px % 2
        # yuv420p needs even sizes: odd frames are copied into this buffer with their last row/column repeated.
        self._even_frame = (np.empty((self._even_height, self._even_width, 3), dtype=np.uint8)
                            if (self._even_width, self._even_height) != (self.width_px, self.height_px) else None)
        self.max_audio_mismatch_s = float(max_audio_mismatch_s)
        self.frames_written = 0
        if not self.path.parent.is_dir():
            raise InputError(self.path, "output directory", expected="an existing directory", actual="missing")
        self._tmpdir = tempfile.TemporaryDirectory(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            self._start(audio, crf=crf, preset=preset)
        except BaseException:
            self._tmpdir.cleanup()
            raise
        self._closed = False

    def _start(self, audio: AudioSource | None, *, crf: int, preset: str) -> None:
        tmp = Path(self._tmpdir.name)
        self._audio_path: Path | None = None
        self.audio_seconds: float | None = None
        if audio is not None:
            self._audio_path, self.audio_seconds = self._prepare_audio(audio, tmp)
        self._video_path = tmp / "video.mp4"
        self._stderr = open(tmp / "ffmpeg-encode.log", "w+b")  # closed in close() or abort()
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self._even_width}x{self._even_height}",
                   "-framerate", str(self.fps), "-i", "pipe:0",
                   "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                   "-profile:v", "high", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
                   "-f", "mp4", str(self._video_path)]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr)
        except BaseException:
            self._stderr.close()
            raise
        assert self._process.stdin is not None
        self._stdin = self._process.stdin
        # A pipe that holds a whole frame or more lets the next frame render while ffmpeg encodes this one. Linux
        # caps unprivileged pipes (1 MiB by default), so fall back to the cap.
        try:
            import fcntl
        except ImportError:  # not on Windows: the default pipe only costs some overlap
            return
        frame_bytes = self._even_width * self._even_height * 3
        for size in (4 * frame_bytes, 1 << 20):
            try:
                fcntl.fcntl(self._stdin.fileno(), fcntl.F_SETPIPE_SZ, size)
                return
            except (AttributeError, OSError):
                continue

    def _prepare_audio(self, audio: AudioSource, tmp: Path) -> tuple[Path, float]:
        import soundfile

        if isinstance(audio, tuple):
            samples, rate = audio
            samples = np.asarray(samples, dtype=np.float32)
            if samples.ndim not in (1, 2) or samples.shape[0] == 0 or not np.isfinite(samples).all():
                raise InputError(self.path, "audio samples", expected="(N,) or (N, C) finite floats with N > 0",
                                 actual=f"{samples.shape}, finite: {bool(np.isfinite(samples).all())}")
            path = tmp / "audio.wav"
            soundfile.write(path, samples, int(rate), subtype="FLOAT")
            return path, samples.shape[0] / int(rate)
        path = Path(audio)
        try:
            info = soundfile.info(path)
        except (RuntimeError, OSError, soundfile.LibsndfileError) as e:
            raise InputError(path, f"unreadable audio: {e}".replace("\n", " ")) from e
        if info.frames <= 0:
            raise InputError(path, "empty audio", expected="> 0 samples", actual="0 samples")
        return path, info.frames / info.samplerate

    def write(self, frame: np.ndarray) -> None:
        """Append one (height_px, width_px, 3) uint8 RGB frame."""
        if self._closed:
            raise InputError(self.path, "write after close", expected="an open writer", actual="closed")
        if frame.shape != (self.height_px, self.width_px, 3) or frame.dtype != np.uint8:
            raise InputError(self.path, f"frame {self.frames_written}",
                             expected=f"({self.height_px}, {self.width_px}, 3) uint8",
                             actual=f"{frame.shape} {frame.dtype}")
        if self._even_frame is not None:
            h, w = self.height_px, self.width_px
            self._even_frame[:h, :w] = frame
            self._even_frame[h:, :w] = frame[h - 1:]
            self._even_frame[:, w:] = self._even_frame[:, w - 1:w]
            frame = self._even_frame
        try:
            self._stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError) as e:
            self._process.wait()
            message = self._encode_log()
            self.abort()
            raise VideoError(f"{self.path}: ffmpeg stopped at frame {self.frames_written}: {message}") from e
        self.frames_written += 1

    @property
    def video_seconds(self) -> float:
        return self.frames_written / self.fps

    def _encode_log(self) -> str:
        self._stderr.seek(0)
        return _last_lines(self._stderr.read().decode(errors="replace"))

    def close(self) -> Path:
        """Finish encoding, mux the audio and move the file into place. Returns the path.

        Raises:
            InputError: no frames were written, or the audio's duration is off by more than the tolerance.
            VideoError: ffmpeg failed.
        """
        if self._closed:
            return self.path
        try:
            self._stdin.close()
            code = self._process.wait()
            if code != 0:
                raise VideoError(f"{self.path}: ffmpeg encoding failed (exit {code}): {self._encode_log()}")
            if self.frames_written == 0:
                raise InputError(self.path, "frame count", expected=">= 1 frame", actual="0 frames")
            if self._audio_path is None:
                os.replace(self._video_path, self.path)
            else:
                self._mux_audio()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._stderr.close()
        self._tmpdir.cleanup()
        return self.path

    def _mux_audio(self) -> None:
        assert self.audio_seconds is not None
        mismatch = abs(self.audio_seconds - self.video_seconds)
        if mismatch > self.max_audio_mismatch_s:
            raise InputError(self.path, "audio duration",
                             expected=f"{self.video_seconds:.3f} s ({self.frames_written} frames at {self.fps} fps) "
                                      f"within {self.max_audio_mismatch_s} s",
                             actual=f"{self.audio_seconds:.3f} s")
        muxed = Path(self._tmpdir.name) / "muxed.mp4"
        seconds = f"{self.video_seconds:.6f}"
        # apad + -t make the audio exactly as long as the video (silence added or the tail cut); 48 kHz stereo-or-
        # mono AAC-LC is what every browser decodes.
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                   "-i", str(self._video_path), "-i", str(self._audio_path),
                   "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                   "-af", f"apad=whole_dur={seconds}", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
                   "-t", seconds, "-movflags", "+faststart", "-f", "mp4", str(muxed)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            raise VideoError(f"{self.path}: muxing the audio failed (exit {result.returncode}): "
                             f"{_last_lines(result.stderr.decode(errors='replace'))}")
        os.replace(muxed, self.path)

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary files; nothing is written to ``path``."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            self._stdin.close()
        self._closed = True
        self._stderr.close()
        self._tmpdir.cleanup()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: int = FPS, audio: AudioSource | None = None,
              crf: int = 20, preset: str = "veryfast") -> Path:
    """Write an iterable of (H, W, 3) uint8 frames (a generator keeps memory bounded) to an MP4; see
    ``Mp4Writer``. The size is taken from the first frame.

    Raises:
        InputError: no frames, frames of differing size, or see ``Mp4Writer``.
    """
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise InputError(path, "frame count", expected=">= 1 frame", actual="0 frames")
    with Mp4Writer(path, width_px=first.shape[1], height_px=first.shape[0], fps=fps, audio=audio, crf=crf,
                   preset=preset) as video:
        video.write(first)
        for frame in iterator:
            video.write(frame)
    return Path(path)


@dataclass(frozen=True)
class MediaInfo:
    """What a decoded media file holds.

    Attributes:
        video_frames: number of decoded video frames (0 without video).
        video_seconds: video stream duration (last frame's end - first frame's start).
        audio_seconds: audio stream duration, ``None`` without audio.
        width_px, height_px: video frame size.
        fps: frame rate from the stream's time base.
        video_codec, pix_fmt, audio_codec: as ffmpeg names them (``"h264"``, ``"yuv420p"``, ``"aac"``).
        audio_sample_rate_hz: ``None`` without audio.
        faststart: the MP4 index (``moov``) comes before the media data (``mdat``), as streaming playback needs.
    """

    video_frames: int
    video_seconds: float
    audio_seconds: float | None
    width_px: int
    height_px: int
    fps: float
    video_codec: str | None
    pix_fmt: str | None
    audio_codec: str | None
    audio_sample_rate_hz: int | None
    faststart: bool


_VIDEO_STREAM = re.compile(r"Stream #0:\d+.*?: Video: (\w+).*?, (\w+)(?:\(.*?\))?, (\d+)x(\d+)")
_AUDIO_STREAM = re.compile(r"Stream #0:\d+.*?: Audio: (\w+).*?, (\d+) Hz")


def _top_level_boxes(path: Path) -> list[str]:
    """Names of the top-level boxes of an MP4 file, in order."""
    names = []
    size_total = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size_total:
            f.seek(offset)
            header = f.read(16)
            size = int.from_bytes(header[:4], "big")
            names.append(header[4:8].decode("latin-1"))
            if size == 1:  # 64-bit size follows the name
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # the box runs to the end of the file
                break
            if size < 8:
                break
            offset += size
    return names


def probe_media(path: str | Path) -> MediaInfo:
    """Decode a media file fully with ffmpeg and measure its streams.

    Raises:
        InputError: the file does not exist.
        VideoError: ffmpeg cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "media file", expected="an existing file", actual="missing")
    # framecrc prints each decoded frame's timestamp and duration in its stream's time base: exact durations.
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0", "-f",
                             "framecrc", "-"], capture_output=True, check=False)
    log = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise VideoError(f"{path}: ffmpeg could not decode the file: {_last_lines(log)}")
    time_base: dict[int, Fraction] = {}
    kind: dict[int, str] = {}
    first: dict[int, int] = {}
    end: dict[int, int] = {}
    count: dict[int, int] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("#tb "):
            key, value = line[4:].split(":")
            time_base[int(key)] = Fraction(value.strip())
        elif line.startswith("#media_type "):
            key, value = line[len("#media_type "):].split(":")
            kind[int(key)] = value.strip()
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            index, pts, duration = int(fields[0]), int(fields[2]), int(fields[3])
            first[index] = min(first.get(index, pts), pts)
            end[index] = max(end.get(index, pts + duration), pts + duration)
            count[index] = count.get(index, 0) + 1

    def seconds(media: str) -> tuple[float | None, int]:
        for index, k in kind.items():
            if k == media and index in count:
                return float((end[index] - first[index]) * time_base[index]), count[index]
        return None, 0

    video_seconds, video_frames = seconds("video")
    audio_seconds, _ = seconds("audio")
    video = _VIDEO_STREAM.search(log)
    audio = _AUDIO_STREAM.search(log)
    fps = next((1 / float(time_base[i]) for i, k in kind.items() if k == "video"), 0.0)
    boxes = _top_level_boxes(path) if path.suffix.lower() in (".mp4", ".m4a", ".mov") else []
    faststart = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    return MediaInfo(video_frames=video_frames, video_seconds=video_seconds or 0.0, audio_seconds=audio_seconds,
                     width_px=int(video.group(3)) if video else 0, height_px=int(video.group(4)) if video else 0,
                     fps=fps, video_codec=video.group(1) if video else None, pix_fmt=video.group(2) if video else None,
                     audio_codec=audio.group(1) if audio else None,
                     audio_sample_rate_hz=int(audio.group(2)) if audio else None, faststart=faststart)


def read_video_frames(path: str | Path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames one at a time as (H, W, 3) uint8 RGB (memory bounded).

    Raises:
        InputError: the file does not exist.
        VideoError: ffmpeg cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "video file", expected="an existing file", actual="missing")
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            check=False).stderr.decode(errors="replace")
    video = _VIDEO_STREAM.search(header)
    if video is None:
        raise VideoError(f"{path}: no video stream: {_last_lines(header)}")
    width, height = int(video.group(3)), int(video.group(4))
    frame_bytes = width * height * 3
    process = subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                                "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    n = 0
    try:
        while max_frames is None or n < max_frames:
            data = process.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
            n += 1
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate()
    if n == 0:
        raise VideoError(f"{path}: no frame could be decoded: {_last_lines(err.decode(errors='replace'))}")
