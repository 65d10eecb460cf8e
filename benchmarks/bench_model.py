"""Speed of the MeshTalk model: samplers, training steps, parameter counts.

    .venv/bin/python benchmarks/bench_model.py [--quick] [--threads 2] [--device cpu]

Prints, in one run:
- frames/s of the fast sampler (the default: speculative for one sequence, see meshtalk/sampling/), of its
  waves alone and of the reference-order loop (H = 16, C = 128, 126 frames, one sequence) and their ratios, with
  the labels checked identical for the same noise; also against the reference release's 9.9 s for 126 frames on
  2 CPU threads (../shared/spec/measured-here.md); the first call's time, which includes compiling the draft;
- time and peak memory of one stage-1 and one stage-2 training step (forward + backward + Adam, B = 8,
  T = 32, the released configuration at V = 6172), each measured in a fresh process;
- parameter counts per module against the spec.
Times are the best of several runs (other work on the machine only ever slows a run down). ``--quick`` runs the
reference loop on the first 24 frames (past the 20-frame receptive field) and fewer repetitions;
``--sampling-only`` stops after the sampler. The last line (``RESULT ...``) sums up the sampler with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from meshtalk.config import MeshTalkConfig
from meshtalk.model import ContextModel, MeshTalk
from meshtalk.objectives import stage1_losses, stage2_losses
from meshtalk.sampling import SamplerStats, draw_sampling_noise, sample_fast, sample_reference

FRAMES = 126
REFERENCE_RELEASE_SECONDS = 9.9  # the released code, 126 frames, 2 CPU threads (measured-here.md)
SPEC_COUNTS = {"audio_encoder": 560_128, "expression_encoder": 4_921_856, "fusion": 657_920, "encoder": 6_139_904,
               "decoder": 19_869_608, "context": 17_713_152, "total": 43_722_664}


def best_time(fn, repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_sampling(quick: bool, device: str) -> None:
    print(f"## Sampling: H = 16, C = 128, {FRAMES} frames, one sequence ({torch.get_num_threads()} thread(s))")
    torch.manual_seed(0)
    context = ContextModel(MeshTalkConfig.preset("meshtalk")).to(device).eval()
    audio_code = torch.randn(1, FRAMES, 128, device=device)
    noise = draw_sampling_noise(1, FRAMES, 16, 128, generator=torch.Generator().manual_seed(1)).to(device)
    start = time.perf_counter()
    stats = SamplerStats()
    fast = sample_fast(context, audio_code, noise=noise, stats=stats)  # warm-up (compiles the draft), and the labels
    first_s = time.perf_counter() - start
    fast_s = best_time(lambda: sample_fast(context, audio_code, noise=noise), 5 if quick else 7)
    fast_cpu_s = min(_cpu_time(lambda: sample_fast(context, audio_code, noise=noise)) for _ in range(3))
    waves = sample_fast(context, audio_code, noise=noise, draft="none")
    waves_s = best_time(lambda: sample_fast(context, audio_code, noise=noise, draft="none"), 2 if quick else 3)
    n = 24 if quick else FRAMES
    start = time.perf_counter()
    reference = sample_reference(context, audio_code[:, :n], noise=noise[:, :n])
    reference_s = (time.perf_counter() - start) * FRAMES / n
    print(f"fast sampler (default, {stats.path}): {FRAMES / fast_s:8.1f} frames/s ({fast_s:.3f} s, "
          f"{FRAMES / fast_s / 30:.1f}x real time; CPU time {FRAMES / fast_cpu_s:.1f} frames/s; first call "
          f"{first_s:.1f} s with the draft's compilation)")
    print(f"  exact checks: {stats.checked_frames} frames in {stats.checks} passes for {stats.drafted_frames} drafted; "
          f"{stats.corrections} corrections, {stats.redrafts} redrafts")
    print(f"fast sampler, waves only (draft=\"none\"): {FRAMES / waves_s:8.1f} frames/s ({waves_s:.3f} s)")
    print(f"reference-order loop    : {FRAMES / reference_s:8.1f} frames/s ({reference_s:.1f} s"
          f"{f', extrapolated from {n} frames' if n < FRAMES else ''})")
    print(f"ratio fast / reference-order loop: {reference_s / fast_s:.0f}x (waves only {reference_s / waves_s:.0f}x); "
          f"fast / reference release ({REFERENCE_RELEASE_SECONDS} s): {REFERENCE_RELEASE_SECONDS / fast_s:.0f}x")
    same = torch.equal(reference.labels, fast.labels[:, :n]) and torch.equal(waves.labels, fast.labels)
    print(f"identical labels for identical noise ({n} frames x 16 heads, fast = waves = reference-order loop; "
          f"{FRAMES} frames fast = waves): {'yes' if same else 'NO'}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = best_time(lambda: sample_fast(context, audio_code, noise=noise), 3 if quick else 5)
    torch.set_num_threads(threads)
    print(f"fast sampler, 1 thread  : {FRAMES / seconds:8.1f} frames/s")

    inclusive = ContextModel(MeshTalkConfig.preset("meshtalk", context_mask="first-strict")).to(device).eval()
    sample_fast(inclusive, audio_code, noise=noise)
    seconds = best_time(lambda: sample_fast(inclusive, audio_code, noise=noise), 2 if quick else 3)
    print(f"fast sampler, first-strict mask: {FRAMES / seconds:8.1f} frames/s")
    for batch in (4, 8):
        codes = torch.randn(batch, FRAMES, 128, device=device)
        draws = draw_sampling_noise(batch, FRAMES, 16, 128, generator=torch.Generator().manual_seed(2)).to(device)
        seconds = best_time(lambda: sample_fast(context, codes, noise=draws), 2 if quick else 3)  # noqa: B023
        print(f"fast sampler, {batch} sequences at once: {batch * FRAMES / seconds:8.1f} frames/s in total")
    return FRAMES / fast_s, reference_s / fast_s, same


def train_step(stage: int, frames: int, device: str, repeats: int) -> dict:
    """One stage in this process: the best step time and the peak memory."""
    torch.manual_seed(0)
    config = MeshTalkConfig.preset("meshtalk")
    model = MeshTalk(config).to(device).train()
    B, V = 8, config.n_vertices
    template = 10 * torch.randn(B, V, 3, device=device)
    batch = {"mel": torch.randn(B, frames, 80, 101, device=device) - 5,
             "vertices": template[:, None] + torch.randn(B, frames, V, 3, device=device), "template": template,
             "mouth": torch.rand(V, device=device), "upper_face": torch.rand(V, device=device),
             "eyelid": (torch.rand(V, device=device) < 0.01).float()}
    if stage == 1:
        groups = [{"params": model.encoder.parameters(), "weight_decay": 0.0},
                  {"params": model.decoder.parameters(), "weight_decay": 1e-3}]
        forward = stage1_losses
    else:
        model.encoder.eval()
        groups = [{"params": model.context.parameters()}]
        forward = stage2_losses
    optimizer = torch.optim.Adam(groups, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward(model, batch).total.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up: Adam's state, allocator
    seconds = best_time(step, repeats)
    cpu_seconds = min(_cpu_time(step) for _ in range(repeats))
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"stage": stage, "frames": frames, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak}


def _cpu_time(fn) -> float:
    """CPU seconds of this process (all its threads) spent in one call: other jobs on the machine do not count."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_training(quick: bool, device: str, threads: int) -> None:
    memory = "peak allocated on the GPU" if device.startswith("cuda") else "peak RSS of the process"
    print(f"\n## Training step: forward + backward + Adam, B = 8, released config (V = 6172), {memory}")
    runs = [(1, 32), (2, 32), (2, 64)]
    for stage, frames in runs:
        command = [sys.executable, __file__, "--train-step", str(stage), "--frames", str(frames), "--device", device,
                   "--threads", str(threads), "--repeats", "2" if quick else "4"]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"stage {stage}, T = {frames:2d}: {result['seconds']:.2f} s/step (CPU time "
              f"{result['cpu_seconds']:.2f} s), {result['peak_mib']:,.0f} MiB")
    print("(the reference code, measured here: stage 1 at T = 32 about 1.6 s, stage 2 at T = 64 about 2.7 s, "
          "peak RSS 3.0 GB)")


def bench_counts() -> None:
    print("\n## Parameter counts of the released config (V = 6172) against the spec")
    with torch.device("meta"):
        counts = MeshTalk(MeshTalkConfig.preset("meshtalk")).parameter_counts()
    for name, expected in SPEC_COUNTS.items():
        mark = "ok" if counts[name] == expected else f"DIFFERS (spec {expected:,})"
        print(f"{name:20s} {counts[name]:>12,}  {mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, a shorter reference loop")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--sampling-only", action="store_true", help="only the sampler section")
    parser.add_argument("--train-step", type=int, choices=(1, 2), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_step:
        print(json.dumps(train_step(args.train_step, args.frames, args.device, args.repeats)))
        return
    print(f"torch {torch.__version__}, {args.device}, load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    frames_per_s, ratio, same = bench_sampling(args.quick, args.device)
    if not args.sampling_only:
        bench_training(args.quick, args.device, args.threads)
        bench_counts()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average after: {load}")
    print(f"RESULT fast sampler, one sequence of the released config: {frames_per_s:.0f} frames/s "
          f"({frames_per_s / 30:.1f}x real time; target 600), {ratio:.0f}x the reference-order loop, labels "
          f"identical: {'yes' if same else 'NO'}; load average {load}")


if __name__ == "__main__":
    main()
