"""The reference's audio front end (``meshtalk.frontend``): its frame count, parity with the golden vectors of the
reference model on real speech, and ``animate`` / ``evaluate`` with ``audio_frontend="reference"``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_animate import face_files, speech_signal  # noqa: F401
from test_evaluate import checkpoint  # noqa: F401
from test_golden import golden, model, reference_dir  # noqa: F401
from tiny_models import single_thread  # noqa: F401

from facedata.audio import SAMPLE_RATE_HZ
from facedata.errors import InputError
from facedata.meshio import read_obj
from facedata.store import Store
from meshtalk.animate import LabelPlan, Speech, animate, animate_file, animate_speech, read_animation, read_speech
from meshtalk.checkpoint import load_checkpoint, save_checkpoint
from meshtalk.data import read_sequence, select_sequences
from meshtalk.evaluate import EvaluateConfig, evaluate
from meshtalk.frontend import (
    REFERENCE_HOP_SAMPLES,
    REFERENCE_PAD_SAMPLES,
    reference_frame_count,
    reference_log_mel,
    reference_speech_codes,
    reference_windows,
    stored_reference_codes,
)
from meshtalk.sampling import sample

pytestmark = pytest.mark.usefixtures("single_thread")


def windows_by_slicing(audio: np.ndarray) -> np.ndarray:
    """The reference's chunking written out plainly: pad by 7733 zeros, a one-second window every 533 samples
    while a whole window fits before the padded end. (N,) -> (T, 16000)."""
    padded = np.pad(audio, REFERENCE_PAD_SAMPLES)
    return np.stack([padded[s : s + 16000] for s in range(0, padded.size - 16000, REFERENCE_HOP_SAMPLES)])


def test_frame_count_is_ceil_n_minus_534_over_533():
    assert reference_frame_count(67_552) == 126  # the release's count for this sentence (ours makes 127)
    assert math.ceil(67_552 * 30 / SAMPLE_RATE_HZ) == 127
    for n in [*range(535, 2200), 16_000, 48_000, 67_552, 160_000, 533 * 300 + 534, 533 * 300 + 535]:
        T = reference_frame_count(n)
        assert T == math.ceil((n - 534) / 533), n
        # Every window lies inside the padded audio, and one more would not.
        assert 533 * (T - 1) + 16000 <= n + 2 * 7733 < 533 * T + 16000 + 1, n
    assert [reference_frame_count(n) for n in (0, 1, 534)] == [0, 0, 0]
    audio = speech_signal(1.3)
    windows = reference_windows(audio, 0, reference_frame_count(audio.size))
    np.testing.assert_array_equal(windows, windows_by_slicing(audio))


def test_windows_of_any_frame_range_are_the_same_windows():
    audio = speech_signal(0.9, seed=2)
    whole = reference_windows(audio, 0, 40)  # past the reference's 27 frames: zeros beyond the audio's end
    np.testing.assert_array_equal(reference_windows(audio, 11, 17), whole[11:17])
    assert reference_frame_count(audio.size) == 27
    k = 39
    inside = audio.size - (533 * k - 7733)  # samples of window k still inside the audio
    assert 0 < inside < 16000 and not whole[k, inside:].any()


def golden_utterance(vectors: dict[str, np.ndarray]) -> np.ndarray:
    """The real speech behind the golden windows of the first sequence: they start 7733 zeros before it and step
    533 samples, so they rebuild its first 533 * 29 + 8267 samples."""
    windows = vectors["in.audio"][0]  # (30, 16000)
    padded = np.zeros(533 * (len(windows) - 1) + 16000, np.float32)
    for k, window in enumerate(windows):
        padded[533 * k : 533 * k + 16000] = window
    assert not padded[:REFERENCE_PAD_SAMPLES].any() and padded[REFERENCE_PAD_SAMPLES]
    return padded[REFERENCE_PAD_SAMPLES:]


def test_waveform_to_windows_mel_codes_and_labels_match_the_reference(golden, model):  # noqa: F811
    audio = golden_utterance(golden)  # (23724,) 16 kHz, loudness-normalised as the golden inputs are
    T = golden["in.audio"].shape[1]
    assert reference_frame_count(audio.size) >= T
    np.testing.assert_array_equal(reference_windows(audio, 0, T), golden["in.audio"][0])
    mel = reference_log_mel(model, audio, 0, T)  # (T, 80, 101)
    expected = torch.from_numpy(golden["out.log_melspec"][0])
    torch.testing.assert_close(mel, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    codes = reference_speech_codes(model, audio, 0, T, block_frames=7)  # blocks do not change a window's code
    expected = torch.from_numpy(golden["out.audio_code"][0])
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    labels = sample(model.context, codes[None], method="fast", argmax=True).labels
    assert torch.equal(labels, torch.from_numpy(golden["out.context_sample_argmax_labels"]))


def test_streamed_animation_of_the_golden_speech_is_the_releases(golden, model):  # noqa: F811
    # animate's pipeline (audio codes, one sampled chain, the streamed decoder) with the reference front end, on
    # the golden speech and template: the release's seed-4 labels and geometry (its sampling draws the same noise).
    # The small golden model's labels survive the utterance front end's 4 % code difference too, so it is the test
    # above that tells the front ends apart; this one checks the streaming around them.
    audio = golden_utterance(golden)
    speech = Speech(path=Path("golden.wav"), audio_16k=audio, source_rate_hz=SAMPLE_RATE_HZ, source_channels=1,
                    source_subtype="FLOAT", gain=1.0, n_frames=golden["in.audio"].shape[1])
    template = golden["in.template"][0]
    pieces = list(animate_speech(model.eval(), speech, template, plan=LabelPlan(seed=4, chunk_frames=12),
                                 smoothing_masks=[], audio_frontend="reference"))
    geometry = np.concatenate([g[0] for _, g, _ in pieces])  # (30, V, 3)
    labels = np.concatenate([lab[0] for _, _, lab in pieces])  # (30, H)
    np.testing.assert_array_equal(labels, golden["out.context_sample_seed4_labels"][0])
    expected = golden["out.animate_geom_before_smoothing"]
    np.testing.assert_allclose(geometry, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    argmax = list(animate_speech(model, speech, template, plan=LabelPlan(argmax=True), smoothing_masks=[],
                                 audio_frontend="reference"))
    np.testing.assert_array_equal(argmax[0][2][0], golden["out.context_sample_argmax_labels"][0])


def test_animate_with_the_reference_front_end_is_the_reference_pipeline(face_files, tmp_path):  # noqa: F811
    # 67,552 samples at 16 kHz: the release makes 126 frames of it, the utterance front end 127.
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, speech_signal(67_552 / SAMPLE_RATE_HZ, seed=4), SAMPLE_RATE_HZ, subtype="FLOAT")
    options = {"template": face_files / "face.obj", "smoothing": False, "argmax": True, "segment_frames": None,
               "video": None}
    reference = animate_file(face_files / "tiny.pt", wav, tmp_path / "ref", audio_frontend="reference", **options)
    default = animate_file(face_files / "tiny.pt", wav, tmp_path / "utt", **options)
    assert (reference.n_frames, default.n_frames) == (126, 127)
    ours = np.asarray(read_animation(reference.npz).vertices)  # (126, V, 3)
    # The same computation on tensors, from the WAV read as animate reads it: the reference's windows, the
    # model's log-mel of each, the audio encoder, argmax labels, the decoder from the template.
    tiny = load_checkpoint(face_files / "tiny.pt").model.eval()
    audio = read_speech(wav).audio_16k
    with torch.no_grad():
        mel = tiny.frontend(torch.from_numpy(windows_by_slicing(audio)))[None]  # (1, 126, 80, 101)
        template = torch.from_numpy(read_obj(face_files / "face.obj").vertices.astype(np.float32))[None]
        expected = animate(tiny, mel, template, argmax=True).geometry[0].numpy()  # (126, V, 3)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-4  # mm, on every frame
    # The utterance front end sees other features: the same model gives another animation.
    assert np.abs(np.asarray(read_animation(default.npz).vertices)[:126] - ours).max() > 1e-3


def test_audio_too_short_for_one_reference_window_is_one_line(face_files, tmp_path):  # noqa: F811
    wav = tmp_path / "short.wav"
    # 534 samples: one mesh frame (533.3 samples, which any front end needs) but not the release's first window
    soundfile.write(wav, speech_signal(1.0)[:534], SAMPLE_RATE_HZ, subtype="FLOAT")
    with pytest.raises(InputError, match=r"short.wav: audio too short for the reference front end \(expected >= "
                                         r"535 samples at 16 kHz \(33.4 ms\), got 534 samples\)"):
        animate_file(face_files / "tiny.pt", wav, tmp_path / "out", template=face_files / "face.obj",
                     smoothing=False, video=None, audio_frontend="reference")
    with pytest.raises(InputError, match="--audio-frontend: unknown audio front end"):
        animate_file(face_files / "tiny.pt", wav, tmp_path / "out", template=face_files / "face.obj",
                     audio_frontend="store")


def test_evaluate_with_the_reference_front_end_reads_the_stored_audio(tiny_store, checkpoint, tmp_path):  # noqa: F811
    store = Store(tiny_store)
    entry = select_sequences(store, split="sentence", subset="test")[0]
    seq = read_sequence(store, entry)
    tiny = load_checkpoint(checkpoint).model.eval()
    with torch.no_grad():  # an untrained prior's labels barely depend on the audio: make them
        for p in tiny.context.parameters():
            p.mul_(3.0)
    checkpoint = save_checkpoint(tmp_path / "audible.pt", tiny)
    audio = np.asarray(store.open_sequence(entry.path).audio)
    codes = stored_reference_codes(tiny, store, entry.path, seq.n_frames, block_frames=16)  # (1, T, 128)
    windows = reference_windows(audio, 0, seq.n_frames)
    with torch.no_grad():
        expected = tiny.encoder.audio(tiny.frontend(torch.from_numpy(windows))[None])
    assert codes.shape == (1, seq.n_frames, 128)
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-5)
    settings = {"store": str(tiny_store), "checkpoint": str(checkpoint), "samples": 1, "max_sequences": 1}
    reference = evaluate(EvaluateConfig(**settings, audio_frontend="reference"))
    default = evaluate(EvaluateConfig(**settings))
    assert reference["settings"]["audio_frontend"] == "reference"
    ours, theirs = (r["paths"]["audio_argmax"]["metrics"]["mve"] for r in (reference, default))
    assert np.isfinite(ours) and ours != theirs
    assert reference["paths"]["template"] == default["paths"]["template"]
