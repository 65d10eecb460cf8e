"""Train (audio pre-training, stage 1, stage 2) and assess one recipe.

    .venv/bin/python experiments/learning/run.py --root /tmp/ftl --out RUN --recipe proposed [key=value ...]
    .venv/bin/python experiments/learning/run.py --root /tmp/ftl --out RUN --assess-only

ROOT holds `raw` and `store` (`prepare.py`). RUN gets recipe.json, log.jsonl (monitors every `monitor_every`
steps), model.pt and result.json (timings and `assess.assess`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import assess
import lab
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", default="reference", choices=sorted(lab.RECIPES))
    parser.add_argument("--assess-only", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stage1-from", type=Path, help="a run whose encoder and decoder are reused (stage 2 only)")
    parser.add_argument("--audio-from", type=Path, help="a run whose pre-trained audio encoder is reused (screens)")
    parser.add_argument("overrides", nargs="*", help="recipe options as key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = lab.load_corpus(args.root / "store")
    if args.assess_only:
        model, recipe = lab.load_model(args.out, corpus)
        timings = json.loads((args.out / "result.json").read_text())["timings"]
    else:
        recipe = lab.Recipe.parse(lab.RECIPES[args.recipe], args.overrides)
        print(recipe, flush=True)
        model, timings = lab.train(recipe, corpus, args.out, stage1_from=args.stage1_from, audio_from=args.audio_from)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    result = assess.assess(model, corpus, args.root / "raw", samples=recipe.eval_samples)
    result["assess_seconds"] = time.perf_counter() - t
    result["timings"] = timings
    result["recipe_name"] = args.recipe
    result["recipe"] = lab.dataclasses.asdict(recipe)
    result["parameters"] = model.parameter_counts()
    (args.out / "result.json").write_text(json.dumps(lab.nan_to_none(result), indent=1))
    print(assess.summary_line(result))
    print(f"train {timings['total_seconds']:.0f} s (stage 1 {timings['stage1']['steps']} steps "
          f"{timings['stage1']['seconds']:.0f} s, stage 2 {timings['stage2']['steps']} steps "
          f"{timings['stage2']['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
