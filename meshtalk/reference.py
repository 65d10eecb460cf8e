"""Import of the released MeshTalk weights: ``encoder.pkl``, ``vertex_unet.pkl``, ``context_model.pkl``.

Each file is a ``torch.save`` of a state dict under the reference's names. H, C and V are read from the shapes
(V from the decoder's vertex bias, H x C from the fusion MLP's output, the channels per head from the rows of the
embedding's mask that see nothing, which are head 0's); the other sizes are the released model's. The context
masks in the files are checked against the strict mask and then dropped (ours are derived from the config).
Name mapping (reference file: reference prefix -> ours):
- encoder: ``audio_encoder.melspec.spectrogram.window``, ``audio_encoder.melspec.mel_scale.fb`` ->
  ``frontend.window``, ``frontend.filterbank``;
- encoder: ``audio_encoder.{convert_dimensions,convs,code}`` -> ``encoder.audio.{input_conv,convs,code}``;
- encoder: ``expression_encoder.*`` -> ``encoder.expression.*`` (mean and stddev 1 x 1 x V x 3 -> V x 3);
- encoder: ``fusion_model.mlp.{0,2,4}`` -> ``encoder.fusion.layers.{0,1,2}``;
- vertex_unet: ``encoder``, ``fusion``, ``temporal``, ``decoder`` -> ``decoder.down``, ``decoder.code_fusion``,
  ``decoder.lstm``, ``decoder.up``; ``vertex_bias``, ``mean``, ``stddev`` -> ``decoder.*``;
- context_model: ``embedding``, ``context_layers.{i}``, ``logits`` -> ``context.embedding``,
  ``context.layers.{i}``, ``context.logits``, with the parts ``masked_linear``, ``unmasked_linear``
  (out x in x 1 -> out x in), ``historic`` (out x in x 2 -> out x 2in) -> ``masked``, ``audio``, ``history``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from facedata.errors import InputError
from meshtalk.checkpoint import save_checkpoint
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MaskedLayer, MeshTalk

REFERENCE_FILES = ("encoder", "vertex_unet", "context_model")

# (our prefix, reference file, reference prefix), the first match wins.
_PREFIXES = [
    ("frontend.window", "encoder", "audio_encoder.melspec.spectrogram.window"),
    ("frontend.filterbank", "encoder", "audio_encoder.melspec.mel_scale.fb"),
    ("encoder.audio.input_conv.", "encoder", "audio_encoder.convert_dimensions."),
    ("encoder.audio.", "encoder", "audio_encoder."),
    ("encoder.expression.", "encoder", "expression_encoder."),
    ("encoder.fusion.layers.0.", "encoder", "fusion_model.mlp.0."),
    ("encoder.fusion.layers.1.", "encoder", "fusion_model.mlp.2."),
    ("encoder.fusion.layers.2.", "encoder", "fusion_model.mlp.4."),
    ("decoder.down.", "vertex_unet", "encoder."),
    ("decoder.code_fusion.", "vertex_unet", "fusion."),
    ("decoder.lstm.", "vertex_unet", "temporal."),
    ("decoder.up.", "vertex_unet", "decoder."),
    ("decoder.", "vertex_unet", ""),
    ("context.layers.", "context_model", "context_layers."),
    ("context.", "context_model", ""),
]
_CONTEXT_PARTS = {"masked": "masked_linear", "audio": "unmasked_linear", "history": "historic"}


def reference_key(key: str) -> tuple[str, str]:
    """Our state-dict key -> (reference file, reference key)."""
    for ours, file, theirs in _PREFIXES:
        if key.startswith(ours):
            ref = theirs + key[len(ours):]
            if file == "context_model":
                parts = ref.split(".")
                ref = ".".join(_CONTEXT_PARTS.get(p, p) for p in parts)
            return file, ref
    raise KeyError(key)


def to_reference_layout(key: str, tensor: Tensor) -> Tensor:
    """Our tensor -> the reference's layout.

    Per-vertex buffers V x 3 -> 1 x 1 x V x 3; the context model's 1x1 layers out x in -> out x in x 1; its
    historic layers out x (2 * in) (frame t - 1 - d, then t - 1) -> the kernel-2 convolution's out x in x 2.
    """
    if key.endswith((".mean", ".stddev")):
        return tensor.reshape(1, 1, *tensor.shape)  # (1, 1, V, 3)
    if key.startswith("context.") and key.endswith(".weight"):
        if ".history." in key:
            out, two_in = tensor.shape
            return tensor.reshape(out, 2, two_in // 2).permute(0, 2, 1).contiguous()  # (out, in, 2)
        return tensor.unsqueeze(-1)  # (out, in, 1)
    return tensor


def from_reference_layout(key: str, tensor: Tensor) -> Tensor:
    """The inverse of ``to_reference_layout`` (``key`` is ours)."""
    if key.endswith((".mean", ".stddev")):
        return tensor.reshape(tensor.shape[-2:])  # (V, 3)
    if key.startswith("context.") and key.endswith(".weight"):
        if ".history." in key:
            return tensor.permute(0, 2, 1).reshape(tensor.shape[0], -1)  # (out, 2 * in)
        return tensor.squeeze(-1)  # (out, in)
    return tensor


def export_reference(model: MeshTalk) -> dict[str, dict[str, Tensor]]:
    """The three reference state dicts of ``model`` (masks included), keyed by file name without ``.pkl``.

    Only a ``strict`` model has the reference's meaning; the masks written are the model's own.
    """
    states: dict[str, dict[str, Tensor]] = {name: {} for name in REFERENCE_FILES}
    for key, tensor in model.state_dict().items():
        file, ref = reference_key(key)
        states[file][ref] = to_reference_layout(key, tensor.detach().cpu().clone())
    for prefix, layer in _masked_layers(model):
        states["context_model"][f"{prefix}.mask"] = layer.mask.detach().cpu().unsqueeze(-1)  # (out, in, 1)
    return states


def read_reference_file(path: Path) -> dict[str, Tensor]:
    """One reference ``.pkl`` state dict.

    Raises:
        InputError: the file is missing, unreadable, or not a dict of tensors.
    """
    if not path.is_file():
        raise InputError(path, "missing reference file", expected="a torch state dict", actual="no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise InputError(path, f"unreadable state dict: {e}".splitlines()[0]) from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(path, "not a state dict", expected="a dict of tensors", actual=type(state).__name__)
    return state


def infer_config(states: dict[str, dict[str, Tensor]], directory: Path) -> MeshTalkConfig:
    """H, C and V of the reference state dicts (the released sizes for everything else).

    Raises:
        InputError: a key needed for the sizes is missing, or the sizes are inconsistent.
    """

    def need(file: str, key: str) -> Tensor:
        if key not in states[file]:
            raise InputError(directory / f"{file}.pkl", f"missing key {key}", expected="a tensor", actual="no key")
        return states[file][key]

    vertex_bias = need("vertex_unet", "vertex_bias")
    heads_x_classes = need("encoder", "fusion_model.mlp.4.weight").shape[0]
    mask = need("context_model", "embedding.mask")  # (H*K, H*C, 1); head 0's K rows see nothing
    per_head = int((mask.reshape(mask.shape[0], -1).sum(dim=1) == 0).sum())
    path = directory / "context_model.pkl"
    if per_head == 0 or mask.shape[0] % per_head or heads_x_classes % (mask.shape[0] // per_head):
        raise InputError(path, "embedding.mask is not a strict head mask", expected="head 0's rows all zero",
                         actual=f"{per_head} zero rows of {mask.shape[0]}")
    heads = mask.shape[0] // per_head
    if vertex_bias.numel() % 3:
        raise InputError(directory / "vertex_unet.pkl", "vertex_bias is not V x 3", expected="a multiple of 3",
                         actual=vertex_bias.numel())
    return MeshTalkConfig.preset("meshtalk", heads=heads, classes=heads_x_classes // heads,
                                 n_vertices=vertex_bias.numel() // 3, context_channels_per_head=per_head)


def load_reference(directory: str | Path) -> MeshTalk:
    """Build the model held by a directory of reference state dicts (in eval mode).

    Raises:
        InputError: a file is missing or unreadable; a key is missing, unexpected or of the wrong shape (the
            message names the file, the reference key and both shapes); a context mask is not the strict one.
    """
    directory = Path(directory)
    states = {name: read_reference_file(directory / f"{name}.pkl") for name in REFERENCE_FILES}
    model = MeshTalk(infer_config(states, directory))
    expected = export_reference(model)
    ours = {}
    for key in model.state_dict():
        file, ref = reference_key(key)
        ours[key] = from_reference_layout(key, _take(states[file], ref, expected[file][ref], directory / f"{file}.pkl"))
    for prefix, _ in _masked_layers(model):
        key = f"{prefix}.mask"
        mask = _take(states["context_model"], key, expected["context_model"][key], directory / "context_model.pkl")
        if not torch.equal(mask, expected["context_model"][key]):
            raise InputError(directory / "context_model.pkl", f"{key} is not the strict head mask",
                             expected="input heads < output head", actual="another pattern")
    for file in REFERENCE_FILES:
        for key, tensor in states[file].items():
            if key not in expected[file]:
                raise InputError(directory / f"{file}.pkl", f"unexpected key {key}", expected="no key",
                                 actual=f"shape {tuple(tensor.shape)}")
    model.load_state_dict(ours)
    return model.eval()


def import_reference(directory: str | Path, out: str | Path) -> MeshTalk:
    """Convert a directory of released MeshTalk weights into one checkpoint of this project's format.

    Raises:
        InputError: see ``load_reference``.
    """
    model = load_reference(directory)
    save_checkpoint(out, model, extra={"imported_from": str(Path(directory).resolve())})
    return model


def _take(state: dict[str, Tensor], key: str, expected: Tensor, path: Path) -> Tensor:
    if key not in state:
        raise InputError(path, f"missing key {key}", expected=f"shape {tuple(expected.shape)}", actual="no key")
    tensor = state[key]
    if tuple(tensor.shape) != tuple(expected.shape):
        raise InputError(path, f"key {key} has the wrong shape", expected=tuple(expected.shape),
                         actual=tuple(tensor.shape))
    return tensor.to(expected.dtype)


def _masked_layers(model: MeshTalk) -> list[tuple[str, MaskedLayer]]:
    """(reference prefix, layer) of every context-model layer."""
    ctx = model.context
    return [("embedding", ctx.embedding), *((f"context_layers.{i}", l) for i, l in enumerate(ctx.layers)),
            ("logits", ctx.logits)]
