"""The ``facedata stats`` report: ``report.json`` (every number), ``report.html`` and its PNG plots in ``images/``.

It draws a ``StoreStats`` (plain data, ``facedata.stats.figures``) and never measures anything itself.

The HTML page is static (no script, no network): tables of the numbers and ``<img>`` tags pointing at the PNG
files beside it, so the folder opens in any browser and can be copied or archived whole. Plots are drawn with
matplotlib's Agg canvas (no display); the face maps with ``facedata.render``.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import MESH_FPS
from facedata.files import reporting_disk_full, write_bytes_atomic
from facedata.render import render_value_map, write_png
from facedata.stats.figures import StoreStats

IMAGES_DIR = "images"
KIND_COLOURS = {"sentence": "#3b6ea8", "expression": "#c0703c", "gaze": "#5a9a5a", "other": "#888888"}


def write_report(stats: StoreStats, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``images/*.png`` into ``out_dir`` (created), each file whole
    (``write_bytes_atomic``): the images first, then ``report.json`` and ``report.html``, so that a page never points
    at a plot that is not there.

    Returns:
        {"html": path, "json": path, "images": images folder}.

    Raises:
        DiskFullError: the disk filled; every file in ``out_dir`` is its old or its new version.
    """
    out = Path(out_dir)
    with reporting_disk_full(out, "the statistics report", kept="each report file is whole, its old or its new "
                                                                 "version; the store is not touched"):
        return _write_files(stats, out)


def _write_files(stats: StoreStats, out: Path) -> dict[str, Path]:
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    numbers = stats.to_json()
    images: dict[str, str] = {}

    def save(name: str, draw: Any, size: tuple[float, float] = (7.0, 3.2)) -> None:
        path = out / IMAGES_DIR / f"{name}.png"
        _figure(draw, path, size)
        images[name] = f"{IMAGES_DIR}/{name}.png"

    seq = stats.sequences
    save("durations", lambda fig: _durations(fig, seq))
    save("hours", lambda fig: _hours(fig, numbers["by_identity_kind"]))
    save("dropped", lambda fig: _dropped(fig, seq))
    if numbers["alignment_error_ms"]["count"]:
        save("alignment", lambda fig: _histogram(fig, numbers["alignment_error_ms"],
                                                 "audio length - frames' length (ms)", "sequences"))
        save("audio", lambda fig: _audio(fig, numbers["audio"]), (9.0, 3.0))
    save("jumps", lambda fig: _jumps(fig, stats))
    lip = [f for f in stats.figures if f.opening_mm is not None and f.envelope is not None]
    if lip:
        save("lip_sync", lambda fig: _histogram(fig, numbers["lip_sync"]["best_lag_frames"],
                                                "lag of best correlation (frames; > 0: mouth leads)", "sentences"))
    for k, figure in enumerate(_mouth_examples(lip, stats.options.mouth_examples)):
        save(f"mouth_{k}", lambda fig, f=figure: _mouth(fig, f), (7.0, 2.6))
    if stats.faces is not None:
        template = stats.template_mm.astype(np.float32)
        write_png(out / IMAGES_DIR / "motion.png", render_value_map(
            template, stats.faces, stats.motion_mm, cmap="viridis", vmin=0.0, unit="mm",
            titles=["motion (std over time): front", "side"], panel_width_px=320, panel_height_px=384))
        images["motion"] = f"{IMAGES_DIR}/motion.png"
        if stats.vertex_std is not None:
            write_png(out / IMAGES_DIR / "vertex_std.png", render_value_map(
                template, stats.faces, np.linalg.norm(stats.vertex_std, axis=1), cmap="viridis", vmin=0.0, unit="mm",
                titles=["training std |(x, y, z)|: front", "side"], panel_width_px=320, panel_height_px=384))
            images["vertex_std"] = f"{IMAGES_DIR}/vertex_std.png"
    else:
        stats.notes.append("the store has no faces: face maps not drawn")
    numbers["images"] = images
    numbers["notes"] = stats.notes
    write_bytes_atomic(out / "report.json", (json.dumps(numbers, indent=1, default=_json_default) + "\n").encode())
    write_bytes_atomic(out / "report.html", _html(numbers).encode())
    return {"html": out / "report.html", "json": out / "report.json", "images": out / IMAGES_DIR}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _figure(draw: Any, path: Path, size: tuple[float, float]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def _durations(fig: Any, seq: Any) -> None:
    ax = fig.add_subplot()
    kinds = sorted(seq["kind"].unique().to_list())
    values = [seq.filter(seq["kind"] == k)["n_frames"].to_numpy() / MESH_FPS for k in kinds]
    ax.hist(values, bins=20, stacked=True, label=kinds, color=[KIND_COLOURS.get(k, "#888") for k in kinds])
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("sequences")
    ax.legend(frameon=False)
    ax.set_title("sequence durations by kind")


def _hours(fig: Any, rows: list[dict[str, Any]]) -> None:
    ax = fig.add_subplot()
    identities = sorted({r["identity"] for r in rows})
    bottom = np.zeros(len(identities))
    for kind in sorted({r["kind"] for r in rows}):
        minutes = np.array([sum(r["hours"] * 60 for r in rows if r["identity"] == i and r["kind"] == kind)
                            for i in identities])
        ax.bar(range(len(identities)), minutes, bottom=bottom, label=kind, color=KIND_COLOURS.get(kind, "#888"))
        bottom += minutes
    ax.set_xticks(range(len(identities)), [_short(i) for i in identities], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("minutes of meshes")
    ax.legend(frameon=False)
    ax.set_title("mesh time per identity")


def _short(identity: str) -> str:
    parts = identity.split("--")
    return parts[3] if len(parts) >= 5 else identity[-16:]


def _dropped(fig: Any, seq: Any) -> None:
    ax = fig.add_subplot()
    counts = seq["n_dropped"].to_numpy()
    ax.hist(counts, bins=np.arange(counts.max() + 2) - 0.5 if counts.max() < 30 else 30, color="#7a5ea8")
    ax.set_xlabel("dropped (interpolated) frames per sequence")
    ax.set_ylabel("sequences")
    ax.set_title(f"dropped frames: {int(counts.sum())} of {int(seq['n_frames'].sum())}")


def _histogram(fig: Any, summary: dict[str, Any], xlabel: str, ylabel: str) -> None:
    ax = fig.add_subplot()
    if summary.get("count"):
        edges, counts = np.array(summary["histogram"]["edges"]), np.array(summary["histogram"]["counts"])
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b6ea8", edgecolor="white")
        ax.axvline(summary["median"], color="#c0392b", lw=1, label=f"median {summary['median']:.3g}")
        ax.legend(frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _audio(fig: Any, audio: dict[str, Any]) -> None:
    for k, (key, label) in enumerate([("rms_dbfs", "RMS level (dBFS)"), ("clip_fraction", "clipped samples"),
                                      ("silence_fraction", "silent 20 ms frames")]):
        ax = fig.add_subplot(1, 3, k + 1)
        summary = audio[key]
        if summary.get("count"):
            edges, counts = np.array(summary["histogram"]["edges"]), np.array(summary["histogram"]["counts"])
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b6ea8", edgecolor="white")
        ax.set_xlabel(label)
        ax.set_ylabel("sentences" if k == 0 else "")
    fig.suptitle("source audio")


def _jumps(fig: Any, stats: StoreStats) -> None:
    ax = fig.add_subplot()
    ratios = np.array([f.deviation_max_mm / max(f.jump_median_mm, 1e-9) for f in stats.figures])
    ax.hist(ratios, bins=30, color="#3b6ea8")
    ratio = stats.options.outlier_ratio
    ax.axvline(ratio, color="#c0392b", lw=1, label=f"outlier ratio {ratio:g}")
    ax.set_xlabel("largest distance of a frame from its neighbours' path / median jump, per sequence")
    ax.set_ylabel("sequences")
    ax.legend(frameon=False)
    ax.set_title(f"tracking jumps: {len(stats.outliers)} outlier frame(s)")


def _mouth_examples(figures: list[Any], n: int) -> list[Any]:
    """Up to n sentences, from different identities first, longest first."""
    ordered = sorted(figures, key=lambda f: (-f.n_frames, f.identity, f.sequence))
    chosen: list[Any] = []
    seen: set[str] = set()
    for f in ordered:
        if f.identity not in seen and len(chosen) < n:
            chosen.append(f)
            seen.add(f.identity)
    for f in ordered:
        if f not in chosen and len(chosen) < n:
            chosen.append(f)
    return chosen


def _mouth(fig: Any, f: Any) -> None:
    ax = fig.add_subplot()
    t = np.arange(f.n_frames) / MESH_FPS
    ax.plot(t, f.opening_mm, color="#c0392b", lw=1.4, label="mouth opening")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("lip distance - neutral (mm)", color="#c0392b")
    env = ax.twinx()
    env.fill_between(t, 0, f.envelope, color="#3b6ea8", alpha=0.35, step="mid", label="audio envelope")
    env.set_ylabel("audio RMS per frame", color="#3b6ea8")
    env.set_ylim(bottom=0)
    lag = f"best lag {f.lag_frames:+d} frames (r = {f.lag_correlation:.2f})" if f.lag_frames is not None else ""
    ax.set_title(f"{_short(f.identity)} / {f.sequence}  {lag}", fontsize=9)


# --- HTML ------------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { padding: 2px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; } .note { color: #8a4b00; } code { font-size: 0.95em; }
"""


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    def cell(value: Any, k: int, tag: str) -> str:
        cls = ' class="l"' if k < left else ""
        if isinstance(value, float):
            value = f"{value:.4g}"
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell(h, k, "th") for k, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell(v, k, "td") for k, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(numbers: dict[str, Any], name: str, alt: str) -> str:
    path = numbers["images"].get(name)
    return f'<img src="{html.escape(path)}" alt="{html.escape(alt)}">' if path else ""


def _summary_row(name: str, s: dict[str, Any]) -> list[Any]:
    if not s.get("count"):
        return [name, 0, "", "", "", ""]
    return [name, s["count"], s["min"], s["median"], s["p95"], s["max"]]


def _html(n: dict[str, Any]) -> str:
    t = n["totals"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>facedata stats: {html.escape(n['store'])}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>facedata stats</h1><p><code>{html.escape(n['store'])}</code>, {html.escape(n['created'])}; "
             "every number is also in <a href='report.json'>report.json</a>.</p>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in n["notes"]]
    parts.append(_table(["identities", "sequences", "frames", "hours", "dropped frames", "with audio", "audio hours"],
                        [[t["identities"], t["sequences"], t["frames"], t["hours"], t["dropped_frames"],
                          t["sequences_with_audio"], t["audio_hours"]]], left=0))
    parts.append("<h2>Per identity and kind</h2>")
    parts.append(_table(["identity", "kind", "sequences", "frames", "hours", "dropped", "with audio",
                         "audio coverage (share)", "audio s"],
                        [[r["identity"], r["kind"], r["sequences"], r["frames"], r["hours"], r["dropped_frames"],
                          r["with_audio"], r["audio_coverage"], r["audio_seconds"]] for r in n["by_identity_kind"]],
                        left=2))
    parts.append(_img(n, "hours", "mesh time per identity") + _img(n, "durations", "durations"))
    parts.append("<h2>Dropped frames</h2>")
    d = n["dropped"]
    parts.append(f"<p>{d['frames']} dropped (interpolated) frames, {100 * d['fraction']:.2f} % of all frames, in "
                 f"{d['sequences_with_drops']} sequences.</p>" + _img(n, "dropped", "dropped frames"))
    if d["sequences"]:
        parts.append(_table(["identity", "sequence", "dropped", "frame numbers"],
                            [[r["identity"], r["sequence"], r["n_dropped"],
                              ", ".join(map(str, r["dropped_frames"][:12]))] for r in d["sequences"][:15]], left=2))
    parts.append("<h2>Audio</h2>")
    a = n["audio"]
    parts.append(_table(["measure", "sequences", "min", "median", "p95", "max"],
                        [_summary_row("alignment error (ms)", n["alignment_error_ms"]),
                         _summary_row("RMS level (dBFS)", a["rms_dbfs"]),
                         _summary_row("clipped fraction", a["clip_fraction"]),
                         _summary_row("silence fraction", a["silence_fraction"]),
                         _summary_row("loudness gain", a["loudness_gain"])]))
    parts.append(_img(n, "alignment", "alignment error") + _img(n, "audio", "loudness, clipping, silence"))
    parts.append("<h2>Motion</h2>")
    m = n["motion"]["per_vertex_mm"]
    if m.get("count"):
        parts.append(f"<p>Per-vertex motion (RMS distance from the sequence's mean position): median "
                     f"{m['median']:.3g} mm, max {m['max']:.3g} mm.</p>")
    parts.append(_img(n, "motion", "per-vertex motion"))
    parts.append("<h2>Mouth and audio</h2>")
    ls = n["lip_sync"]
    if ls["sequences"]:
        lag = ls["best_lag_frames"]
        parts.append(f"<p>Mouth opening (lip landmarks {html.escape(str(ls['landmarks']))}) against the audio "
                     f"envelope: median best lag {lag['median']:+.1f} frames over {lag['count']} sentences "
                     f"(positive: the mouth moves first).</p>")
    parts.append(_img(n, "lip_sync", "lip sync lags"))
    parts += [_img(n, name, name) for name in sorted(n["images"]) if name.startswith("mouth_")]
    parts.append("<h2>Outliers (tracking failures)</h2>")
    o = n["outliers"]
    parts.append(f"<p>{o['count']} frame(s): {html.escape(o['rule'])}.</p>" + _img(n, "jumps", "jumps"))
    if o["frames"]:
        parts.append(_table(["identity", "sequence", "frame", "frame number", "observed", "off path mm",
                             "typical jump mm", "ratio"],
                            [[r["identity"], r["sequence"], r["frame"], r["frame_number"], r["observed"],
                              r["deviation_mm"], r["typical_jump_mm"], r["ratio"]] for r in o["frames"][:200]], left=2))
    parts.append("<h2>Vertex statistics for the model</h2>")
    v = n["vertex_statistics"]
    parts.append(f"<p>Training frames: {html.escape(v['training'])}; {v['sequences']} sequences, {v['frames']} frames; "
                 f"{'written to arrays.zarr/stats' if v['written'] else 'not written'}.</p>")
    parts.append(_img(n, "vertex_std", "training std"))
    parts.append("</body></html>\n")
    return "\n".join(parts)
