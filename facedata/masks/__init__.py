"""Face-region masks: soft per-vertex weights in [0, 1] for the cross-modality loss and inference smoothing.

``facedata build-masks`` (``build_masks``) makes five masks for a store's topology or any face mesh in the
head-local frame (mm, +y up, +z out of the face): ``mouth`` (lips, jaw, chin, cheeks beside the mouth),
``upper_face`` (eyes, brows, forehead), ``eyelid`` (a 0/1 set on the upper lids), ``forehead`` and ``neck``.
They are built from landmarks found on the template's shape (``landmarks``) with soft edges along the surface
(``regions``, ``geometry``), read from per-vertex files (``io.read_mask_dir``), or carried over from a mesh of
another topology (``transfer``). See docs/curation.md; the stored layout is in docs/store-format.md.

Modules: ``geometry`` (frame check, surface graph and distances), ``landmarks``, ``regions`` (the masks and their
parameters), ``transfer``, ``io`` (meshes, mask folders, spec files, store writing, previews), ``build`` (the
command's library call).
"""

from facedata.masks.build import PREVIEW_DIR, MaskBuild, build_masks
from facedata.masks.geometry import SurfaceGraph, check_head_frame
from facedata.masks.io import (
    MASKS_FORMAT_VERSION,
    Mesh,
    read_mask_dir,
    read_mask_spec,
    read_mesh,
    render_previews,
    write_mask_dir,
)
from facedata.masks.landmarks import LANDMARK_NAMES, Landmarks, detect_landmarks
from facedata.masks.regions import MASK_NAMES, MaskParameters, compute_masks
from facedata.masks.transfer import Transfer, transfer_masks

__all__ = [
    "LANDMARK_NAMES",
    "MASKS_FORMAT_VERSION",
    "MASK_NAMES",
    "PREVIEW_DIR",
    "Landmarks",
    "MaskBuild",
    "MaskParameters",
    "Mesh",
    "SurfaceGraph",
    "Transfer",
    "build_masks",
    "check_head_frame",
    "compute_masks",
    "detect_landmarks",
    "read_mask_dir",
    "read_mask_spec",
    "read_mesh",
    "render_previews",
    "transfer_masks",
    "write_mask_dir",
]
