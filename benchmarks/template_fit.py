"""How far a template may be from a checkpoint's faces before its decoder turns it into a shattered mesh: the
figures behind ``meshtalk.animate.face.TEMPLATE_WARN_RMS`` and ``TEMPLATE_REFUSE_RMS`` (docs/animation.md, "Inputs
that do not fit the model").

Not a speed benchmark. For each template (the store's identities; faces between and beyond them; identity 0
moved, turned, scaled, read in metres or with its vertices shuffled; generated heads the checkpoint never saw
(``--synth``) and any ``--template`` mesh) it prints ``meshtalk.animate.face.template_fit`` (the normalised RMS
the checks read, and the pose and scale that explain it) beside what the decoder makes of it: the codes of a
stored sentence of identity 0 (the encoder's argmax on its audio and geometry) decoded on that template; the
motion's RMS against the template (mm); the stretch of the triangle edges over the frames (output length over
template length: its 99.9th percentile, and the share of edges twice or half as long, which a shattered mesh
shows); and for identity 0 moved, turned or scaled, the error against its own animation moved, turned or scaled
alike (mm RMS; 0 for a decoder that the change does not disturb).

    .venv/bin/python benchmarks/template_fit.py --checkpoint RUN/last.pt --store STORE \
        --template face_template.obj --synth 0:4 0:5
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--store", required=True, type=Path, help="the store the checkpoint was trained on")
    parser.add_argument("--template", type=Path, nargs="*", default=[], help="other meshes (OBJ or PLY)")
    parser.add_argument("--synth", nargs="*", default=[], metavar="SEED:IDENTITY",
                        help="generated heads (facedata.synth.identity_truth, the kept vertices, in the model's vertex "
                             "order) of faces the checkpoint never saw, e.g. 0:4 for a corpus of `facedata synth "
                             "--seed 0 --identities 4`")
    parser.add_argument("--frames", type=int, default=90)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from facedata.masks.io import read_mesh
    from facedata.store import Store
    from meshtalk.animate.face import template_fit
    from meshtalk.checkpoint import load_checkpoint
    from meshtalk.data import read_sequence
    from meshtalk.inference import audio_codes
    from meshtalk.model import quantize

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    model = load_checkpoint(args.checkpoint).model.eval()
    store = Store(args.store)
    faces = store.faces()
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    identities = sorted(store.sequences()["identity"].unique().to_list())
    entries = [e for e in _sentences(store) if e.identity == identities[0]]
    sentence = read_sequence(store, entries[0])
    T = min(args.frames, sentence.n_frames)
    with torch.no_grad():
        code = audio_codes(model, sentence)[:, :T]
        vertices = torch.from_numpy(np.ascontiguousarray(sentence.vertices[:T]))[None]
        logprobs = model.encoder.fusion(model.encoder.expression(vertices), code)
        one_hot = quantize(logprobs).one_hot  # (1, T, H, C)

    def decoded(template: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.decoder(torch.from_numpy(template.astype(np.float32))[None], one_hot)[0].double().numpy()

    def edge_lengths(v: np.ndarray) -> np.ndarray:  # (..., V, 3) -> (..., E)
        return np.linalg.norm(v[..., edges[:, 0], :] - v[..., edges[:, 1], :], axis=-1)

    def damage(template: np.ndarray, out: np.ndarray) -> tuple[float, float, float]:
        """The motion's RMS against the template (mm), the 99.9th percentile of the edges' stretch (output length
        over template length) and the share of (frame, edge) pairs more than twice or less than half as long."""
        ratio = edge_lengths(out) / np.maximum(edge_lengths(template), 1e-9)  # (T, E)
        return (float(np.sqrt(np.mean((out - template[None]) ** 2))), float(np.percentile(ratio, 99.9)),
                float(np.mean((ratio > 2) | (ratio < 0.5))))

    base = store.template(identities[0]).astype(np.float64)
    centre = base.mean(axis=0)
    own = decoded(base)  # (T, V, 3)
    std = model.decoder.stddev.double().numpy()
    print(f"checkpoint {args.checkpoint}: per-vertex std {np.percentile(std, 5):.2f} / {np.median(std):.2f} / "
          f"{np.percentile(std, 95):.2f} mm (5th percentile / median / 95th)")

    def yaw(deg: float) -> np.ndarray:
        a = np.radians(deg)
        return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])

    # (name, template, what the same change does to the own template's animation, or None for another face)
    Change = Callable[[np.ndarray], np.ndarray] | None
    cases: list[tuple[str, np.ndarray, Change]] = [(f"identity {i}", store.template(i).astype(np.float64), None)
                                                   for i in identities]
    others = [store.template(i).astype(np.float64) for i in identities[1:]]
    if others:  # unseen faces: between the training identities, and as far beyond identity 0 as another one is
        cases += [("between identity 0 and 1 (halfway)", (base + others[0]) / 2, None),
                  ("beyond identity 0 (0 + (0 - 1))", 2 * base - others[0], None)]
    for d in (0.5, 1, 2, 5, 10, 50):
        cases.append((f"identity 0 moved {d:g} mm (y)", base + np.array([0.0, d, 0.0]),
                      lambda v, d=d: v + np.array([0.0, d, 0.0])))
    for deg in (1, 2, 5, 15, 30):
        cases.append((f"identity 0 turned {deg} deg (yaw)", (base - centre) @ yaw(deg).T + centre,
                      lambda v, deg=deg: (v - centre) @ yaw(deg).T + centre))
    for k in (1.01, 1.02, 1.05, 1.2):
        cases.append((f"identity 0 scaled {k:g}x", (base - centre) * k + centre,
                      lambda v, k=k: (v - centre) * k + centre))
    order = np.random.default_rng(0).permutation(len(base))
    cases += [("identity 0 in metres", base / 1000, lambda v: v / 1000),
              ("identity 0, vertices shuffled", base[order], lambda v: v[..., order, :])]
    for path in args.template:
        cases.append((str(path), read_mesh(path).vertices.astype(np.float64), None))
    for spec in args.synth:
        from facedata.synth import identity_truth

        seed, identity = (int(x) for x in spec.split(":"))
        truth = identity_truth(seed, identity)
        cases.append((f"generated head {spec} (unseen)", truth.neutral_mm[truth.keep].astype(np.float64), None))

    motion, stretch, broken = damage(base, own)
    print(f"codes of {entries[0].identity}/{entries[0].sequence}, {T} frames; identity 0 = {identities[0]}: motion "
          f"{motion:.2f} mm RMS, edge stretch {stretch:.2f}, {100 * broken:.2f} % of edges x2 or /2")
    print("| template | normalised RMS | aligned | centre offset (mm) | scale | rotation (deg) | motion RMS (mm) | "
          "edge stretch (99.9th pct) | edges x2 or /2 (%) | error vs identity 0's animation changed alike (mm RMS) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, template, change in cases:
        fit = template_fit(model, template)
        assert fit is not None, "the checkpoint has no normalisation"
        out = decoded(template)
        motion, stretch, broken = damage(template, out)
        error = "" if change is None else f"{np.sqrt(np.mean((out - change(own)) ** 2)):.2f}"
        print(f"| {name} | {fit.normalised_rms:.2f} | {fit.aligned_rms:.2f} | {np.linalg.norm(fit.offset_mm):.1f} | "
              f"{fit.scale:.3g} | {fit.rotation_deg:.1f} | {motion:.2f} | {stretch:.2f} | {100 * broken:.2f} | "
              f"{error} |")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _sentences(store):
    """The test sentences of the sentence split (held out from training), or every sentence without splits."""
    from facedata.errors import StoreError
    from meshtalk.data import select_sequences

    try:
        return select_sequences(store, split="sentence", subset="test")
    except StoreError:
        return select_sequences(store)


if __name__ == "__main__":
    main()
