"""Speech-like audio and the mouth articulation it implies, from a sentence's spelling.

A sentence is read letter by letter into phones (vowel nuclei, consonants, silences) with durations fitted to the
take's length. From the phones come, on one time axis:

- the audio (48 kHz): voiced phones as a sum of harmonics of a pitch contour (90-250 Hz, declining over the
  sentence, with accents) shaped by per-vowel formant resonances and a -6 dB/octave source tilt; unvoiced
  consonants as band-limited noise (fricatives, bursts after plosive closures, aspiration); sentence-initial and
  final silence and pauses between phrases; a faint noise floor so that silence is not digital zero.
- the articulation: jaw opening, lip spread and rounding targets per phone (bilabials close the lips), joined by
  coarticulation (linear between phone centres, then smoothed).

Open vowels are louder than close ones (as in real speech), so the audio envelope carries the jaw opening; the
mouth leads the sound by the speaker's lead (50-100 ms), which is applied by the caller when it samples the
articulation at frame times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUDIO_RATE_HZ = 48_000
CONTROL_RATE_HZ = 1_000  # articulation and source parameters are computed at 1 ms, then interpolated
SAMPLES_PER_CONTROL = AUDIO_RATE_HZ // CONTROL_RATE_HZ

# Vowel: formants F1-F3 (Hz, adult male; scaled per speaker), jaw opening, lip spread, lip rounding (0..1).
VOWELS: dict[str, tuple[tuple[float, float, float], float, float, float]] = {
    "a": ((730.0, 1090.0, 2440.0), 1.0, 0.35, 0.0),
    "e": ((530.0, 1840.0, 2480.0), 0.6, 0.75, 0.0),
    "i": ((300.0, 2250.0, 3000.0), 0.25, 1.0, 0.0),
    "o": ((570.0, 840.0, 2410.0), 0.75, 0.0, 0.75),
    "u": ((320.0, 880.0, 2250.0), 0.3, 0.0, 1.0),
}
FORMANT_BANDWIDTHS_HZ = (80.0, 100.0, 160.0)

# Consonant classes: jaw opening, spread, rounding, voicing amplitude, noise band (Hz) and noise amplitude.
_CONSONANT_CLASSES: dict[str, tuple[float, float, float, float, tuple[float, float] | None, float]] = {
    "bilabial_stop": (0.0, 0.0, 0.0, 0.0, (500.0, 4000.0), 0.25),  # p, b: closure then a burst
    "nasal_bilabial": (0.0, 0.0, 0.0, 0.3, None, 0.0),  # m: lips closed, voiced murmur
    "labiodental": (0.1, 0.1, 0.0, 0.0, (1500.0, 8000.0), 0.12),  # f, v
    "alveolar_stop": (0.2, 0.3, 0.0, 0.0, (2500.0, 7000.0), 0.3),  # t, d
    "velar_stop": (0.3, 0.2, 0.0, 0.0, (1200.0, 4000.0), 0.3),  # k, g
    "sibilant": (0.15, 0.45, 0.0, 0.0, (4000.0, 9500.0), 0.3),  # s, z, c, x
    "postalveolar": (0.2, 0.0, 0.55, 0.0, (2000.0, 6000.0), 0.3),  # sh, ch, j
    "dental": (0.2, 0.3, 0.0, 0.0, (1500.0, 7000.0), 0.1),  # th
    "nasal": (0.2, 0.3, 0.0, 0.3, None, 0.0),  # n, ng
    "liquid": (0.3, 0.2, 0.2, 0.45, None, 0.0),  # l, r
    "glide_round": (0.15, 0.0, 0.9, 0.4, None, 0.0),  # w
    "glide_spread": (0.2, 0.7, 0.0, 0.4, None, 0.0),  # y as a consonant
    "aspiration": (0.45, 0.3, 0.0, 0.0, (400.0, 4000.0), 0.12),  # h
}
_LETTER_CLASS = {
    "p": "bilabial_stop", "b": "bilabial_stop", "m": "nasal_bilabial", "f": "labiodental", "v": "labiodental",
    "t": "alveolar_stop", "d": "alveolar_stop", "k": "velar_stop", "g": "velar_stop", "q": "velar_stop",
    "s": "sibilant", "z": "sibilant", "c": "sibilant", "x": "sibilant", "j": "postalveolar", "n": "nasal",
    "l": "liquid", "r": "liquid", "w": "glide_round", "y": "glide_spread", "h": "aspiration",
}
_DIGRAPH_CLASS = {"sh": "postalveolar", "ch": "postalveolar", "th": "dental", "ng": "nasal", "ck": "velar_stop",
                  "ph": "labiodental", "wh": "glide_round"}


@dataclass(frozen=True)
class Phone:
    """One segment of the take: a vowel nucleus, a consonant, or silence.

    Attributes:
        kind: "vowel", "consonant" or "silence".
        label: vowel letter, consonant class, or "" for silence.
        start_s, end_s: position in the take (s).
        voiced: voicing amplitude 0..1 (vowels: louder when more open).
        accent: pitch accent factor (1 = none).
    """

    kind: str
    label: str
    start_s: float
    end_s: float
    voiced: float
    accent: float = 1.0


@dataclass(frozen=True)
class Speaker:
    """Voice and articulation of one identity."""

    pitch_hz: float  # mean pitch
    formant_scale: float  # vocal tract length: ~1 for male voices, ~1.15 for female voices
    jaw_max_mm: float  # mouth opening of a fully open vowel (8-12 mm)
    lead_ms: float  # mouth motion precedes the sound by this much (50-100 ms)
    level: float  # peak level of the take, 0..1 full scale

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Speaker:
        female = rng.random() < 0.5
        pitch = rng.uniform(185.0, 220.0) if female else rng.uniform(100.0, 135.0)
        return cls(pitch_hz=pitch, formant_scale=rng.uniform(1.1, 1.2) if female else rng.uniform(0.95, 1.05),
                   jaw_max_mm=rng.uniform(8.0, 12.0), lead_ms=rng.uniform(50.0, 100.0), level=rng.uniform(0.35, 0.6))

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 6) for k in ("pitch_hz", "formant_scale", "jaw_max_mm", "lead_ms",
                                                               "level")}


def _split_word(word: str) -> list[tuple[str, str]]:
    """A word's phones from its spelling: ("vowel", letter) and ("consonant", class) in order."""
    if len(word) > 3 and word.endswith("e") and word[-2] not in "aeiouy":
        word = word[:-1]  # a silent final e
    phones: list[tuple[str, str]] = []
    i = 0
    while i < len(word):
        ch = word[i]
        is_vowel = ch in "aeiou" or (ch == "y" and i > 0)
        if is_vowel:
            j = i
            while j < len(word) and (word[j] in "aeiou" or (word[j] == "y" and j > 0)):
                j += 1
            phones.append(("vowel", "i" if ch == "y" else ch))  # a vowel cluster is one nucleus
            i = j
        elif word[i:i + 2] in _DIGRAPH_CLASS:
            phones.append(("consonant", _DIGRAPH_CLASS[word[i:i + 2]]))
            i += 2
        else:
            if i == 0 or word[i - 1] != ch:  # doubled letters are one consonant
                phones.append(("consonant", _LETTER_CLASS.get(ch, "alveolar_stop")))
            i += 1
    if not any(kind == "vowel" for kind, _ in phones):
        phones.append(("vowel", "e"))  # letter names such as "b" are spoken with a vowel
    return phones


def natural_seconds(words: list[str]) -> float:
    """Length of a sentence spoken at a plain rate, including its initial and final silence (s)."""
    total = 0.55
    for word in words:
        for kind, label in _split_word(word):
            total += 0.11 if kind == "vowel" else (0.085 if label in ("sibilant", "postalveolar") else 0.06)
        total += 0.03
    return total


def plan_phones(words: list[str], seconds: float, rng: np.random.Generator) -> list[Phone]:
    """Phones of a take of ``seconds`` (silence at both ends, pauses between some phrases), fitted to the length."""
    lead_in, tail = rng.uniform(0.18, 0.32), rng.uniform(0.22, 0.38)
    items: list[tuple[str, str, float, float]] = []  # kind, label, base duration, accent
    for w, word in enumerate(words):
        for kind, label in _split_word(word):
            if kind == "vowel":
                accent = 1.0 + (rng.uniform(0.08, 0.18) if rng.random() < 0.35 else 0.0)
                items.append((kind, label, 0.11 * rng.uniform(0.75, 1.35), accent))
            else:
                base = 0.085 if label in ("sibilant", "postalveolar") else 0.06
                items.append((kind, label, base * rng.uniform(0.8, 1.2), 1.0))
        if w < len(words) - 1:
            pause = rng.uniform(0.12, 0.25) if rng.random() < 0.25 else rng.uniform(0.0, 0.04)
            items.append(("silence", "", pause, 1.0))
    if lead_in + tail > 0.5 * seconds:  # very short takes keep half of their time for speech
        lead_in, tail = (x * 0.5 * seconds / (lead_in + tail) for x in (lead_in, tail))
    speech_seconds = seconds - lead_in - tail
    spoken = sum(d for kind, _, d, _ in items if kind != "silence")
    pauses = sum(d for kind, _, d, _ in items if kind == "silence")
    # Fit the speech into its time: at most 1.3x slower than the plain rate (nobody drawls further); the time
    # left over goes into the pauses between words, or the final silence for a single word.
    scale = speech_seconds / (spoken + pauses)
    pause_extra = 0.0
    if scale > 1.3:
        scale = 1.3
        n_pauses = sum(1 for kind, *_ in items if kind == "silence")
        leftover = speech_seconds - 1.3 * (spoken + pauses)
        if n_pauses:
            pause_extra = leftover / n_pauses
        else:
            tail += leftover
    t = lead_in
    phones = [Phone("silence", "", 0.0, t, 0.0)]
    for kind, label, duration, accent in items:
        if kind == "vowel":
            voiced = 0.5 + 0.5 * VOWELS[label][1]  # open vowels are louder
        elif kind == "consonant":
            voiced = _CONSONANT_CLASSES[label][3]
        else:
            voiced = 0.0
        length = duration * scale + (pause_extra if kind == "silence" else 0.0)
        if length > 1e-4:
            phones.append(Phone(kind, label, t, t + length, voiced, accent))
        t += length
    phones.append(Phone("silence", "", t, seconds, 0.0))
    return phones


def _articulation_target(phone: Phone) -> tuple[float, float, float]:
    if phone.kind == "vowel":
        _, jaw, spread, rounding = VOWELS[phone.label]
        return jaw, spread, rounding
    if phone.kind == "consonant":
        jaw, spread, rounding, *_ = _CONSONANT_CLASSES[phone.label]
        return jaw, spread, rounding
    return 0.0, 0.0, 0.0


def _gaussian_smooth(x: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Smooth along axis 0 with a normalised Gaussian, edges held (x: (T,) or (T, K))."""
    radius = int(np.ceil(3 * sigma_samples))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_samples) ** 2)
    kernel /= kernel.sum()
    pad = [(radius, radius)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(x.shape[1])], axis=1)


def articulation(phones: list[Phone], times_s: np.ndarray) -> dict[str, np.ndarray]:
    """Jaw opening, lip spread and rounding (0..1) at the given times, (T,) each.

    Targets are held over the middle of each phone, joined linearly and smoothed with a 25 ms Gaussian:
    neighbouring phones blend as in coarticulation.
    """
    knots_t: list[float] = []
    knots_v: list[tuple[float, float, float]] = []
    for phone in phones:
        # Hold each target over the middle of its phone; bilabials and silences longer, so the lips stay closed.
        hold = 0.3 if phone.kind == "silence" or phone.label in ("bilabial_stop", "nasal_bilabial") else 0.2
        length = phone.end_s - phone.start_s
        target = _articulation_target(phone)
        knots_t += [phone.start_s + hold * length, phone.end_s - hold * length]
        knots_v += [target, target]
    knots = np.array(knots_v)
    dense_t = np.arange(0.0, phones[-1].end_s + 1.0, 1.0 / CONTROL_RATE_HZ)
    dense = np.stack([np.interp(dense_t, knots_t, knots[:, k]) for k in range(3)], axis=1)
    dense = _gaussian_smooth(dense, 0.025 * CONTROL_RATE_HZ)
    out = np.stack([np.interp(times_s, dense_t, dense[:, k]) for k in range(3)], axis=1)
    return {"jaw": np.clip(out[:, 0], 0.0, 1.0), "spread": np.clip(out[:, 1], 0.0, 1.0),
            "rounding": np.clip(out[:, 2], 0.0, 1.0)}


def _formant_gain(freq_hz: np.ndarray, formants_hz: np.ndarray) -> np.ndarray:
    """Cascade of second-order resonances: |H(f)| for (T, H) frequencies and (T, 3) formants -> (T, H)."""
    gain = np.ones_like(freq_hz)
    for k, bandwidth in enumerate(FORMANT_BANDWIDTHS_HZ):
        f_k = formants_hz[:, k:k + 1]
        gain *= f_k**2 / np.sqrt((f_k**2 - freq_hz**2) ** 2 + (bandwidth * freq_hz) ** 2)
    return gain


def synthesize(phones: list[Phone], n_samples: int, speaker: Speaker, rng: np.random.Generator) -> np.ndarray:
    """The take's audio, (n_samples,) float64 at 48 kHz, peak ``speaker.level``."""
    n_control = int(np.ceil(n_samples / SAMPLES_PER_CONTROL)) + 2
    t_control = np.arange(n_control) / CONTROL_RATE_HZ
    total_s = n_samples / AUDIO_RATE_HZ

    # Source parameters at the control rate: voicing amplitude, formants, noise amplitude per band, pitch accent.
    voicing = np.zeros(n_control)
    formants = np.tile(np.array(VOWELS["e"][0]) * speaker.formant_scale, (n_control, 1))
    accent = np.ones(n_control)
    noise_bands: dict[tuple[float, float], np.ndarray] = {}
    last_vowel = "e"
    for phone in phones:
        lo, hi = int(phone.start_s * CONTROL_RATE_HZ), int(np.ceil(phone.end_s * CONTROL_RATE_HZ))
        hi = min(hi, n_control)
        if hi <= lo:
            continue
        seg = slice(lo, hi)
        if phone.kind == "vowel":
            last_vowel = phone.label
            voicing[seg] = phone.voiced
            formants[seg] = np.array(VOWELS[phone.label][0]) * speaker.formant_scale
            accent[seg] = phone.accent
        elif phone.kind == "consonant":
            *_, voice, band, noise = _CONSONANT_CLASSES[phone.label]
            # Voiced consonants carry a low first formant and the neighbouring vowel's upper formants.
            formants[seg] = np.array([250.0, *VOWELS[last_vowel][0][1:]]) * speaker.formant_scale
            voicing[seg] = voice
            if band is not None:
                env = noise_bands.setdefault(band, np.zeros(n_control))
                if phone.label.endswith("stop"):
                    # A closure (silence) and then a short burst of 15-25 ms.
                    burst = max(int(0.02 * CONTROL_RATE_HZ), 1)
                    env[max(hi - burst, lo):hi] = noise
                else:
                    env[seg] = noise
    voicing = _gaussian_smooth(voicing, 6.0)
    formants = _gaussian_smooth(formants, 12.0)
    accent = _gaussian_smooth(accent, 40.0)

    # Pitch: declination over the sentence, accents, slow jitter; kept within 90-250 Hz.
    drift = _gaussian_smooth(rng.normal(0.0, 1.0, n_control), 60.0)
    drift *= 0.02 / max(float(np.std(drift)), 1e-9)
    pitch = speaker.pitch_hz * (1.1 - 0.2 * t_control / max(total_s, 1e-3)) * accent * (1.0 + drift)
    pitch = np.clip(pitch, 90.0, 250.0)

    # Harmonic amplitudes at the control rate, then additive synthesis at 48 kHz.
    n_harmonics = int(7500.0 / 90.0)
    h = np.arange(1, n_harmonics + 1)
    freq = pitch[:, None] * h[None, :]  # (T_c, H)
    amp = voicing[:, None] * _formant_gain(freq, formants) / h[None, :] * (freq < 7500.0)
    sample_t = np.arange(n_samples) / AUDIO_RATE_HZ
    pitch_samples = np.interp(sample_t, t_control, pitch)
    phase = 2 * np.pi * np.cumsum(pitch_samples) / AUDIO_RATE_HZ
    audio = np.zeros(n_samples)
    for k in range(n_harmonics):
        if not amp[:, k].any():
            continue
        audio += np.interp(sample_t, t_control, amp[:, k]) * np.sin((k + 1) * phase)
    voiced_peak = max(float(np.max(np.abs(audio))), 1e-9)
    audio /= voiced_peak

    # Noise consonants: white noise shaped in frequency by a smooth band-pass, scaled by its envelope.
    spectrum_f = np.fft.rfftfreq(n_samples, 1.0 / AUDIO_RATE_HZ)
    for (lo_hz, hi_hz), env in sorted(noise_bands.items()):
        noise = rng.normal(0.0, 1.0, n_samples)
        shape = np.exp(-0.5 * (np.log(np.maximum(spectrum_f, 1.0) / np.sqrt(lo_hz * hi_hz)) / np.log(
            np.sqrt(hi_hz / lo_hz))) ** 4)
        band = np.fft.irfft(np.fft.rfft(noise) * shape, n=n_samples)
        band /= max(float(np.std(band)), 1e-9)
        env = _gaussian_smooth(env, 4.0)
        audio += 0.35 * band * np.interp(sample_t, t_control, env)

    audio += rng.normal(0.0, 3e-4, n_samples)  # room noise floor, about -70 dB
    return audio * (speaker.level / max(float(np.max(np.abs(audio))), 1e-9))


def frame_envelope(audio: np.ndarray, samples_per_frame: int = 1600) -> np.ndarray:
    """RMS of consecutive blocks of ``samples_per_frame`` samples, (n_frames,)."""
    n = len(audio) // samples_per_frame
    blocks = audio[: n * samples_per_frame].reshape(n, samples_per_frame)
    return np.sqrt((blocks**2).mean(axis=1))
