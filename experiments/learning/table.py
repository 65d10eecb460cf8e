"""Markdown tables of one or more runs' result.json: lip-error ratios per path and variant, and correlations.

    .venv/bin/python experiments/learning/table.py RUN [RUN ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PATHS = ("mean_face", "recon", "audio_argmax", "audio_sampled")
VARIANTS = ("lve_max", "lve_max_sq", "lve_max_centred", "lip_mve")


def main() -> None:
    for run in map(Path, sys.argv[1:]):
        r = json.loads((run / "result.json").read_text())
        t = r["timings"]
        print(f"### {run.name}\n")
        parts = []
        if "audio_pretrain" in t:
            a = t["audio_pretrain"]
            parts.append(f"audio pre-training {a['seconds']:.0f} s" + (f" (PCA {a['pca_seconds']:.0f} s)"
                                                                       if "pca_seconds" in a else ""))
        if "audio_cache_seconds" in t:
            parts.append(f"audio cache {t['audio_cache_seconds']:.0f} s")
        for stage in ("stage1", "stage2"):
            s = t[stage]
            cpu = f", CPU {s['cpu_seconds']:.0f} s" if "cpu_seconds" in s else ""
            parts.append(f"{stage} {s['steps']} steps {s['seconds']:.0f} s{cpu}")
        parts.append(f"total {t['total_seconds']:.0f} s ({t['total_seconds'] / 60:.1f} min)")
        print("; ".join(parts) + "\n")
        for region in ("lips", "mouth"):
            base = r["metrics"]["template"][region]
            print(f"Lip error / template-only baseline, lip set `{region}` (baseline: "
                  + ", ".join(f"{v} {base[v]:.3f}" for v in VARIANTS) + ")\n")
            print("| path | " + " | ".join(VARIANTS) + " |")
            print("|---" * (len(VARIANTS) + 1) + "|")
            for path in PATHS:
                print(f"| {path} | " + " | ".join(f"{r['ratios'][path][region][v]:.3f}" for v in VARIANTS) + " |")
            print()
        c = r["correlations"]
        keys = ("brow_vs_envelope", "brow_vs_envelope_lag", "brow_vs_brow_true", "brow_std_ratio",
                "mouth_vs_mouth_true", "mouth_vs_envelope_lag")
        print("| path | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for path in ("recon", "audio_argmax", "audio_sampled"):
            print(f"| {path} | " + " | ".join("no motion" if c[path][k] is None else f"{c[path][k]:.3f}"
                                               for k in keys) + " |")
        tr = c["truth"]
        print("\nTruth: " + ", ".join(f"{k} {v:.3f}" for k, v in tr.items()) + "\n")


if __name__ == "__main__":
    main()
