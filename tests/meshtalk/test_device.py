"""The GPU path's code run with the device a parameter: sampling, training steps under bf16 autocast, ``meshtalk
train``, ``evaluate`` and ``animate`` with ``--device``, and benchmarks/bench_gpu.py. "cuda" runs where a GPU is
(skipped here otherwise), so the CPU runs check the same code that a GPU machine runs first."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_animate import speech_signal, tiny_model
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from facedata.errors import InputError
from facedata.meshio import write_obj
from facedata.render import ellipsoid_mesh
from meshtalk.animate import animate_file, read_animation
from meshtalk.checkpoint import save_checkpoint
from meshtalk.evaluate import EvaluateConfig, evaluate, resolve_device
from meshtalk.model import ContextModel, MeshTalk
from meshtalk.objectives import stage1_losses, stage2_losses
from meshtalk.sampling import draw_sampling_noise, sample_fast, sample_reference
from meshtalk.train import main_entry

REPO = Path(__file__).resolve().parents[2]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", DEVICES)
def test_sampler_on_the_device_gives_the_reference_labels(device):
    torch.manual_seed(0)
    context = ContextModel(tiny_config(heads=6, classes=5, context_channels_per_head=3)).eval()
    with torch.no_grad():
        for p in context.parameters():
            p.mul_(3.0)
    audio = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(1))
    noise = draw_sampling_noise(2, 30, 6, 5, generator=torch.Generator().manual_seed(2))
    reference = sample_reference(context, audio, noise=noise).labels
    on_device = sample_fast(context.to(device), audio.to(device), noise=noise).labels  # noise moved for it
    assert on_device.device.type == device
    agreement = (on_device.cpu() == reference).float().mean()
    # The CPU gives the reference's labels; another device's rounding may break a near tie, and the chain moves on.
    assert agreement == 1.0 if device == "cpu" else agreement > 0.9


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_under_bf16_autocast_compute_in_bf16(device):
    """Both stages' forward under ``torch.autocast(bfloat16)`` (``meshtalk train --bf16``): the linear layers
    compute in bf16, the losses stay near the float32 ones, the gradients land in float32 and are finite."""
    config = tiny_config(heads=4, classes=8)
    torch.manual_seed(0)
    model = MeshTalk(config).to(device)
    batch = {k: v.to(device) for k, v in tiny_batch(config, batch=2, frames=4).items()}
    seen: list[torch.dtype] = []
    model.decoder.up[2].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    for forward in (stage1_losses, stage2_losses):
        torch.manual_seed(1)
        full = float(forward(model, batch).total)
        torch.manual_seed(1)
        model.zero_grad()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            result = forward(model, batch)
        result.total.backward()
        assert math.isfinite(float(result.total)) and abs(float(result.total) - full) <= 0.05 * abs(full) + 1e-3
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert seen[0] == torch.float32 and torch.bfloat16 in seen  # float32 first, then the autocast pass


@pytest.mark.parametrize("device", DEVICES)
def test_train_runs_on_the_device(tiny_store, tmp_path, device):
    settings = {"store": str(tiny_store), "out": str(tmp_path / "run"), "stage": 1, "steps": 2, "frames": 8,
                "batch_size": 2, "workers": 0, "model": {"heads": 4, "classes": 8, "context_channels_per_head": 8},
                "val_every": 0, "device": device, "bf16": True}
    result = main_entry(settings, resume=False, progress=False)
    assert result.step == 2 and math.isfinite(result.losses["loss"])


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device")
    vertices, faces = ellipsoid_mesh(rings=6, segments=10, cap_deg=110)
    write_obj(root / "face.obj", vertices, faces)
    save_checkpoint(root / "tiny.pt", tiny_model(len(vertices), vertices.astype(np.float32)))
    soundfile.write(root / "speech.wav", speech_signal(2.0, 48_000), 48_000, subtype="PCM_16")
    return root


@pytest.mark.parametrize("device", DEVICES)
def test_animate_runs_on_the_device(face, tmp_path, device):
    def run(name: str, on: str):
        result = animate_file(face / "tiny.pt", face / "speech.wav", tmp_path / name, template=face / "face.obj",
                              smoothing=False, segment_frames=30, video=None, device=on)
        return read_animation(result.npz)

    here, cpu = run("here", device), run("cpu", "cpu")
    assert here.options["device"].startswith(device) and here.vertices.shape == cpu.vertices.shape == (60, 61, 3)
    if device == "cpu":
        assert np.array_equal(here.labels, cpu.labels) and np.array_equal(here.vertices, cpu.vertices)
    else:
        assert (here.labels == cpu.labels).mean() > 0.9 and np.isfinite(here.vertices).all()


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_runs_on_the_device(tiny_store, tmp_path, device):
    checkpoint = save_checkpoint(tmp_path / "model.pt", tiny_model(64))  # the store's 64 vertices
    result = evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), samples=1, device=device))
    assert result["settings"]["device"].startswith(device)
    if device == "cpu":  # the same numbers as the default device here
        again = evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), samples=1))
        assert again["relative_to_template"] == result["relative_to_template"]


def test_an_unavailable_device_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")


def load_bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_gpu", module)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_runs_its_parts_at_toy_sizes_on_the_cpu(capsys):
    bench = load_bench_gpu()
    assert bench.main(["--device", "cpu", "--tiny", "--steps", "1", "--budget-seconds", "2",
                       "--animate-seconds", "1.5"]) == 0
    out = capsys.readouterr().out
    for case in ("stage 1, T = 32, float32", "stage 2, T = 64, bf16 autocast", "one sequence, 126 frames",
                 "16 segments of 140 frames", "real-time factor", "RESULT cpu"):
        assert case in out, case
    assert "labels equal to the CPU sampler's: 100.00 %" in out


def test_bench_gpu_without_cuda_exits_with_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert load_bench_gpu().main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_gpu: no CUDA device") and "\n" not in err


def test_animate_device_option_of_the_cli(face, tmp_path):
    from typer.testing import CliRunner

    from meshtalk.cli import app

    done = CliRunner().invoke(app, ["animate", "--checkpoint", str(face / "tiny.pt"), "--audio",
                                    str(face / "speech.wav"), "--template", str(face / "face.obj"),
                                    "--no-smoothing", "--no-video", "--out", str(tmp_path / "cli"),
                                    "--device", "cpu"])
    assert done.exit_code == 0, done.output
    anim = read_animation(tmp_path / "cli" / "animation.npz")
    assert anim.options["device"] == "cpu" and anim.options["source_rate_hz"] == 48_000


def test_tensors_on_huge_pages_keep_their_values_shapes_and_life():
    import gc
    import mmap

    from meshtalk.device import HUGE_PAGE_BYTES, on_huge_pages

    weights = [torch.randn(700, 1000), torch.randint(-127, 128, (3, 999, 1001), dtype=torch.int8),
               torch.zeros(0), torch.arange(5)]
    packed = on_huge_pages(weights)
    gc.collect()  # the buffer must live as long as the tensors do
    for before, after in zip(weights, packed, strict=True):
        assert torch.equal(before, after) and after.shape == before.shape and after.stride() == before.stride()
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert packed[0].data_ptr() % HUGE_PAGE_BYTES == 0  # the first copy starts a 2 MB page
        assert all(t.data_ptr() % 64 == 0 for t in packed if t.numel())
        assert packed[1].data_ptr() != weights[1].data_ptr()
    small, strided = [torch.randn(10)], [torch.randn(2000, 600).t()]
    assert on_huge_pages(small)[0] is small[0] and on_huge_pages(strided)[0] is strided[0]  # left as they are
