"""Speed of ``meshtalk animate``: audio to meshes for the released config, and the MP4 render.

    .venv/bin/python benchmarks/bench_animate.py [--quick] [--threads N]

The released configuration (H = 16, C = 128, V = 6172) with random weights (speed does not depend on the
values), a face-sized 6172-vertex cap as the template with forehead and neck masks, and synthetic voiced speech
written as 48 kHz 16-bit WAVs (Multiface's format) and 16 kHz ones. Each case runs ``animate_file`` in a fresh
process, so the times include what one ``meshtalk animate`` call pays (resampy compiles its kernel on the first
resampling of a process, about 2-3 s); then a second call in the same process gives the steady state.

Prints per case the time of each stage, the real-time factor of audio to meshes (read + resample + features +
sampling + decoding + smoothing; writing files and resampy's one-off compilation excluded, the latter printed on
its own) and peak memory, for:
- a 4 s sentence and a 60 s recording;
- the sampler's two modes: one chain (exact, ``--segment-seconds 0``) and segments of 2 s and 4 s (the default)
  sampled side by side; the ratio between them is the named peer here;
- the MP4 of the 60 s animation (render + encode + mux at 640 x 480), in frames/s.
Other work on the machine slows every number; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = [  # (name, seconds, rate_hz, segment_seconds)
    ("4 s, 48 kHz, chain", 4.0, 48_000, 0.0),
    ("4 s, 48 kHz, segments 4 s", 4.0, 48_000, 4.0),
    ("60 s, 48 kHz, chain", 60.0, 48_000, 0.0),
    ("60 s, 48 kHz, segments 2 s", 60.0, 48_000, 2.0),
    ("60 s, 48 kHz, segments 4 s", 60.0, 48_000, 4.0),
    ("60 s, 16 kHz, segments 4 s", 60.0, 16_000, 4.0),
]
STAGES = ("read audio", "audio codes", "labels", "decode", "smooth")


def speech(seconds: float, rate_hz: int) -> np.ndarray:
    """Voiced speech-like sound: a pitch contour under syllable-rate loudness, (N,) float32."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    pitch = 150 + 30 * np.sin(2 * np.pi * 0.4 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate_hz
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t) + 0.4 * np.sin(2 * np.pi * 0.7 * t), 0, None)
    voice = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase) + 0.03 * rng.normal(size=t.size)
    return (0.2 * envelope * voice).astype(np.float32)


def prepare(root: Path) -> None:
    """The released-size checkpoint, template, masks and WAVs under ``root``."""
    import soundfile
    import torch

    from facedata.meshio import write_obj
    from facedata.render import ellipsoid_mesh
    from meshtalk.checkpoint import save_checkpoint
    from meshtalk.config import MeshTalkConfig
    from meshtalk.model import MeshTalk

    vertices, faces = ellipsoid_mesh((75.0, 100.0, 85.0), rings=51, segments=121, cap_deg=110)
    write_obj(root / "face.obj", vertices, faces)
    masks = root / "masks"
    masks.mkdir()
    y = vertices[:, 1]
    for name, weights in (("forehead", np.clip((y - 30) / 40, 0, 1)), ("neck", np.clip((-50 - y) / 40, 0, 1))):
        (masks / f"{name}.txt").write_text("\n".join(f"{w:.4f}" for w in weights) + "\n")
    torch.manual_seed(0)
    model = MeshTalk(MeshTalkConfig.preset("meshtalk"))
    # Output near the template, so that the video shows a face (random weights otherwise scatter the vertices).
    model.set_vertex_statistics(torch.from_numpy(vertices), torch.full((len(vertices), 3), 1.0))
    save_checkpoint(root / "released.pt", model)
    for seconds in sorted({c[1] for c in CASES}):
        for rate in sorted({c[2] for c in CASES}):
            soundfile.write(root / f"speech_{seconds:g}s_{rate}.wav", speech(seconds, rate), rate, subtype="PCM_16")


def run_case(root: Path, seconds: float, rate_hz: int, segment_seconds: float, threads: int | None,
             video: bool) -> dict:
    """One case in this process, twice: the first call pays one-off costs (resampy's compilation)."""
    from meshtalk.animate import VideoOptions, animate_file

    audio = root / f"speech_{seconds:g}s_{rate_hz}.wav"
    segment = round(segment_seconds * 30) if segment_seconds > 0 else None
    results = []
    for repeat in range(2):
        with_video = video and repeat == 1
        start = time.perf_counter()
        result = animate_file(root / "released.pt", audio, root / f"out-{os.getpid()}", template=root / "face.obj",
                              masks_dir=root / "masks", segment_frames=segment, threads=threads,
                              video=VideoOptions() if with_video else None)
        results.append({"times": result.times, "wall": time.perf_counter() - start, "rtf": result.realtime_factor,
                        "frames": result.n_frames, "seconds": result.audio_seconds, "peak_mb": result.peak_rss_mb})
    return {"first": results[0], "steady": results[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 60 s cases with segments, and no video")
    parser.add_argument("--threads", type=int, help="threads computing (default: the cores, as meshtalk animate)")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--video", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        _, seconds, rate, segment = CASES[args.case]
        print(json.dumps(run_case(Path(args.root), seconds, rate, segment, args.threads, args.video)))
        return

    import torch

    threads = args.threads or len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {threads} thread(s), each operation on one core; "
          "load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("released config: H = 16, C = 128, V = 6172, random weights; real-time factor = seconds of speech per "
          "second of compute, audio to meshes (file writing excluded)\n")
    with tempfile.TemporaryDirectory(prefix="bench-animate-") as tmp:
        root = Path(tmp)
        prepare(root)
        chosen = [i for i, c in enumerate(CASES) if not args.quick or (c[1] == 60 and c[3] > 0)]
        print(f"{'case':28s} {'compile':>7s} {'first call':>10s} {'steady':>7s}   steady stages (s): "
              + ", ".join(STAGES) + "   peak MB")
        steady_rtf = {}
        for i in chosen:
            name, seconds, _, _ = CASES[i]
            video = not args.quick and name == "60 s, 48 kHz, segments 4 s"
            command = [sys.executable, __file__, "--case", str(i), "--root", str(root), "--threads", str(threads)]
            done = subprocess.run(command + (["--video"] if video else []), capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            first, steady = result["first"], result["steady"]
            steady_rtf[name] = steady["rtf"]
            stages = "  ".join(f"{steady['times'].get(s, 0.0):5.2f}" for s in STAGES)
            compile_s = first["times"].get("compile", 0.0)
            print(f"{name:28s} {compile_s:6.1f}s {first['rtf']:9.1f}x {steady['rtf']:6.1f}x   {stages}   "
                  f"{steady['peak_mb']:7.0f}")
            if video:
                render_s = steady["times"]["video"]
                print(f"{'':28s} MP4 of the {seconds:g} s animation, 640 x 480: {steady['frames'] / render_s:.0f} "
                      f"frames/s ({steady['frames'] / 30 / render_s:.1f}x real time, render + encode + mux)")
        chain, fast = steady_rtf.get("60 s, 48 kHz, chain"), steady_rtf.get("60 s, 48 kHz, segments 4 s")
        if chain and fast:
            print(f"\nsegments of 4 s / one chain, 60 s: {fast / chain:.1f}x faster")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average after: {load}")
    low = steady_rtf.get("60 s, 16 kHz, segments 4 s")
    print(f"RESULT meshtalk animate, 60 s of 48 kHz speech, segments of 4 s (the default), {threads} thread(s): "
          f"{fast or float('nan'):.1f}x real time (target 20x); from 16 kHz {low or float('nan'):.1f}x; "
          f"load average {load}")


if __name__ == "__main__":
    main()
