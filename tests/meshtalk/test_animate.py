from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from facedata.audio import SAMPLE_RATE_HZ, mel_windows, utterance_log_mel
from facedata.errors import InputError
from facedata.meshio import read_obj, write_obj
from facedata.render import ellipsoid_mesh
from facedata.video import probe_media, read_video_frames
from meshtalk.animate import (
    DecoderStream,
    LabelPlan,
    Speech,
    StreamSmoother,
    VideoOptions,
    animate,
    animate_file,
    animate_speech,
    audio_codes,
    gaussian_kernel,
    iter_labels,
    log_mel_frames,
    read_animation,
    read_speech,
    segment_bounds,
    smooth_in_time,
    smooth_regions,
    speech_codes,
)
from meshtalk.checkpoint import save_checkpoint
from meshtalk.model import MeshTalk
from meshtalk.sampling import draw_sampling_noise, sample, sample_fast

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_VIDEO = VideoOptions(width_px=160, height_px=120)


def test_gaussian_kernel_size_9_sigma_2():
    kernel = gaussian_kernel(9, 2.0)
    weights = [math.exp(-((i - 4) ** 2) / 8) for i in range(9)]
    expected = torch.tensor([w / sum(weights) for w in weights])
    torch.testing.assert_close(kernel, expected)
    assert float(kernel.sum()) == pytest.approx(1.0)


def test_smoothing_an_impulse_gives_the_kernel_and_keeps_constants():
    geometry = torch.zeros(20, 2, 3)
    geometry[10, 1, 2] = 1.0
    smoothed = smooth_in_time(geometry)
    torch.testing.assert_close(smoothed[6:15, 1, 2], gaussian_kernel())
    assert smoothed[:, 0].abs().max() == 0
    constant = torch.full((7, 3, 3), 5.0)
    torch.testing.assert_close(smooth_in_time(constant), constant)


def test_replicate_padding_at_the_ends():
    geometry = torch.zeros(12, 1, 3)
    geometry[0] = 1.0  # the first frame is repeated 4 times before the start
    kernel = gaussian_kernel()
    assert float(smooth_in_time(geometry)[0, 0, 0]) == pytest.approx(float(kernel[:5].sum()), rel=1e-6)


def test_smoothing_equals_a_convolution_with_replicate_padding():
    geometry = torch.randn(2, 17, 5, 3)
    x = geometry.permute(0, 2, 3, 1).reshape(-1, 1, 17)  # (2*5*3, 1, T)
    x = torch.nn.functional.pad(x, (4, 4), mode="replicate")
    x = torch.nn.functional.conv1d(x, gaussian_kernel().view(1, 1, 9))
    torch.testing.assert_close(smooth_in_time(geometry), x.reshape(2, 5, 3, 17).permute(0, 3, 1, 2))


def test_regions_blend_smoothed_and_original_per_vertex_one_mask_after_the_other():
    torch.manual_seed(0)
    geometry = torch.randn(15, 3, 3)
    given = geometry.clone()
    forehead, neck = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 0.0, 1.0])
    result = smooth_regions(geometry, [forehead, neck])
    once = smooth_in_time(geometry)
    torch.testing.assert_close(result[:, 0], once[:, 0])  # forehead 1, neck 0
    assert torch.equal(result[:, 1], geometry[:, 1])  # untouched, exactly
    blended = 0.5 * once[:, 2] + 0.5 * geometry[:, 2]
    torch.testing.assert_close(result[:, 2], smooth_in_time(blended[:, None])[:, 0])  # neck smooths the blend
    assert not torch.equal(geometry, result) and torch.equal(geometry, given)  # input left as it was
    masks = [torch.rand(40) * (torch.rand(40) > 0.3), torch.rand(40) * (torch.rand(40) > 0.5)]
    many = torch.randn(2, 15, 40, 3)
    compiled = smooth_regions(many, masks)  # float32 on the CPU: the compiled pass
    assert torch.equal(smooth_regions(many, masks, threads=3), compiled)  # per vertex: any split
    in_torch = smooth_regions(many.double(), [m.double() for m in masks])  # float64: torch's operations (the GPU's)
    torch.testing.assert_close(compiled, in_torch.float(), rtol=1e-6, atol=1e-6)
    assert not torch.equal(compiled, many)


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_animate_decodes_the_sampled_labels(method):
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=1, frames=6)
    result = animate(model, batch["mel"], batch["template"], method=method, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        drawn = sample(model.context, model.encoder.audio(batch["mel"]), generator=torch.Generator().manual_seed(3))
        expected = model.decoder(batch["template"], drawn.one_hot)
    assert torch.equal(result.labels, drawn.labels)
    torch.testing.assert_close(result.geometry, expected)
    assert result.geometry.shape == (1, 6, config.n_vertices, 3)


# --- streaming pieces ------------------------------------------------------------------------------------------------


def speech_signal(seconds: float, rate_hz: int = SAMPLE_RATE_HZ, seed: int = 0) -> np.ndarray:
    """A voiced signal with syllable-like loudness, (N,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    envelope = np.clip(np.sin(2 * np.pi * 2.7 * t) + 0.3 * np.sin(2 * np.pi * 0.9 * t + 1), 0, None)
    voice = np.sin(2 * np.pi * 160 * t) + 0.4 * np.sin(2 * np.pi * 320 * t + 0.5) + 0.05 * rng.normal(size=t.size)
    return (0.3 * envelope * voice / 1.5).astype(np.float32)


def tiny_model(n_vertices: int, template: np.ndarray | None = None, **changes) -> MeshTalk:
    """A random tiny model whose output stays near the template (mean = template, std = 2 mm), with context
    weights large enough that sampled labels vary."""
    torch.manual_seed(0)
    model = MeshTalk(tiny_config(n_vertices=n_vertices, **changes)).eval()
    with torch.no_grad():
        for p in model.context.parameters():
            p.mul_(3.0)
        if template is not None:
            model.set_vertex_statistics(torch.from_numpy(template), torch.full((n_vertices, 3), 2.0))
    return model


def as_speech(audio: np.ndarray) -> Speech:
    return Speech(path=Path("generated.wav"), audio_16k=audio, source_rate_hz=SAMPLE_RATE_HZ, source_channels=1,
                  source_subtype="FLOAT", gain=1.0, n_frames=math.ceil(audio.size * 30 / SAMPLE_RATE_HZ))


def test_log_mel_blocks_equal_the_stored_utterance_mel():
    audio = speech_signal(2.3)
    n_frames = math.ceil(audio.size * 30 / SAMPLE_RATE_HZ)
    needed = -(-SAMPLE_RATE_HZ * n_frames // 30)  # ingest pads the audio to its frames' length
    stored = utterance_log_mel(np.pad(audio, (0, needed - audio.size)))
    pieces = np.concatenate([log_mel_frames(audio, a, min(len(stored), a + 37)) for a in range(0, len(stored), 37)])
    assert np.array_equal(pieces, stored)


@pytest.mark.parametrize("dilations", [(2, 4, 6, 2, 4, 6), (2, 4, 6)])  # released: 1 position left; seed: 49
def test_audio_codes_over_a_block_equal_the_encoder_on_each_window(dilations):
    model = tiny_model(12, audio_dilations=dilations)
    audio = speech_signal(1.5)
    mel = utterance_log_mel(audio)
    with torch.no_grad():
        expected = model.encoder.audio(torch.from_numpy(mel_windows(mel, 5, 30))[None])[0]  # (30, audio_dim)
    torch.testing.assert_close(audio_codes(model.encoder.audio, mel, 0, 5, 30), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(speech_codes(model.encoder.audio, audio, 5, 35, block_frames=7), expected,
                               rtol=1e-5, atol=1e-6)
    threaded = speech_codes(model.encoder.audio, audio, 5, 35, block_frames=7, threads=3)  # 5 blocks on 3 threads
    torch.testing.assert_close(threaded, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_decoder_in_pieces_equals_the_decoder(threads):
    model = tiny_model(12)
    batch = tiny_batch(model.config, batch=2, frames=23)
    labels = torch.randint(0, model.config.classes, (2, 23, model.config.heads))
    one_hot = torch.nn.functional.one_hot(labels, model.config.classes).float()
    template = batch["template"][:1]
    with torch.no_grad():
        expected = model.decoder(template.expand(2, -1, -1), one_hot)
    stream = DecoderStream(model.decoder, template, threads=threads)  # 3: pieces of 10 rows in 3 parts, of 6 in 3
    pieces = torch.cat([stream.decode(one_hot[:, a : a + 5]) for a in range(0, 23, 5)], dim=1)
    torch.testing.assert_close(pieces, expected, rtol=1e-5, atol=1e-5)
    # The last layer of several pieces in one call: the rows of each, in their shapes.
    stream = DecoderStream(model.decoder, template, threads=threads)
    rows = [stream.rows(one_hot[:, a:b]) for a, b in ((0, 4), (4, 5), (5, 23))]
    hidden = model.decoder.up[2].in_features
    assert [tuple(r.shape) for r in rows] == [(2, 4, hidden), (2, 1, hidden), (2, 18, hidden)]
    together = stream.vertices(rows)
    assert [tuple(g.shape) for g in together] == [(2, n, 12, 3) for n in (4, 1, 18)]
    torch.testing.assert_close(torch.cat(together, dim=1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [[1] * 30, [9, 1, 13, 7], [30], [4, 4, 4, 18]])
def test_stream_smoother_equals_smoothing_the_whole(sizes):
    geometry = torch.randn(2, 30, 6, 3)
    masks = [torch.rand(6), torch.tensor([0.0, 1.0, 0.0, 0.3, 0.0, 1.0])]
    smoother = StreamSmoother(masks, 30, threads=2 if len(sizes) == 4 else 1)  # the vertices in two parts
    out, first = [], 0
    for n in sizes:
        out.append(smoother.push(geometry[:, first : first + n]))
        first += n
    assert smoother.emitted == 30
    torch.testing.assert_close(torch.cat(out, dim=1), smooth_regions(geometry, masks), rtol=0, atol=1e-6)


def test_sampling_with_a_given_prefix_continues_the_chain():
    model = tiny_model(12)
    context, H, C, W = model.context, model.config.heads, model.config.classes, model.context.receptive_field
    codes = torch.randn(2, 70, model.config.audio_dim)
    noise = draw_sampling_noise(2, 70, H, C, generator=torch.Generator().manual_seed(1))
    whole = sample_fast(context, codes, noise=noise).labels
    first = sample_fast(context, codes[:, :41], noise=noise[:, :41]).labels
    rest = sample_fast(context, codes[:, 41 - W :], noise=torch.cat([torch.zeros(2, W, H, C), noise[:, 41:]], 1),
                       prefix=first[:, -W:]).labels[:, W:]
    assert torch.equal(torch.cat([first, rest], dim=1), whole)
    assert whole.unique().numel() > 1
    with pytest.raises(InputError, match="prefix"):
        sample_fast(context, codes, prefix=first[:1, :5])


def test_segments_cover_every_frame_once_and_are_warmed_up():
    bounds = segment_bounds(200, 60, 20)
    assert bounds[0] == (0, 0, 80) and bounds[1] == (60, 80, 140) and bounds[-1] == (120, 140, 200)
    own = [f for _, a, b in bounds for f in range(a, b)]
    assert own == list(range(200))
    assert all(own_first - first == (0 if k == 0 else 20) for k, (first, own_first, _) in enumerate(bounds))
    assert segment_bounds(50, 60, 20) == [(0, 0, 50)]


def stream(model: MeshTalk, audio: np.ndarray, template: np.ndarray, masks: list[np.ndarray], plan: LabelPlan,
           decode_frames: int) -> tuple[np.ndarray, np.ndarray]:
    pieces = list(animate_speech(model, as_speech(audio), template, plan=plan, smoothing_masks=masks,
                                 decode_frames=decode_frames))
    assert [p[0] for p in pieces] == list(np.cumsum([0] + [p[1].shape[1] for p in pieces[:-1]]))
    return np.concatenate([p[1] for p in pieces], axis=1), np.concatenate([p[2] for p in pieces], axis=1)


@pytest.fixture(scope="module")
def stream_case():
    rng = np.random.default_rng(0)
    template = (30 * rng.normal(size=(20, 3))).astype(np.float32)
    masks = [(rng.uniform(size=20) * (rng.uniform(size=20) > 0.5)).astype(np.float32),
             rng.uniform(size=20).astype(np.float32)]
    return tiny_model(20, template), speech_signal(5.0), template, masks


def test_chunked_chain_equals_one_pass_and_animate(stream_case):
    """Memory is bounded by processing pieces; pieces give the labels of one pass exactly, and the geometry to
    float rounding (matrix products of other sizes round differently)."""
    model, audio, template, masks = stream_case
    whole, whole_labels = stream(model, audio, template, masks, LabelPlan(chunk_frames=1000), 1000)
    pieces, piece_labels = stream(model, audio, template, masks, LabelPlan(chunk_frames=7), 5)
    assert whole.shape == (1, 150, 20, 3) and whole_labels.shape == (1, 150, model.config.heads)
    assert np.array_equal(piece_labels, whole_labels)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-4)
    # ... and they are animate() on the whole sequence followed by the reference's smoothing
    mel = utterance_log_mel(np.pad(audio, (0, 150 * 1600 // 3 - audio.size)))
    reference = animate(model, torch.from_numpy(mel_windows(mel, 0, 150))[None], torch.from_numpy(template)[None],
                        generator=torch.Generator().manual_seed(0))
    assert np.array_equal(reference.labels.numpy(), whole_labels)
    smoothed = smooth_regions(reference.geometry, [torch.from_numpy(m) for m in masks])
    np.testing.assert_allclose(whole, smoothed.numpy(), rtol=0, atol=1e-4)


def test_segments_do_not_depend_on_batching_and_one_segment_is_the_chain(stream_case):
    model, audio, template, masks = stream_case
    together, labels_together = stream(model, audio, template, masks, LabelPlan(segment_frames=25), 1000)
    apart, labels_apart = stream(model, audio, template, masks, LabelPlan(segment_frames=25, batch_segments=1), 3)
    assert np.array_equal(labels_together, labels_apart)
    np.testing.assert_allclose(together, apart, rtol=0, atol=1e-4)
    for threads in (2, 4):  # a batch of 6 segments cut into parts sampled on threads, 2 samples per segment
        plan = LabelPlan(segment_frames=25, samples=2, seed=3)
        _, threaded = stream(model, audio, template, masks, replace(plan, threads=threads), 1000)
        _, one = stream(model, audio, template, masks, replace(plan, threads=1), 1000)
        assert np.array_equal(threaded, one)
        assert not np.array_equal(threaded[0], threaded[1])  # the two samples differ: rows were not mixed up
    chain, chain_labels = stream(model, audio, template, masks, LabelPlan(), 1000)
    single, single_labels = stream(model, audio, template, masks, LabelPlan(segment_frames=200), 1000)
    assert np.array_equal(single_labels, chain_labels)
    np.testing.assert_allclose(single, chain, rtol=0, atol=1e-4)
    assert not np.array_equal(labels_together, chain_labels)  # segments restart the chain


def test_segment_boundaries_crossfade_from_one_chain_to_the_next(stream_case):
    """Over the W frames before a segment, the geometry moves from the earlier segment's decode to the later's."""
    model, audio, template, _ = stream_case
    W = model.context.receptive_field
    plan = LabelPlan(segment_frames=40)
    geometry, labels = stream(model, audio, template, [], plan, 1000)
    pieces = list(iter_labels(model.context, lambda a, b: speech_codes(model.encoder.audio, audio, a, b), 150, plan))
    assert [p.first for p in pieces] == [0, 60, 100, 140]
    decoder = DecoderStream(model.decoder, torch.from_numpy(template)[None])
    one_hot = lambda x: torch.nn.functional.one_hot(x, model.config.classes).float()  # noqa: E731
    decoder.decode(one_hot(pieces[0].labels[:, : 60 - W]))
    state = decoder.state
    earlier = decoder.decode(one_hot(pieces[0].labels[:, 60 - W :]))
    decoder.state = state
    later = decoder.decode(one_hot(pieces[1].warmup))
    ramp = torch.arange(1, W + 1) / (W + 1)
    expected = earlier + (later - earlier) * ramp[:, None, None]
    np.testing.assert_allclose(geometry[:, 60 - W : 60], expected.numpy(), rtol=0, atol=1e-4)
    assert np.array_equal(labels[:, 60 - W : 60], pieces[0].labels[:, 60 - W :].numpy())


def test_the_first_frames_come_out_before_long_audio_is_processed(stream_case):
    """Bounded memory: frames leave the pipeline while most of a minute of audio has not been looked at."""
    model, _, template, masks = stream_case
    calls = []
    speech = as_speech(speech_signal(60.0))
    original = speech_codes

    def counting(encoder, audio, a, b, **kw):
        calls.append((a, b))
        return original(encoder, audio, a, b, **kw)

    import meshtalk.animate.stream as module  # where animate_speech looks up speech_codes

    module.speech_codes, saved = counting, module.speech_codes
    try:
        first, geometry, _ = next(animate_speech(model, speech, template, plan=LabelPlan(), smoothing_masks=masks))
    finally:
        module.speech_codes = saved
    assert speech.n_frames == 1800 and first == 0 and 0 < geometry.shape[1] <= 600
    assert max(b for _, b in calls) <= 600


# --- files in, files out ---------------------------------------------------------------------------------------------


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    header = (f"ply\nformat ascii 1.0\nelement vertex {len(vertices)}\nproperty float x\nproperty float y\n"
              f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    rows = [" ".join(f"{c:.5f}" for c in v) for v in vertices] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text(header + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    """A face-sized cap (61 vertices) as OBJ and PLY, forehead/neck masks, a tiny checkpoint, a 3 s WAV."""
    root = tmp_path_factory.mktemp("animate")
    vertices, faces = ellipsoid_mesh(rings=6, segments=10, cap_deg=110)
    write_obj(root / "face.obj", vertices, faces)
    write_ply(root / "face.ply", vertices, faces)
    masks = root / "masks"
    masks.mkdir()
    y = vertices[:, 1]
    for name, weights in (("forehead", np.clip((y - 30) / 40, 0, 1)), ("neck", np.clip((-40 - y) / 40, 0, 1))):
        (masks / f"{name}.txt").write_text("\n".join(f"{w:.4f}" for w in weights) + "\n")
    template = read_obj(root / "face.obj").vertices
    save_checkpoint(root / "tiny.pt", tiny_model(len(vertices), template))
    soundfile.write(root / "speech.wav", speech_signal(3.0), SAMPLE_RATE_HZ, subtype="PCM_16")
    return root


def animate_case(root: Path, out: Path, **options):
    defaults = {"template": root / "face.obj", "masks_dir": root / "masks", "video": SMALL_VIDEO}
    return animate_file(root / "tiny.pt", options.pop("audio", root / "speech.wav"), out, **{**defaults, **options})


def test_animate_writes_npz_obj_frames_and_an_mp4_with_audio(face_files, tmp_path):
    result = animate_case(face_files, tmp_path / "out", obj=True)
    T = 90
    anim = read_animation(result.npz)
    assert result.n_frames == T and anim.vertices.shape == (T, 61, 3) and anim.vertices.dtype == np.float32
    assert isinstance(anim.vertices, np.memmap)  # mapped from the file, not loaded
    assert anim.labels.shape == (T, 3) and anim.fps == 30 and anim.faces.shape == (110, 3)
    assert anim.options["smoothing"] and anim.options["seed"] == 0 and anim.options["samples"] is None
    with np.load(result.npz) as data:  # plain numpy reads it too
        assert data["vertices"].shape == (T, 61, 3) and json.loads(str(data["options"]))["argmax"] is False
    objs = sorted((tmp_path / "out" / "obj").glob("*.obj"))
    assert len(objs) == T and objs[0].name == "frame_000000.obj"
    back = read_obj(objs[45])
    assert back.vertices.shape == (61, 3) and np.array_equal(back.faces, anim.faces)
    np.testing.assert_allclose(back.vertices, anim.vertices[45], atol=1e-4)

    info = probe_media(result.video)
    assert (info.video_codec, info.audio_codec, info.pix_fmt, info.fps) == ("h264", "aac", "yuv420p", 30)
    assert info.video_frames == T and info.video_seconds == pytest.approx(T / 30, abs=1e-3)
    assert info.audio_seconds == pytest.approx(T / 30, abs=0.03)
    assert (info.width_px, info.height_px) == (160, 120)
    for frame in read_video_frames(result.video, max_frames=3):
        assert frame.std() > 5  # a shaded face on the background, not a blank frame
    assert set(result.times) >= {"read audio", "audio codes", "labels", "decode", "smooth", "video"}
    assert result.realtime_factor > 0


def test_same_seed_same_output_other_seed_other_samples(face_files, tmp_path):
    def run(name, **options):
        return read_animation(animate_case(face_files, tmp_path / name, video=None, samples=2, **options).npz)

    first, again, other = run("a", seed=5), run("b", seed=5), run("c", seed=6)
    assert first.vertices.shape == (2, 90, 61, 3) and first.labels.shape == (2, 90, 3)
    assert np.array_equal(first.vertices, again.vertices) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, other.labels)
    assert not np.array_equal(first.labels[0], first.labels[1])  # two plausible animations of the same audio
    argmax = [run(f"m{seed}", seed=seed, argmax=True) for seed in (1, 2)]
    assert np.array_equal(argmax[0].labels, argmax[1].labels)
    assert np.array_equal(argmax[0].labels[0], argmax[0].labels[1])


def test_several_samples_make_one_side_by_side_video(face_files, tmp_path):
    result = animate_case(face_files, tmp_path / "out", samples=3, template=face_files / "face.ply",
                          smoothing=False)
    info = probe_media(result.video)
    assert info.video_frames == 90 and info.width_px == 3 * 160 and info.height_px > 120  # titles above


@pytest.mark.parametrize("rate_hz, subtype, channels", [
    (16_000, "PCM_U8", 1), (16_000, "PCM_16", 1), (48_000, "PCM_24", 1), (22_050, "FLOAT", 1), (44_100, "PCM_16", 2),
    (8_000, "DOUBLE", 2),
])
def test_any_wav_format_is_read_as_ingest_reads_it(tmp_path, rate_hz, subtype, channels):
    signal = speech_signal(1.2, rate_hz)
    data = np.stack([signal, 0.5 * signal], axis=1) if channels == 2 else signal
    path = tmp_path / "speech.wav"
    soundfile.write(path, data, rate_hz, subtype=subtype)
    speech = read_speech(path)
    assert speech.source_rate_hz == rate_hz and speech.source_channels == channels
    assert speech.audio_16k.dtype == np.float32 and speech.seconds == pytest.approx(1.2, abs=1e-3)
    assert speech.n_frames == 36
    assert float(np.abs(speech.audio_16k).mean()) == pytest.approx(0.01, rel=1e-3)  # MeshTalk's loudness


def test_a_stereo_44k_float_wav_animates(face_files, tmp_path):
    path = tmp_path / "stereo.wav"
    signal = speech_signal(1.0, 44_100)
    soundfile.write(path, np.stack([signal, -signal * 0.3], 1), 44_100, subtype="FLOAT")
    result = animate_case(face_files, tmp_path / "out", audio=path)
    assert result.n_frames == 30 and probe_media(result.video).audio_seconds == pytest.approx(1.0, abs=0.03)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from meshtalk.cli import main

    monkeypatch.setattr(sys, "argv", ["meshtalk", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code or 0, captured.out, captured.err


def test_cli_animate_prints_stage_times_and_writes_the_files(face_files, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face_files / "tiny.pt"),
                             "--audio", str(face_files / "speech.wav"), "--out", str(tmp_path / "out"),
                             "--template", str(face_files / "face.obj"), "--masks", str(face_files / "masks"),
                             "--width", "96", "--height", "80", "--verbose", "--obj")
    assert code == 0, err
    assert "real time" in out and "labels" in out and "decode" in out
    assert (tmp_path / "out" / "animation.npz").is_file() and (tmp_path / "out" / "animation.mp4").is_file()
    assert len(list((tmp_path / "out" / "obj").glob("*.obj"))) == 90


def test_cli_wrong_vertex_count_is_one_line_naming_file_expected_actual(face_files, tmp_path, monkeypatch, capsys):
    other, faces = ellipsoid_mesh(rings=5, segments=10, cap_deg=110)  # 51 vertices, the model has 61
    write_obj(tmp_path / "other.obj", other, faces)
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face_files / "tiny.pt"),
                           "--audio", str(face_files / "speech.wav"), "--out", str(tmp_path / "out"),
                           "--template", str(tmp_path / "other.obj"), "--no-smoothing")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "other.obj" in err and "61 vertices" in err and "51 vertices" in err and "tiny.pt" in err
    assert not (tmp_path / "out" / "animation.npz").exists()


def test_cli_smoothing_without_masks_says_how_to_fix_it(face_files, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face_files / "tiny.pt"),
                           "--audio", str(face_files / "speech.wav"), "--out", str(tmp_path / "out"),
                           "--template", str(face_files / "face.obj"))
    assert code == 1 and err.count("\n") == 1 and "--no-smoothing" in err


def test_a_minute_of_speech_animates_in_pieces(face_files, tmp_path):
    soundfile.write(tmp_path / "minute.wav", speech_signal(60.0, 48_000), 48_000, subtype="PCM_16")
    result = animate_case(face_files, tmp_path / "out", audio=tmp_path / "minute.wav", video=None,
                          segment_frames=60)
    anim = read_animation(result.npz)
    assert anim.vertices.shape == (1800, 61, 3) and np.isfinite(anim.vertices[::97]).all()
    assert result.audio_seconds == pytest.approx(60.0)
