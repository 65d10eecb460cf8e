"""``meshtalk plot``: the curves of training runs (``RUN/log.jsonl``) in one PNG.

Panels: stage 1's losses, the code's use (per-head perplexity of the argmax labels, information in nats, flip
rate), whether the decoder uses the code and its expression part (recon over the mean-face recon, shuffle change
over the mean-face recon, the upper face's change when the expression codes are swapped, the upper-face crossing
term over the mean face's), stage 2's cross-entropy against the label histogram's entropy with its accuracy, the
recipe's pre-trainings (``meshtalk.recipes``: one series per encoder) and validation lip error over the template's.
A panel without data says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshtalk.train import read_log


def _series(records: list[dict[str, Any]], key: str, inner: str | None = None) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        value = r.get(key) if inner is None else (r.get(key) or {}).get(inner)
        if isinstance(value, int | float):
            steps.append(r.get("pretrain_step", r["step"]))
            values.append(float(value))
    return steps, values


def plot_runs(runs: list[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """One PNG of the stage-1 and stage-2 runs ``runs`` (each a run directory of ``meshtalk train``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    logs = {Path(run): read_log(run) for run in runs}
    figure = Figure(figsize=(15, 8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3)
    panels = {
        (0, 0): ("stage 1 losses (mm^2)", "train", [("losses", "recon"), ("losses", "modality_crossing"),
                                                    ("losses", "landmarks")], 1, "log"),
        (0, 1): ("code use (stage 1 monitors)", "monitor", [("perplexity", None), ("information", None),
                                                              ("flip_rate", None)], 1, "linear"),
        (0, 2): ("does the decoder use the code (and the expression)?", "monitor",
                 [("recon_ratio", None), ("shuffle_ratio", None), ("expression_ratio", None), ("upper_ratio", None)],
                 1, "log"),
        (1, 0): ("stage 2 (context model)", "monitor", [("cross_entropy", None), ("marginal_entropy", None),
                                                          ("accuracy", None)], 2, "linear"),
        (1, 1): ("pre-training (recipe)", "recipe", [("loss", None), ("r_first_component", None)], 1, "linear"),
        (1, 2): ("validation lve_max / template", "val", [("lve_ratio", None)], None, "linear"),
    }
    for (row, col), (name, kind, keys, stage, scale) in panels.items():
        ax = axes[row, col]
        drawn = False
        for run, records in logs.items():
            run_stage = _stage(run)
            if stage is not None and run_stage != stage:
                continue
            for group, chosen in _groups(records, kind).items():
                for key, inner in keys:
                    steps, values = _series(chosen, key, inner)
                    if values:
                        label = " ".join(x for x in (run.name if len(logs) > 1 else "", group, inner or key) if x)
                        ax.plot(steps, values, marker="." if len(values) <= 100 else None, markersize=3,
                                linewidth=1.5 if len(values) <= 100 else 0.6, label=label)
                        drawn = True
        ax.set_title(name)
        ax.set_xlabel("pre-training step" if kind == "recipe" else "step")
        if drawn:
            ax.set_yscale(scale)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    figure.suptitle(title or ", ".join(str(r) for r in logs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    return out


def _groups(records: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    """The records of ``kind``, one group per series: the pre-training records by encoder (their message starts
    with "audio pre-training" or "expression pre-training"), anything else as one group."""
    chosen = [r for r in records if r["type"] == kind and (kind != "recipe" or "pretrain_step" in r)]
    if kind != "recipe":
        return {"": chosen}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in chosen:
        groups.setdefault(str(r.get("message", "")).split(" pre-training")[0] + ":", []).append(r)
    return groups


def _stage(run: Path) -> int | None:
    """The stage of a run directory, from its config.json."""
    import json

    try:
        return int(json.loads((run / "config.json").read_text())["config"]["stage"])
    except (OSError, KeyError, ValueError):
        return None
