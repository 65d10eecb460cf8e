"""The ``meshtalk`` command line: one library call per command.

Known errors print one line on stderr and exit with status 1; set ``MESHTALK_DEBUG=1`` to see the traceback.
Warnings about suspect input (``meshtalk.checkpoint.InputWarning``) print one line each and the command goes on.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="meshtalk",
    help="Train, evaluate and run the MeshTalk model on facedata stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Kept here rather than imported from meshtalk.frontend: the CLI imports torch only when a command runs.
AUDIO_FRONTEND_HELP = ("utterance: the store's features (models trained here); reference: the release's "
                       "one-second windows at 533-sample steps and its frame count (imported weights, to "
                       "reproduce the release).")


@app.command()
def version() -> None:
    """Print the package version."""
    from meshtalk import __version__

    typer.echo(__version__)


@app.command("import-reference")
def import_reference(
    directory: Annotated[Path, typer.Argument(help="Directory of encoder.pkl, vertex_unet.pkl, context_model.pkl.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (this project's format).")],
) -> None:
    """Convert the released MeshTalk weights (reference state dicts) into one checkpoint."""
    from meshtalk.reference import import_reference as convert

    model = convert(directory, out)
    c = model.config
    typer.echo(f"wrote {out}: H={c.heads} C={c.classes} V={c.n_vertices}, "
               f"{model.parameter_counts()['total']:,} parameters")



@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory (config, log, checkpoints).")],
    store: Annotated[str | None, typer.Option("--store", help="facedata store (directory or s3:// URL).")] = None,
    stage: Annotated[int | None, typer.Option("--stage", min=1, max=2, help="1: encoder + decoder; 2: context "
                                              "model on a stage-1 checkpoint's codes.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from RUN/last.pt.")] = False,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="Start from this checkpoint (fine-tuning; "
                                                   "stage 2: the stage-1 checkpoint).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (stage 1: 50000, stage 2: 15000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per step (8).")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per window (stage 1: 32, stage 2: 64).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (1e-4).")] = None,
    split: Annotated[str | None, typer.Option(help="Named split of `facedata split` (sentence).")] = None,
    preset: Annotated[str | None, typer.Option(help="Model preset for a new model (meshtalk).")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes (2).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda[:i].")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast.")] = None,
    compile_model: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile.")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm to this value.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the run (0).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints (1000).")] = None,
    val_every: Annotated[int | None, typer.Option(help="Steps between validations (1000; 0: none).")] = None,
    monitor_every: Annotated[int | None, typer.Option(help="Steps between collapse monitors (100).")] = None,
    recipe: Annotated[str | None, typer.Option(help="A named recipe whose values come first: reference (the "
                                               "default), fast (lips) or expressive (lips and upper face; "
                                               "docs/training.md, \"Recipe\").")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="A JSON file of config values.")] = None,
    assignments: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config value, KEY=VALUE (JSON values; model.* and recipe.* for nested ones).")] = None,
) -> None:
    """Train MeshTalk stage 1 or 2 on a store; resumable, with collapse monitors (docs/training.md)."""
    import json

    from meshtalk.train import RECIPES, main_entry, merge, parse_assignments

    if recipe is not None and recipe not in RECIPES:
        raise typer.BadParameter(f"unknown recipe {recipe!r} (expected one of {', '.join(RECIPES)})",
                                 param_hint="--recipe")
    values: dict = RECIPES[recipe] if recipe is not None else {}
    if config_file is not None:
        values = merge(values, json.loads(config_file.read_text()))
    given = {"store": store, "stage": stage, "init_from": init_from, "steps": steps, "batch_size": batch_size,
             "frames": frames, "lr": lr, "split": split, "model_preset": preset, "workers": workers,
             "device": device, "bf16": bf16, "compile": compile_model, "grad_clip": grad_clip, "seed": seed,
             "checkpoint_every": checkpoint_every, "val_every": val_every, "monitor_every": monitor_every}
    values = merge(values, {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None})
    values = merge(values, parse_assignments(assignments or []))
    values["out"] = str(out)
    result = main_entry(values, resume=resume)
    if result.stopped_by is not None:
        typer.echo(f"stopped at step {result.step}; checkpoint {result.checkpoint} (continue with "
                   f"`meshtalk train --out {result.run} --resume`)", err=True)
        raise typer.Exit(128 + result.stopped_by)
    typer.echo(f"step {result.step}: {result.checkpoint}")


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of `meshtalk train` (stage 1 and/or 2).")],
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
    title: Annotated[str | None, typer.Option(help="Figure title (default: the run paths).")] = None,
) -> None:
    """The losses, collapse monitors, pre-training and validation curves of training runs in one PNG."""
    from meshtalk.plots import plot_runs

    for run in runs:
        if not (run / "log.jsonl").is_file():
            raise typer.BadParameter(f"{run}: no log.jsonl (expected a run directory of `meshtalk train`)",
                                     param_hint="RUNS")
    typer.echo(f"wrote {plot_runs(runs, out, title=title)}")


@app.command()
def evaluate(
    store: Annotated[str, typer.Option("--store", help="facedata store (directory or s3:// URL).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint (e.g. RUN/last.pt).")],
    split: Annotated[str, typer.Option(help="SUBSET of the sentence split, or NAME/SUBSET (identity/test).")
                     ] = "test",
    out: Annotated[Path | None, typer.Option(help="JSON result (default: beside the checkpoint).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Context-model samples per sentence.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    smoothing: Annotated[bool, typer.Option("--smoothing", help="The reference's forehead/neck smoothing.")
                         ] = False,
    lips_mask: Annotated[str, typer.Option(help="Mask of the lip set.")] = "mouth",
    lips_threshold: Annotated[float, typer.Option(help="Lip set: mask weight above this.")] = 0.5,
    upper_mask: Annotated[str, typer.Option(help="Mask of the upper-face set.")] = "forehead",
    upper_threshold: Annotated[float, typer.Option(help="Upper-face set: mask weight above this.")] = 0.1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:i].")] = "auto",
    max_sequences: Annotated[int | None, typer.Option(help="Evaluate only the first N sentences.")] = None,
    audio_frontend: Annotated[str, typer.Option(help=AUDIO_FRONTEND_HELP)] = "utterance",
) -> None:
    """Metrics of reconstruction, audio-only animation and the template baseline on whole sentences."""
    from meshtalk.evaluate import EvaluateConfig, Regions, print_table, write_result
    from meshtalk.evaluate import evaluate as run_evaluate

    name, _, subset = split.rpartition("/")
    config = EvaluateConfig(store=str(store), checkpoint=str(checkpoint), split=name or "sentence", subset=subset,
                            samples=samples, seed=seed, smoothing=smoothing, device=device,
                            max_sequences=max_sequences, audio_frontend=audio_frontend,
                            regions=Regions(lips_mask, lips_threshold, upper_mask, upper_threshold))
    result = run_evaluate(config)
    print_table(result)
    path = write_result(result, out or checkpoint.with_name(f"{checkpoint.stem}.eval-{name or 'sentence'}-"
                                                            f"{subset}.json"))
    typer.echo(f"wrote {path}")


@app.command()
def animate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint (meshtalk train, import-reference).")],
    audio: Annotated[Path, typer.Option("--audio", help="Speech, a WAV of any rate, depth, channels and length.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: animation.npz, animation.mp4, obj/.")],
    template: Annotated[Path | None, typer.Option("--template", help="Face mesh to animate, OBJ or PLY, mm.")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Store of the template (with --identity) and of "
                                               "the smoothing masks.")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="Identity of --store whose template to use.")
                        ] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="Folder of forehead/neck mask files for the "
                                               "smoothing (default: the store's masks).")] = None,
    smoothing: Annotated[bool, typer.Option("--smoothing/--no-smoothing", help="The reference's temporal smoothing "
                                            "of the forehead, then the neck.")] = True,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="N animations of the same audio: npz "
                                                "vertices (N, T, V, 3), videos side by side.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    argmax: Annotated[bool, typer.Option("--argmax", help="The most likely label at every step (no sampling).")
                      ] = False,
    segment_seconds: Annotated[float, typer.Option(help="Sample segments of this length side by side, each warmed "
                                                   "up on the 20 frames before it; 0: one chain (exact, slower).")
                               ] = 4.0,
    obj: Annotated[bool, typer.Option("--obj", help="Also write one OBJ per frame (Blender, MeshLab).")] = False,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write animation.mp4 (H.264 + AAC).")] = True,
    width: Annotated[int, typer.Option(help="Video width per face, pixels.")] = 640,
    height: Annotated[int, typer.Option(help="Video height, pixels.")] = 480,
    yaw: Annotated[float, typer.Option(help="Camera yaw, degrees (0: front, 90: from the face's left).")] = 0.0,
    pitch: Annotated[float, typer.Option(help="Camera pitch, degrees (positive looks down).")] = 0.0,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads computing on the CPU (default: its cores); "
                                                "each operation runs on one core.")] = None,
    audio_frontend: Annotated[str, typer.Option(help=AUDIO_FRONTEND_HELP)] = "utterance",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:i]: where the model runs.")] = "auto",
    ignore_free_space: Annotated[bool, typer.Option("--ignore-free-space", help="Start even when the outputs' "
                                                    "estimated size exceeds the free disk space.")] = False,
    ignore_template_fit: Annotated[bool, typer.Option("--ignore-template-fit", help="Animate a template far from "
                                                      "the checkpoint's faces (a warning, not a refusal).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print each stage's time and the real-time "
                                          "factor.")] = False,
) -> None:
    """Animate a face with speech: meshes (npz, OBJ) and an MP4 with the audio (docs/animation.md)."""
    from meshtalk.animate import COMPUTE_STAGES, VideoOptions, animate_file

    result = animate_file(
        checkpoint, audio, out, template=template, store=store, identity=identity, masks_dir=masks,
        smoothing=smoothing, samples=samples, seed=seed, argmax=argmax,
        segment_frames=round(segment_seconds * 30) if segment_seconds > 0 else None, obj=obj,
        video=VideoOptions(width_px=width, height_px=height, yaw_deg=yaw, pitch_deg=pitch) if video else None,
        threads=threads, device=device, audio_frontend=audio_frontend, ignore_free_space=ignore_free_space,
        ignore_template_fit=ignore_template_fit,
        progress=typer.echo if verbose else None)
    if verbose:
        for stage, seconds in result.times.items():
            tag = "" if stage in COMPUTE_STAGES else "  (once per process)" if stage == "compile" else "  (output)"
            typer.echo(f"  {stage:<12} {seconds:8.3f} s{tag}")
        typer.echo(f"audio to meshes: {result.audio_seconds:.2f} s of speech in {result.compute_seconds:.2f} s, "
                   f"{result.realtime_factor:.1f}x real time; peak memory {result.peak_rss_mb:.0f} MB")
    typer.echo(f"wrote {result.npz} ({result.n_frames} frames)")
    if result.obj_dir is not None:
        typer.echo(f"wrote {result.obj_dir}/")
    if result.video is not None:
        typer.echo(f"wrote {result.video}")


@app.command()
def render(
    out: Annotated[Path, typer.Option("--out", help="MP4 to write.")],
    store: Annotated[Path | None, typer.Option("--store", help="Store of the sequence.")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="Identity of the sequence.")] = None,
    sequence: Annotated[str | None, typer.Option("--sequence", help="Stored sequence to render.")] = None,
    npz: Annotated[Path | None, typer.Option("--npz", help="An animation file of meshtalk animate (alone: render "
                                             "it; with --compare: the prediction).")] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="Audio of --npz (default: the WAV it was made "
                                               "from).")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Evaluation view of the stored sequence: ground truth "
                                          "| prediction | error heat map.")] = False,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="With --compare: predict with this "
                                                    "checkpoint.")] = None,
    prediction: Annotated[str, typer.Option(help="With --checkpoint: audio (audio only, sampled) or "
                                            "reconstruction (through the encoder).")] = "audio",
    sample: Annotated[int, typer.Option(help="With --npz of several samples: which one (0-based).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the audio-only prediction.")] = 0,
    argmax: Annotated[bool, typer.Option("--argmax", help="Audio-only prediction without sampling.")] = False,
    smoothing: Annotated[bool, typer.Option("--smoothing/--no-smoothing", help="Smooth the audio-only "
                                            "prediction as the reference does.")] = True,
    max_error_mm: Annotated[float, typer.Option(help="Top of the error colour scale, mm.")] = 5.0,
    width: Annotated[int | None, typer.Option(help="Width per face, pixels (640; comparison panels 400).")] = None,
    height: Annotated[int, typer.Option(help="Height, pixels.")] = 480,
    yaw: Annotated[float, typer.Option(help="Camera yaw, degrees (0: front, 90: from the face's left).")] = 0.0,
    pitch: Annotated[float, typer.Option(help="Camera pitch, degrees (positive looks down).")] = 0.0,
    supersample: Annotated[int, typer.Option(min=1, max=4, help="Anti-aliasing factor (slower).")] = 1,
) -> None:
    """Render a stored sequence or an animation to MP4 with its audio, or the evaluation view."""
    from facedata.errors import InputError
    from meshtalk.animate import VideoOptions
    from meshtalk.render import render_comparison, render_sequence, write_animation_video

    stored = (store, identity, sequence)
    if compare:
        if any(v is None for v in stored):
            raise InputError("--compare", "no stored sentence", expected="--store, --identity and --sequence",
                             actual="missing")
        path = render_comparison(store, identity, sequence, out, checkpoint=checkpoint, npz=npz,  # type: ignore
                                 sample=sample, prediction=prediction, seed=seed, argmax=argmax, smoothing=smoothing,
                                 max_error_mm=max_error_mm, panel_width_px=width or 400, panel_height_px=height,
                                 yaw_deg=yaw, pitch_deg=pitch, supersample=supersample)
    else:
        options = VideoOptions(width_px=width or 640, height_px=height, yaw_deg=yaw, pitch_deg=pitch,
                               supersample=supersample)
        if npz is not None and all(v is None for v in stored):
            path = write_animation_video(out, npz, audio=audio, options=options)
        elif npz is None and all(v is not None for v in stored):
            path = render_sequence(store, identity, sequence, out, options=options)  # type: ignore[arg-type]
        else:
            raise InputError("render", "what to render",
                             expected="--store S --identity ID --sequence SEQ, or --npz FILE (and --compare for "
                                      "the evaluation view)", actual="both or neither")
    typer.echo(f"wrote {path}")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
    """The project's own warnings (``meshtalk.checkpoint.InputWarning``: suspect input, with what to do) as one
    line on stderr, like its errors; other warnings as Python shows them."""
    if category.__module__.split(".")[0] in ("meshtalk", "facedata"):
        typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def run() -> None:
    """The installed ``meshtalk`` command: ``main``, then the process ends without the interpreter's teardown."""
    from facedata.files import run_and_exit

    run_and_exit(main)


def main() -> None:
    from facedata.errors import FacedataError

    warnings.showwarning = _one_line_warning
    try:
        app()
    except FacedataError as e:
        if os.environ.get("MESHTALK_DEBUG"):
            raise
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
