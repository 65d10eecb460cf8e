"""The ``meshtalk`` command line: one library call per command.

Known errors print one line on stderr and exit with status 1; set ``MESHTALK_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="meshtalk",
    help="Train, evaluate and run the MeshTalk model on facedata stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    store: Annotated[Path | None, typer.Option("--store", help="facedata store to train on.")] = None,
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
    config_file: Annotated[Path | None, typer.Option("--config", help="A JSON file of config values.")] = None,
    assignments: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config value, KEY=VALUE (JSON values; model.* and recipe.* for nested ones).")] = None,
) -> None:
    """Train MeshTalk stage 1 or 2 on a store; resumable, with collapse monitors (docs/training.md)."""
    import json

    from meshtalk.train import main_entry, merge, parse_assignments

    values: dict = json.loads(config_file.read_text()) if config_file is not None else {}
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
def evaluate(
    store: Annotated[Path, typer.Option("--store", help="facedata store.")],
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
) -> None:
    """Metrics of reconstruction, audio-only animation and the template baseline on whole sentences."""
    from meshtalk.evaluate import EvaluateConfig, Regions, print_table, write_result
    from meshtalk.evaluate import evaluate as run_evaluate

    name, _, subset = split.rpartition("/")
    config = EvaluateConfig(store=str(store), checkpoint=str(checkpoint), split=name or "sentence", subset=subset,
                            samples=samples, seed=seed, smoothing=smoothing, device=device,
                            max_sequences=max_sequences,
                            regions=Regions(lips_mask, lips_threshold, upper_mask, upper_threshold))
    result = run_evaluate(config)
    print_table(result)
    path = write_result(result, out or checkpoint.with_name(f"{checkpoint.stem}.eval-{name or 'sentence'}-"
                                                            f"{subset}.json"))
    typer.echo(f"wrote {path}")


def main() -> None:
    from facedata.errors import FacedataError

    try:
        app()
    except FacedataError as e:
        if os.environ.get("MESHTALK_DEBUG"):
            raise
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
