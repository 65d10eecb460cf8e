"""The ``facedata`` command line: one library call per command.

Known errors (bad input, a bad store) print one line on stderr and exit with status 1; set ``FACEDATA_DEBUG=1``
or pass ``--debug`` to see the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from facedata.errors import FacedataError
from facedata.files import run_and_exit

app = typer.Typer(
    name="facedata",
    help="Ingest, curate and inspect speech-driven 3D face animation data (Multiface layout).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG = {"on": bool(os.environ.get("FACEDATA_DEBUG"))}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of known errors.")] = False,
) -> None:
    if debug:
        _DEBUG["on"] = True


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Directory to write the raw tree into (created; must be new or empty).")],
    identities: Annotated[int, typer.Option(min=1, help="Number of identities.")] = 2,
    sentences: Annotated[int, typer.Option(min=1, help="SEN_ sentences per identity.")] = 6,
    seconds: Annotated[float, typer.Option(min=0.5, help="Mean length of a sentence in seconds.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
    faults: Annotated[bool, typer.Option("--faults", help="Add the catalogue of bad inputs.")] = False,
    obj_coords: Annotated[str, typer.Option(help="Coordinates of the OBJ files: local or world.")] = "local",
    obj_every: Annotated[int, typer.Option(min=1, help="Write the OBJ of every N-th frame only (1 = all).")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Processes writing sequences in parallel.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if synth wrote it before.")] = False,
) -> None:
    """Generate a raw tree in the exact Multiface layout: talking faces with speech, blinks and brow raises."""
    from facedata.synth import write_raw_tree

    summary = write_raw_tree(
        out, identities=identities, sentences=sentences, seconds=seconds, seed=seed, faults=faults,
        obj_coords=obj_coords, obj_every=obj_every, workers=workers, overwrite=overwrite,
    )
    typer.echo(summary.describe())


@app.command()
def ingest(
    raw: Annotated[Path, typer.Argument(help="Raw tree: a folder of m--<date>--<time>--<entity>--GHS identities.")],
    store: Annotated[str, typer.Option("--store", help="Store directory or URL (s3://...), created or resumed.")],
    vertices: Annotated[str, typer.Option(help="meshtalk (6172 kept vertices) or full (7306).")] = "meshtalk",
    keep: Annotated[Path | None, typer.Option(help="A keep list (one source vertex index per line).")] = None,
    topology: Annotated[
        Path | None, typer.Option(help="An OBJ in the kept topology whose faces the store uses.")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes at most; fewer when the work is too small to pay for them.")
    ] = max(1, min(4, os.cpu_count() or 1)),
    shard_frames: Annotated[int, typer.Option(min=1, help="Frames per vertex shard file.")] = 256,
    max_audio_mismatch_ms: Annotated[
        float, typer.Option(help="Reject audio whose length differs from its frames' by more than this.")
    ] = 200.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done; write nothing.")] = False,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (tcp://host:8786): run the sequences on that cluster.")
    ] = None,
    ignore_free_space: Annotated[
        bool, typer.Option("--ignore-free-space", help="Start even if the planned bytes exceed the free space.")
    ] = False,
) -> None:
    """Ingest a raw Multiface tree into a sharded Zarr v3 store with Parquet manifests (resumable)."""
    from facedata.ingest import IngestOptions
    from facedata.ingest import ingest as run_ingest
    from facedata.report import print_ingest_report, progress_bar

    options = IngestOptions(vertices=vertices, keep=keep, topology=topology, workers=workers,
                            shard_frames=shard_frames, max_audio_mismatch_ms=max_audio_mismatch_ms,
                            dry_run=dry_run, scheduler=scheduler, ignore_free_space=ignore_free_space)
    with progress_bar("ingest", unit="frames") as update:
        report = run_ingest(raw, store, options, progress=update)
    print_ingest_report(report)


@app.command()
def info(
    store: Annotated[str, typer.Option("--store", help="Store directory or URL (s3://...).")],
) -> None:
    """Summarise a store: format, settings, sequences per identity and kind, rejects, runs."""
    from facedata.report import print_store_summary
    from facedata.store import Store

    print_store_summary(Store(store))


@app.command()
def verify(
    store: Annotated[str, typer.Option("--store", help="Store directory or URL (s3://...).")],
    sources: Annotated[
        bool, typer.Option("--sources", help="Also re-fingerprint the raw files still on disk.")
    ] = False,
) -> None:
    """Check every array against the manifests (shapes, dtypes, NaN, counts, topology, masks, splits)."""
    from facedata.report import progress_bar
    from facedata.verify import verify_store

    with progress_bar("verify", unit="sequences") as update:
        problems = verify_store(store, sources=sources, progress=update)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        typer.echo(str(problem) if problem.severity == "error" else f"note: {problem}")
    if errors:
        typer.secho(f"{len(errors)} problem(s) in {store}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.echo(f"{store}: OK")


@app.command()
def split(
    store: Annotated[str, typer.Option("--store", help="Store directory or URL (s3://...).")],
    seed: Annotated[int, typer.Option(help="Seed of the held-out identities of the identity split.")] = 0,
    holdout_identities: Annotated[
        int | None, typer.Option(help="Held-out identities of the identity split (default: a quarter).")
    ] = None,
) -> None:
    """Write the named splits (sentence, identity, facediffuser) to manifests/splits.parquet."""
    import polars as pl

    from facedata.report import stdout_console
    from facedata.split import SplitOptions, split_store

    splits = split_store(store, SplitOptions(seed=seed, holdout_identities=holdout_identities))
    counts = splits.group_by(["split", "subset"]).agg(pl.len().alias("sentences"),
                                                      pl.col("identity").n_unique().alias("identities"))
    stdout_console().print(counts.sort(["split", "subset"]))


@app.command("build-masks")
def build_masks(
    store: Annotated[str | None, typer.Option("--store", help="Store (directory or URL) to write masks into.")] = None,
    template: Annotated[
        Path | None, typer.Option(help="A face mesh (OBJ/PLY), head-local mm, +y up, +z forward.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the masks (no store) or for the previews (with a store).")
    ] = None,
    import_dir: Annotated[
        Path | None, typer.Option("--import", help="Folder of per-vertex mask files (<name>.txt, one per line).")
    ] = None,
    transfer_from: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="MESH MASKS: carry the masks of another topology's mesh (MASKS: a mask folder)."),
    ] = None,
    landmarks: Annotated[
        Path | None, typer.Option(help="TOML spec: a landmarks table (vertex indices), a parameters table (mm).")
    ] = None,
    identity: Annotated[
        str | None, typer.Option(help="Build on this identity's template instead of the mean of all.")
    ] = None,
    previews: Annotated[bool, typer.Option(help="Render a PNG preview per mask.")] = True,
) -> None:
    """Make the face-region masks (mouth, upper_face, eyelid, forehead, neck) and PNG previews."""
    from facedata.masks import build_masks as run_build_masks
    from facedata.report import print_mask_report

    result = run_build_masks(store=store, template=template, out=out, import_dir=import_dir,
                             transfer_from=transfer_from, spec=landmarks, identity=identity, previews=previews)
    print_mask_report(result)


@app.command()
def stats(
    store: Annotated[str, typer.Option("--store", help="Store directory or URL (s3://...).")],
    report: Annotated[
        Path | None, typer.Option(help="Folder for report.html, report.json and images/ (created).")
    ] = None,
    outlier_ratio: Annotated[
        float, typer.Option(min=1.0, help="Outlier: a frame this many median jumps from its 5-frame median.")
    ] = 8.0,
    outlier_min_mm: Annotated[float, typer.Option(min=0.0, help="... and above this many mm.")] = 0.5,
    write_statistics: Annotated[
        bool, typer.Option(help="Store the training vertex mean and std in arrays.zarr/stats.")
    ] = True,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (tcp://host:8786): measure the sequences there.")
    ] = None,
) -> None:
    """Measure the store (counts, audio, motion, outliers), store the training vertex statistics, write a report."""
    from facedata.report import print_stats_summary, progress_bar
    from facedata.stats import StatsOptions, run_stats

    options = StatsOptions(outlier_ratio=outlier_ratio, outlier_min_mm=outlier_min_mm,
                           write_statistics=write_statistics, scheduler=scheduler)
    with progress_bar("stats", unit="frames") as update:
        result = run_stats(store, report_dir=report, options=options, progress=update)
    print_stats_summary(result)


def run() -> None:
    """The installed ``facedata`` command: ``main``, then the process ends without the interpreter's teardown."""
    run_and_exit(main)


def main() -> None:
    try:
        app()
    except FacedataError as e:
        if _DEBUG["on"]:
            raise
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except OSError as e:
        # Every writer reports a full disk itself (DiskFullError); this is the net under one that does not.
        if _DEBUG["on"] or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        typer.secho(f"error: {e.filename or 'a file'}: disk full ({e.strerror}); files are replaced whole, so what "
                    "was stored before is intact", err=True, fg=typer.colors.RED)
        sys.exit(1)
