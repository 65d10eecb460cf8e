"""Plot the monitor curves of a run (log.jsonl) into a PNG.

    .venv/bin/python experiments/learning/plot.py RUN [--out FILE.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    audio = [r for r in records if r["stage"] == "audio"]
    expression = [r for r in records if r["stage"] == "expression"]
    one = [r for r in records if r["stage"] == 1]
    two = [r for r in records if r["stage"] == 2]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    title = args.run.name

    ax = axes[0, 0]
    if audio:
        ax.plot([r["step"] for r in audio], [r["loss"] for r in audio], label="regression loss (std. PCs)")
        ax.plot([r["step"] for r in audio], [r["r_pc1"] for r in audio], label="r, mouth PC1")
    if expression:
        ax.plot([r["step"] for r in expression], [r["loss"] for r in expression], label="expression: regression loss")
    ax.set_title("pre-training")
    ax.set_xlabel("step")
    ax.legend()

    s1 = [r["step"] for r in one]
    ax = axes[0, 1]
    ax.semilogy(s1, [r["recon"] for r in one], label="recon (train loss)")
    ax.semilogy(s1, [r["recon_sampled"] for r in one], label="recon, sampled code (monitor)")
    ax.semilogy(s1, [r["recon_mean_face"] for r in one], "--", label="mean-face recon")
    ax.semilogy(s1, [r["crossing_mouth"] for r in one], label="crossing: mouth")
    ax.semilogy(s1, [r["crossing_upper"] for r in one], label="crossing: upper face")
    ax.set_title("stage 1 losses (mm^2)")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    ax.plot(s1, [r["perplexity"] for r in one], label="argmax perplexity / head (mean)")
    ax.plot(s1, [r["perplexity_min"] for r in one], label="... (min head)")
    ax.set_ylabel("perplexity")
    ax2 = ax.twinx()
    ax2.plot(s1, [r["information"] for r in one], "C3", label="information (nats)")
    ax2.plot(s1, [r["flip_rate"] for r in one], "C4", label="flip rate")
    ax2.plot(s1, [r["recon_ratio"] for r in one], "C5", label="recon / mean-face recon")
    ax2.plot(s1, [r["shuffle_ratio"] for r in one], "C6", label="shuffle change / mean-face recon")
    ax2.set_ylim(0, 3)  # recon / mean-face starts near 30 (the untrained decoder), which would hide the rest
    ax.set_title("stage 1 code usage")
    ax.set_xlabel("step")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="center right", fontsize=8)

    s2 = [r["step"] for r in two]
    ax = axes[1, 0]
    ax.plot(s2, [r["cross_entropy"] for r in two], label="cross-entropy (nats)")
    ax.plot(s2, [r["marginal_entropy"] for r in two], "--", label="label-histogram entropy")
    ax.plot(s2, [r["accuracy"] for r in two], label="argmax accuracy")
    ax.plot(s2, [r["audio_change"] for r in two], label="KL when audio is shuffled")
    ax.set_title("stage 2")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    if two:
        heads = list(zip(*[r["cross_entropy_heads"] for r in two], strict=True))
        for h, values in enumerate(heads):
            ax.plot(s2, values, label=f"head {h}")
    ax.set_title("stage 2 cross-entropy per head")
    ax.set_xlabel("step")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1, 2]
    if one:
        heads = list(zip(*[r["information_heads"] for r in one], strict=True))
        for h, values in enumerate(heads):
            ax.plot(s1, values, label=f"head {h}")
    ax.set_title("stage 1 information per head (nats)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7, ncol=2)

    fig.suptitle(title)
    fig.tight_layout()
    out = args.out or args.run / "monitors.png"
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
