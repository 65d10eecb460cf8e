"""The GPU path, measured: training steps of both stages, the sampler, ``meshtalk animate``, peak GPU memory.

    .venv/bin/python benchmarks/bench_gpu.py                    # on a machine with CUDA, about 2-4 minutes
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --tiny   # the same code at toy sizes, anywhere

Prints, for the released configuration (H = 16, C = 128, V = 6172, random weights: speed does not depend on the
values) on ``--device``:
- training steps/s, forward + backward + Adam, B = 8: stage 1 at T = 32 and stage 2 at T = 64, in float32 and
  under bf16 autocast (``meshtalk train --bf16``), with the peak GPU memory of each;
- sampler frames/s: one sequence of 126 frames, and 16 segments of 140 frames side by side (``meshtalk
  animate``'s default), with the labels' agreement with the CPU sampler for the one sequence (float rounding on
  the GPU may differ from the CPU's, so a label can differ at a near tie);
- ``meshtalk animate`` (``animate_file``) of 60 s of synthetic 48 kHz speech: the real-time factor (audio to
  meshes, as ``bench_animate.py`` counts it) and its stages, the second call of the process;
- a ``RESULT`` line.
Everything is generated here (random weights, synthetic speech, an ellipsoid face); no network, nothing
installed. Each part stops timing after ``--budget-seconds`` / 4 so that the whole run stays under 5 minutes. On a
machine without CUDA, ``--device cuda`` exits with status 2 and one line saying so.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_animate's synthetic speech

from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk
from meshtalk.objectives import stage1_losses, stage2_losses
from meshtalk.sampling import draw_sampling_noise, sample_fast

TINY = {"n_vertices": 64, "heads": 4, "classes": 8, "context_channels_per_head": 8, "decoder_hidden": (32, 16, 8),
        "expression_hidden": 32, "fusion_hidden": 32}


class Device:
    """Synchronisation and peak memory of the device being measured."""

    def __init__(self, name: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float:
        """Peak allocated GPU memory since ``reset_peak``; on the CPU the process's peak RSS."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @property
    def memory_name(self) -> str:
        return "peak GPU memory allocated" if self.cuda else "peak RSS of the process"


def timed_rate(fn: Callable[[], None], dev: Device, *, warmup: int, limit_s: float, max_runs: int) -> tuple[float, int]:
    """Calls per second of ``fn`` after ``warmup`` calls, timing up to ``max_runs`` calls or ``limit_s``."""
    for _ in range(warmup):
        fn()
    dev.sync()
    start = time.perf_counter()
    runs = 0
    while runs < max_runs and (runs == 0 or time.perf_counter() - start < limit_s):
        fn()
        runs += 1
    dev.sync()
    return runs / (time.perf_counter() - start), runs


def training_batch(config: MeshTalkConfig, frames: int, device: torch.device, batch: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    V = config.n_vertices
    template = 10 * torch.randn(batch, V, 3, generator=g)
    values = {"mel": torch.randn(batch, frames, config.n_mels, 101, generator=g) - 5,
              "vertices": template[:, None] + torch.randn(batch, frames, V, 3, generator=g), "template": template,
              "mouth": torch.rand(V, generator=g), "upper_face": torch.rand(V, generator=g),
              "eyelid": (torch.rand(V, generator=g) < 0.01).float()}
    return {k: v.to(device) for k, v in values.items()}


def bench_training(config: MeshTalkConfig, dev: Device, limit_s: float, steps: int) -> dict:
    print(f"## Training steps, B = 8, forward + backward + Adam ({dev.memory_name})")
    rates = {}
    for stage, frames in ((1, 32), (2, 64)):
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = MeshTalk(config).to(dev.device).train()
            batch = training_batch(config, frames, dev.device)
            if stage == 1:
                params, forward = [*model.encoder.parameters(), *model.decoder.parameters()], stage1_losses
            else:
                model.encoder.eval()
                params, forward = list(model.context.parameters()), stage2_losses
            step = training_step(model, forward, torch.optim.Adam(params, lr=1e-4), batch,
                                 torch.autocast(device_type=dev.device.type, dtype=torch.bfloat16, enabled=bf16))
            dev.reset_peak()
            rate, runs = timed_rate(step, dev, warmup=2, limit_s=limit_s / 4, max_runs=steps)
            name = f"stage {stage}, T = {frames}, {'bf16 autocast' if bf16 else 'float32'}"
            rates[name] = rate
            print(f"{name:32s}: {rate:8.2f} steps/s ({1 / rate:.3f} s/step, {runs} steps), "
                  f"{dev.peak_mib():,.0f} MiB")
    return rates


def training_step(model: MeshTalk, forward: Callable, optimizer: torch.optim.Optimizer, batch: dict,
                  autocast: torch.autocast) -> Callable[[], None]:
    """One step as ``meshtalk train`` takes it: the forward under autocast, backward and update outside."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward(model, batch).total
        loss.backward()
        optimizer.step()

    return step


def bench_sampler(config: MeshTalkConfig, dev: Device, limit_s: float) -> dict:
    print("## Sampler (sample_fast)")
    torch.manual_seed(0)
    context = MeshTalk(config).context.to(dev.device).eval()
    H, C, A = config.heads, config.classes, config.audio_dim
    code = torch.randn(1, 126, A)
    noise = draw_sampling_noise(1, 126, H, C, generator=torch.Generator().manual_seed(1))
    on_device = sample_fast(context, code.to(dev.device), noise=noise.to(dev.device)).labels.cpu()
    dev.reset_peak()
    rate, _ = timed_rate(lambda: sample_fast(context, code.to(dev.device), noise=noise.to(dev.device)), dev,
                         warmup=1, limit_s=limit_s / 2, max_runs=5)
    one = rate * 126
    cpu_context = MeshTalk(config).context.eval()
    cpu_context.load_state_dict(context.state_dict())
    agree = float((sample_fast(cpu_context, code, noise=noise).labels == on_device).float().mean())
    print(f"one sequence, 126 frames   : {one:10.1f} frames/s ({one / 30:.1f}x real time), "
          f"{dev.peak_mib():,.0f} MiB; labels equal to the CPU sampler's: {100 * agree:.2f} %")
    codes = torch.randn(16, 140, A, device=dev.device)
    draws = draw_sampling_noise(16, 140, H, C, generator=torch.Generator().manual_seed(2)).to(dev.device)
    dev.reset_peak()
    rate, _ = timed_rate(lambda: sample_fast(context, codes, noise=draws), dev, warmup=1, limit_s=limit_s / 2,
                         max_runs=5)
    batch = rate * 16 * 140
    print(f"16 segments of 140 frames  : {batch:10.1f} frames/s in total, {dev.peak_mib():,.0f} MiB")
    return {"one": one, "segments": batch, "agree": agree}


def bench_animate(config: MeshTalkConfig, dev: Device, seconds: float) -> dict:
    import soundfile
    from bench_animate import speech

    from facedata.meshio import write_obj
    from facedata.render.shapes import ellipsoid_mesh
    from meshtalk.animate import animate_file
    from meshtalk.checkpoint import save_checkpoint

    print(f"## meshtalk animate: {seconds:g} s of synthetic 48 kHz speech, segments of 4 s")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        root = Path(tmp)
        if config.n_vertices == 6172:  # bench_animate's face: 51 x 121 + 1
            vertices, faces = ellipsoid_mesh((75.0, 100.0, 85.0), rings=51, segments=121, cap_deg=110)
        else:
            vertices = 50 * np.random.default_rng(0).normal(size=(config.n_vertices, 3)).astype(np.float32)
            faces = np.array([[0, 1, 2]], np.int32)
        write_obj(root / "face.obj", vertices, faces)
        torch.manual_seed(0)
        model = MeshTalk(config)
        model.set_vertex_statistics(torch.from_numpy(np.asarray(vertices, np.float32)),
                                    torch.ones(len(vertices), 3))
        save_checkpoint(root / "model.pt", model)
        soundfile.write(root / "speech.wav", speech(seconds, 48_000), 48_000, subtype="PCM_16")
        results = []
        for _ in range(2):  # the first call pays one-off costs (kernels, resampy's compilation)
            dev.reset_peak()
            result = animate_file(root / "model.pt", root / "speech.wav", root / "out", template=root / "face.obj",
                                  smoothing=False, segment_frames=120, video=None, device=str(dev.device))
            results.append(result)
        steady = results[-1]
        stages = ", ".join(f"{k} {steady.times.get(k, 0.0):.2f}" for k in ("read audio", "audio codes", "labels",
                                                                            "decode"))
        print(f"real-time factor            : {steady.realtime_factor:8.1f}x (first call "
              f"{results[0].realtime_factor:.1f}x); stages (s): {stages}; {dev.peak_mib():,.0f} MiB")
    return {"rtf": steady.realtime_factor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:i] (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (checks the script, measures nothing)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per case at most (30)")
    parser.add_argument("--animate-seconds", type=float, default=60.0, help="seconds of speech to animate (60)")
    parser.add_argument("--budget-seconds", type=float, default=240.0, help="time for the timed loops (240)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a "
              "machine with a GPU, or check the script here with --device cpu --tiny", file=sys.stderr)
        return 2
    dev = Device(args.device)
    config = MeshTalkConfig.preset("meshtalk", **(TINY if args.tiny else {}))
    name = torch.cuda.get_device_name(dev.device) if dev.cuda else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {name}; config {'tiny' if args.tiny else 'released'} (H = {config.heads}, "
          f"C = {config.classes}, V = {config.n_vertices}); load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    training = bench_training(config, dev, args.budget_seconds, args.steps)
    sampler = bench_sampler(config, dev, args.budget_seconds / 4)
    animate = bench_animate(config, dev, args.animate_seconds)
    s1 = training["stage 1, T = 32, float32"]
    s2 = training["stage 2, T = 64, float32"]
    print(f"RESULT {dev.device}: stage 1 {s1:.2f} steps/s, stage 2 {s2:.2f} steps/s (B = 8, float32; bf16 "
          f"{training['stage 1, T = 32, bf16 autocast']:.2f} and {training['stage 2, T = 64, bf16 autocast']:.2f}); "
          f"sampler {sampler['one']:.0f} frames/s for one sequence, {sampler['segments']:.0f} for 16 segments; "
          f"animate {animate['rtf']:.1f}x real time; {time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
