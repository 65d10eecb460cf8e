"""How well ``facedata build-masks`` matches MeshTalk's painted masks on MeshTalk's released template.

    .venv/bin/python scripts/meshtalk_mask_iou.py ASSETS_DIR [--spec docs/meshtalk-masks.toml]

ASSETS_DIR holds the release's files under their released names: ``face_template.obj`` (6172 vertices, the
head-local frame in mm), ``weighted_mouth_mask.txt``, ``weighted_eye_mask.txt``, ``forehead_mask.txt`` and
``neck_mask.txt`` (one weight a line). They are CC BY-NC and are not part of this repository: keep them outside
it. The masks are built as ``build-masks --template`` builds them (same frame check, landmarks and default
parameters, and again with ``--spec``'s when given) and each pair is compared as docs/curation.md says: the
vertices with weight > 0.5 of each, and their intersection over union. Prints the landmarks found and one line per
pair; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facedata.masks.geometry import SurfaceGraph, check_head_frame
from facedata.masks.io import read_mask_spec, read_mesh
from facedata.masks.landmarks import detect_landmarks
from facedata.masks.regions import MaskParameters, compute_masks

PAIRS = [  # (built mask, released file)
    ("mouth", "weighted_mouth_mask.txt"),
    ("upper_face", "weighted_eye_mask.txt"),
    ("forehead", "forehead_mask.txt"),
    ("neck", "neck_mask.txt"),
]
N_VERTICES = 6172


def mask_iou(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of the vertices with weight > ``threshold`` in (V,) ``a`` and (V,) ``b``."""
    on_a, on_b = a > threshold, b > threshold
    union = np.count_nonzero(on_a | on_b)
    return float(np.count_nonzero(on_a & on_b) / union) if union else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assets", type=Path, help="folder with MeshTalk's face_template.obj and mask files")
    parser.add_argument("--spec", type=Path, help="a build-masks spec (TOML [landmarks]/[parameters])")
    args = parser.parse_args(argv)

    obj = args.assets / "face_template.obj"
    with open(obj, encoding="utf-8") as handle:
        n_v_lines = sum(line.startswith("v ") for line in handle)
    mesh = read_mesh(obj)
    if n_v_lines != N_VERTICES or mesh.vertices.shape[0] != N_VERTICES:
        print(f"{obj}: expected {N_VERTICES} vertices, got {n_v_lines} 'v' lines, "
              f"{mesh.vertices.shape[0]} read", file=sys.stderr)
        return 1
    vertices, faces = mesh.vertices, mesh.faces
    check_head_frame(vertices, path=obj)
    given, spec_parameters = read_mask_spec(args.spec, N_VERTICES) if args.spec else ({}, None)
    landmarks = detect_landmarks(vertices, given=given, path=obj)
    graph = SurfaceGraph.from_mesh(vertices, faces, path=obj)
    runs = {"defaults": compute_masks(vertices, faces, graph, landmarks, MaskParameters())}
    if spec_parameters is not None:
        runs[args.spec.name] = compute_masks(vertices, faces, graph, landmarks, spec_parameters)

    print(f"{obj}: {N_VERTICES} vertices, {faces.shape[0]} triangles")
    for name, row in landmarks.describe(vertices).items():
        x, y, z = row["position_mm"]
        print(f"  landmark {name:16s} vertex {row['index']:5d} at ({x:6.1f}, {y:6.1f}, {z:6.1f}) mm")
    print(f"{'built':>11s}  {'released':24s} {'released>0.5':>12s}"
          + "".join(f"  {run + ' >0.5':>22s} {'IoU':>6s}" for run in runs))
    for name, file_name in PAIRS:
        released = np.loadtxt(args.assets / file_name, dtype=np.float64).reshape(-1)
        if released.shape[0] != N_VERTICES:
            print(f"{args.assets / file_name}: expected {N_VERTICES} weights, got {released.shape[0]}",
                  file=sys.stderr)
            return 1
        print(f"{name:>11s}  {file_name:24s} {np.count_nonzero(released > 0.5):12d}"
              + "".join(f"  {np.count_nonzero(built[name] > 0.5):22d} {mask_iou(built[name], released):6.3f}"
                        for built in runs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
