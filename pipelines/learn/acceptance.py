"""The learning proof's criteria, read from `meshtalk evaluate`'s JSON and `brows.py`'s, one line each.

    python pipelines/learn/acceptance.py --evaluation EVAL.json --brows BROWS.json [--out RESULT.json]

Prints every criterion with the measured value and whether it holds, and exits 0 either way (the numbers are the
result; a criterion that fails is reported, not hidden). The criteria (docs/training.md, "Recipe"):
- reconstruction: brow curve r >= 0.8 with the synth truth, brow std >= 0.7x the truth's, upper-face error
  <= 0.6x the template's;
- audio-only, sampled: brow std within 0.5x-1.5x the truth's; |r| of the brow curve with the audio envelope < 0.2
  at its best lag within +-0.5 s; lip error `lve_max` <= 0.5x the template's (sampled, smoothed);
- samples: upper-face spread >= 0.3x the truth's upper-face motion std, lip spread < 0.3x the truth's lip motion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def criteria(evaluation: dict, brows: dict) -> list[dict]:
    relative, paths = evaluation["relative_to_template"], evaluation["paths"]
    sampled = paths["audio_sampled"]["metrics"]
    lag = brows["audio_sampled"]["brow_vs_envelope_lag"]
    rows = [
        ("reconstruction: brow r with the truth", brows["reconstruction"]["brow_vs_true_brow"], ">=", 0.8),
        ("reconstruction: brow std / truth", brows["reconstruction"]["brow_std_ratio"], ">=", 0.7),
        ("reconstruction: upper-face error / template", relative["reconstruction"]["upper_face_error"], "<=", 0.6),
        ("audio sampled: brow std / truth", brows["audio_sampled"]["brow_std_ratio"], "in", (0.5, 1.5)),
        ("audio sampled: |brow r with the envelope| at best lag", None if lag is None else abs(lag), "<", 0.2),
        ("audio sampled: lve_max / template", relative["audio_sampled"]["lve_max"], "<=", 0.5),
        ("samples: upper-face spread / truth's motion", sampled.get("upper_spread_ratio"), ">=", 0.3),
        ("samples: lip spread / truth's motion", sampled.get("lip_spread_ratio"), "<", 0.3),
    ]
    checks = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t,
              "in": lambda v, t: t[0] <= v <= t[1]}
    return [{"criterion": name, "value": value, "target": f"{op} {target}",
             "holds": value is not None and checks[op](value, target)} for name, value, op, target in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluation", type=Path, required=True)
    parser.add_argument("--brows", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = criteria(json.loads(args.evaluation.read_text()), json.loads(args.brows.read_text()))
    for row in rows:
        value = "none (does not move)" if row["value"] is None else f"{row['value']:.3f}"
        print(f"{'holds' if row['holds'] else 'FAILS':<6} {row['criterion']:<54} {value:>10}  (target {row['target']})")
    print(f"{sum(r['holds'] for r in rows)} of {len(rows)} criteria hold")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
