"""Terminal output shared by the commands: progress bars with rates and summary tables (rich)."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from facedata.files import format_bytes

console = Console(stderr=True)


def stdout_console() -> Console:
    """Console for tables on stdout; wide when piped, so long identity names stay readable in logs."""
    return Console() if sys.stdout.isatty() else Console(width=160)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


@contextlib.contextmanager
def progress_bar(label: str, *, unit: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar driven by ``update(message, done, total)`` calls; silent when stderr is not a terminal."""
    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                        console=console, disable=not sys.stderr.isatty(), transient=False)
    task = progress.add_task("", total=None)

    def update(message: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total, description=message[-60:])

    with progress:
        yield update


def print_ingest_report(report: Any) -> None:
    """The summary table of an ingest run, the rejects grouped by reason, and where the manifests are."""
    out = stdout_console()
    title = "ingest plan (dry run)" if report.dry_run else f"ingest of {report.store}"
    table = Table(title=title)
    for column in ("identity", "ingested", "skipped", "rejected", "frames", "dropped", "audio s", "rejects"):
        table.add_column(column, justify="left" if column == "identity" else "right")
    rows = report.summary_rows()
    for row in rows:
        table.add_row(row["identity"], *(str(row[k]) for k in ("ingested", "skipped", "rejected", "frames", "dropped")),
                      f"{row['audio_s']:.1f}", str(row["rejects"]))
    if report.dry_run:
        table.columns[1].header, table.columns[2].header = "to ingest", "up to date"
    out.print(table)
    if report.rejects:
        reasons = Counter((r.stage, r.reason) for r in report.rejects)
        rej = Table(title=f"{len(report.rejects)} rejected inputs")
        rej.add_column("stage")
        rej.add_column("reason")
        rej.add_column("count", justify="right")
        rej.add_column("example")
        for (stage, reason), count in sorted(reasons.items()):
            example = next(r for r in report.rejects if (r.stage, r.reason) == (stage, reason))
            detail = f" (expected {example.expected}, got {example.actual})" if example.expected else ""
            rej.add_row(stage, reason, str(count), f"{example.path}{detail}")
        out.print(rej)
    if report.dry_run and report.bytes_planned is not None:
        free = "" if report.bytes_free is None else \
            f"; {report.bytes_free:,} bytes ({format_bytes(report.bytes_free)}) free there"
        out.print(f"would write about {report.bytes_planned:,} bytes ({format_bytes(report.bytes_planned)}) into "
                  f"{report.store}{free}")
    if not report.dry_run:
        where = ("on the Dask cluster" if report.workers is None else
                 "in this process" if report.workers <= 1 else f"with {report.workers} worker processes")
        out.print(f"{report.frames_ingested} frames in {report.seconds:.1f} s ({report.frames_per_second:,.0f} "
                  f"frames/s, {where}); manifests in {report.store / 'manifests'}")


def print_store_summary(store: Any) -> None:
    """Format, settings, sequences and hours per identity and kind, rejects by stage, and the last runs."""
    import polars as pl

    out = stdout_console()
    settings = store.info["settings"]
    out.print(f"[bold]{store.root}[/]: {store.info['format']} v{store.info['format_version']}, "
              f"{settings['n_vertices']} vertices ({settings['vertex_set']}), {len(store.info['runs'])} run(s)")
    sequences = store.sequences()
    by = (sequences.group_by(["identity", "kind"])
          .agg(pl.len().alias("sequences"), pl.col("n_frames").sum().alias("frames"),
               pl.col("n_dropped").sum().alias("dropped"), pl.col("has_audio").sum().alias("with audio"),
               pl.col("audio_seconds").sum().alias("audio s"))
          .sort(["identity", "kind"]))
    table = Table(title="sequences")
    for column in by.columns:
        table.add_column(column, justify="left" if column in ("identity", "kind") else "right")
    for row in by.iter_rows():
        table.add_row(*(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
    out.print(table)
    hours = sequences["n_frames"].sum() / 30 / 3600
    out.print(f"{sequences.height} sequences, {sequences['n_frames'].sum()} frames ({hours:.3f} h of meshes), "
              f"{int(sequences['has_audio'].sum())} with audio")
    rejects = store.rejects()
    if rejects.height:
        counts = rejects.group_by(["stage", "reason"]).len().sort(["stage", "reason"])
        rej = Table(title=f"{rejects.height} rejected inputs (manifests/rejects.parquet)")
        for column in ("stage", "reason", "count"):
            rej.add_column(column, justify="right" if column == "count" else "left")
        for stage, reason, count in counts.iter_rows():
            rej.add_row(stage, reason, str(count))
        out.print(rej)


def print_mask_report(result: Any) -> None:
    """Landmarks and masks of a ``build-masks`` run, and where they were written."""
    out = stdout_console()
    if result.landmarks:
        table = Table(title=f"landmarks on the {result.template}")
        for column in ("landmark", "vertex", "x mm", "y mm", "z mm", "source"):
            table.add_column(column, justify="left" if column in ("landmark", "source") else "right")
        for name, lm in result.landmarks.items():
            table.add_row(name, str(lm["index"]), *(f"{c:.1f}" for c in lm["position_mm"]), lm["source"])
        out.print(table)
    table = Table(title=f"masks over {result.n_vertices} vertices")
    for column in ("mask", "source", "vertices > 0.5", "mean weight"):
        table.add_column(column, justify="left" if column in ("mask", "source") else "right")
    for row in result.summary_rows():
        table.add_row(row["mask"], row["source"], str(row["vertices > 0.5"]), f"{row['mean weight']:.3f}")
    out.print(table)
    out.print(f"masks written to {result.written} in {result.seconds:.1f} s")
    if result.previews:
        out.print(f"previews: {result.previews[0].parent}/ ({len(result.previews)} PNG)")


def print_stats_summary(run: Any) -> None:
    """The terminal half of ``facedata stats``: sequences per identity and kind, audio, outliers, statistics."""
    out = stdout_console()
    stats = run.stats
    numbers = stats.to_json()
    table = Table(title=f"{stats.store}")
    for column in ("identity", "kind", "sequences", "frames", "hours", "dropped", "with audio", "audio s"):
        table.add_column(column, justify="left" if column in ("identity", "kind") else "right")
    for r in numbers["by_identity_kind"]:
        table.add_row(r["identity"], r["kind"], str(r["sequences"]), str(r["frames"]), f"{r['hours']:.3f}",
                      str(r["dropped_frames"]), f"{r['with_audio']} ({100 * r['audio_coverage']:.0f} %)",
                      f"{r['audio_seconds']:.1f}")
    out.print(table)
    t = numbers["totals"]
    out.print(f"{t['sequences']} sequences, {t['frames']} frames ({t['hours']:.3f} h), {t['dropped_frames']} dropped, "
              f"{t['sequences_with_audio']} with audio ({t['audio_hours']:.3f} h)")
    audio = Table(title="audio of the sentences")
    for column in ("measure", "min", "median", "p95", "max"):
        audio.add_column(column, justify="left" if column == "measure" else "right")
    for name, summary in [("alignment error (ms)", numbers["alignment_error_ms"]),
                          ("RMS level (dBFS)", numbers["audio"]["rms_dbfs"]),
                          ("clipped fraction", numbers["audio"]["clip_fraction"]),
                          ("silence fraction", numbers["audio"]["silence_fraction"]),
                          ("mouth-audio lag (frames)", numbers["lip_sync"]["best_lag_frames"])]:
        if summary.get("count"):
            audio.add_row(name, *(f"{summary[k]:.4g}" for k in ("min", "median", "p95", "max")))
    if audio.row_count:
        out.print(audio)
    outliers = numbers["outliers"]
    if outliers["count"]:
        table = Table(title=f"{outliers['count']} outlier frame(s): {outliers['rule']}")
        for column in ("identity", "sequence", "frame", "frame number", "off path mm", "ratio"):
            table.add_column(column, justify="left" if column in ("identity", "sequence") else "right")
        for r in outliers["frames"][:20]:
            table.add_row(r["identity"], r["sequence"], str(r["frame"]), str(r["frame_number"]),
                          f"{r['deviation_mm']:.2f}", f"{r['ratio']:.0f}")
        out.print(table)
    else:
        out.print(f"no outlier frames ({outliers['rule']})")
    v = numbers["vertex_statistics"]
    where = "arrays.zarr/stats/vertex_mean, vertex_std" if v["written"] else "not written"
    out.print(f"vertex statistics over {v['frames']} training frames ({v['training']}): {where}")
    for note in stats.notes:
        out.print(f"[yellow]note:[/] {note}")
    if run.report:
        out.print(f"report: {run.report['html']} (numbers in {run.report['json'].name})")
