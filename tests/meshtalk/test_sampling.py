from __future__ import annotations

import pytest
import torch
from tiny_models import single_thread, tiny_config  # noqa: F401

from facedata.errors import InputError
from meshtalk.model import ContextModel
from meshtalk.sampling import (
    _PREPARED,
    SamplerStats,
    _prepare,
    draw_sampling_noise,
    sample,
    sample_fast,
    sample_reference,
    wave_schedule,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def random_context(seed: int, mode: str) -> ContextModel:
    """A context model of random sizes (heads, classes, channels, depth) with weights large enough to matter."""
    g = torch.Generator().manual_seed(seed)

    def pick(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    config = tiny_config(heads=pick(1, 8), classes=pick(2, 8), context_channels_per_head=pick(1, 6),
                         context_dilations=(1, 2, 4, 8)[: pick(1, 4)], context_mask=mode)
    torch.manual_seed(seed)
    context = ContextModel(config).eval()
    with torch.no_grad():
        for p in context.parameters():
            p.mul_(3.0)  # spread the log-probs so that labels vary
    return context


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("draft", ["none", "eager"])
def test_fast_and_reference_samplers_agree_on_every_label(seed, mode, batch, draft):
    context = random_context(seed, mode)
    H, C = context.heads, context.classes
    audio = torch.randn(batch, 45, 8, generator=torch.Generator().manual_seed(seed))  # more than one draft block
    noise = draw_sampling_noise(batch, 45, H, C, generator=torch.Generator().manual_seed(100 + seed))
    for argmax in (True, False):
        reference = sample_reference(context, audio, argmax=argmax, noise=None if argmax else noise)
        stats = SamplerStats()
        fast = sample_fast(context, audio, argmax=argmax, noise=None if argmax else noise, draft=draft, stats=stats)
        assert torch.equal(fast.labels, reference.labels), (argmax, context.heads, context.classes)
        assert torch.equal(fast.one_hot, reference.one_hot)
        assert stats.path == ("waves" if draft == "none" else "speculative")
        if draft != "none":  # every frame was checked by the exact model
            assert stats.checked_frames >= batch * 45
    assert fast.labels.shape == (batch, 45, H) and fast.one_hot.shape == (batch, 45, H, C)


def test_a_wrong_draft_changes_no_label():
    """The draft only proposes: with every int8 weight zeroed its proposals are mostly wrong, and the exact check
    corrects each of them (scoring again, drafting again), so the labels stay the reference's."""
    context = random_context(4, "strict")
    audio = torch.randn(1, 70, 8, generator=torch.Generator().manual_seed(4))
    noise = draw_sampling_noise(1, 70, context.heads, context.classes, generator=torch.Generator().manual_seed(5))
    prefix = sample_reference(context, audio[:, :25], noise=noise[:, :25]).labels
    drafter = _prepare(context).drafter(compiled=False)
    for tensor in drafter.weights:
        if tensor.dtype == torch.int8:
            tensor.zero_()
    stats = SamplerStats()
    wrong = sample_fast(context, audio, noise=noise, draft="eager", stats=stats, prefix=prefix[:, :21])
    assert torch.equal(wrong.labels, sample_reference(context, audio, noise=noise).labels)
    assert stats.corrections > 10 and stats.redrafts > 0 and stats.drafted_frames > 49
    _PREPARED.pop(context)  # the next sampling of this model gets a correct draft again


def test_wave_schedule_of_the_reference_mask_has_waves_of_six_heads():
    waves, finish = wave_schedule(ContextModel(tiny_config(heads=16, context_channels_per_head=2)))
    assert [(w.first, w.stop) for w in waves] == [(0, 6), (6, 12), (12, 16)]
    # layer 0 of the first wave: heads 0 and 1, head 1 seeing the embedding's head 0 (2 channels)
    assert (waves[0].steps[0].lo, waves[0].steps[0].hi, waves[0].steps[0].cols) == (0, 2, 2)
    assert [(s.level, s.lo, s.hi) for s in finish] == [(0, 14, 16), (1, 15, 16)]
    inclusive, _ = wave_schedule(ContextModel(tiny_config(heads=5, context_mask="first-strict")))
    assert [(w.first, w.stop) for w in inclusive] == [(h, h + 1) for h in range(5)]


@pytest.mark.parametrize("seed", [2, 5])
def test_compiled_draft_gives_the_reference_labels_and_proposes_as_the_eager_one(seed):
    """The compiled draft proposes; the labels are the reference's. Its int8 weights are the eager draft's (a scale
    per output channel over the columns it sees), so a frame gives the same labels and the same layer inputs to
    float rounding."""
    context = random_context(seed, "strict")
    H, C, L = context.heads, context.classes, len(context.layers)
    audio = torch.randn(1, 40, 8, generator=torch.Generator().manual_seed(seed))
    noise = draw_sampling_noise(1, 40, H, C, generator=torch.Generator().manual_seed(3))
    stats = SamplerStats()
    fast = sample_fast(context, audio, noise=noise, draft="compiled", stats=stats)
    assert torch.equal(fast.labels, sample_reference(context, audio, noise=noise).labels)
    compiled, eager = _prepare(context).drafter(compiled=True), _prepare(context).drafter(compiled=False)
    assert stats.path == "speculative" and compiled.ok and compiled is not eager
    g = torch.Generator().manual_seed(seed)
    HK = H * context.embedding.out_per_head
    for _ in range(5):
        pending, previous = torch.randn(L, HK, generator=g), torch.rand(L, HK, generator=g)
        frame_noise, given, keep = torch.randn(H, C, generator=g), torch.randint(0, C, (H,), generator=g), \
            torch.rand(H, generator=g) < 0.3
        # The far taps of 3 frames at once, on strided views of (frames, L, HK) as the speculative loop passes them.
        frames = torch.stack([pending, torch.randn(L, HK, generator=g), torch.randn(L, HK, generator=g)])
        far_inputs = torch.rand(3, L, HK, generator=g)
        start, want_start = frames.clone(), frames.clone()
        for layer in range(L):
            eager.add_far(layer, far_inputs[:, layer], want_start[:, layer])
            compiled.add_far(layer, far_inputs[:, layer], start[:, layer])
        torch.testing.assert_close(start, want_start, rtol=1e-5, atol=1e-5)
        assert not torch.equal(start, frames)
        want_labels, want_inputs = eager.step(want_start[0], previous, frame_noise, given, keep)
        labels, inputs = compiled.step(start[0], previous, frame_noise, given, keep)
        assert torch.equal(labels, want_labels) and torch.equal(labels[keep], given[keep])
        torch.testing.assert_close(inputs, want_inputs, rtol=1e-5, atol=1e-5)


def test_samples_vary_and_follow_the_noise():
    context = random_context(0, "first-strict")
    audio = torch.randn(1, 30, 8)
    first = sample_fast(context, audio, generator=torch.Generator().manual_seed(1)).labels
    again = sample_fast(context, audio, generator=torch.Generator().manual_seed(1)).labels
    other = sample_fast(context, audio, generator=torch.Generator().manual_seed(2)).labels
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.unique().numel() > 1


def test_noise_scale_zero_is_argmax():
    context = random_context(1, "strict")
    audio = torch.randn(1, 12, 8)
    for method in ("reference", "fast"):
        scaled = sample(context, audio, method=method, noise_scale=0.0, generator=torch.Generator().manual_seed(0))
        assert torch.equal(scaled.labels, sample(context, audio, method=method, argmax=True).labels)


def test_sampling_noise_is_drawn_one_row_per_frame_and_head():
    torch.manual_seed(4)
    noise = draw_sampling_noise(2, 3, 4, 5)
    torch.manual_seed(4)
    rows = [torch.rand(2, 5) for _ in range(3 * 4)]  # frame-major: (t, h) = (0, 0), (0, 1), ...
    for i, row in enumerate(rows):
        assert torch.equal(noise[:, i // 4, i % 4], row)


def test_wrong_noise_shape_and_unknown_method_are_errors():
    context = random_context(0, "strict")
    audio = torch.randn(1, 5, 8)
    with pytest.raises(InputError, match="noise: wrong shape"):
        sample_fast(context, audio, noise=torch.rand(1, 4, context.heads, context.classes))
    with pytest.raises(InputError, match="unknown method"):
        sample(context, audio, method="beam")
    with pytest.raises(InputError, match="unknown draft"):
        sample_fast(context, audio, draft="bf16")


@pytest.mark.parametrize(("batch", "frames", "heads", "classes"), [(1, 140, 16, 128), (3, 17, 4, 9), (2, 1, 1, 1)])
def test_sampling_noise_is_the_stream_of_one_draw_per_frame_and_head(batch, frames, heads, classes):
    """The noise must stay the reference's: one torch.rand(B, C) per (frame, head), frame-major, from the same
    generator (or the global one after torch.manual_seed), whichever way it is drawn."""
    generator = torch.Generator().manual_seed(11)
    expected = torch.stack([torch.rand(batch, classes, generator=generator) for _ in range(frames * heads)], dim=1)
    got = draw_sampling_noise(batch, frames, heads, classes, generator=torch.Generator().manual_seed(11))
    assert torch.equal(got, expected.reshape(batch, frames, heads, classes))
    torch.manual_seed(4)
    expected = torch.stack([torch.rand(batch, classes) for _ in range(frames * heads)], dim=1)
    torch.manual_seed(4)
    got = draw_sampling_noise(batch, frames, heads, classes)
    assert torch.equal(got, expected.reshape(batch, frames, heads, classes))


@pytest.mark.parametrize("seed", range(3))
def test_waves_in_torch_and_in_compiled_loops_give_the_same_labels(seed):
    """float64 takes the torch products (the GPU's path), float32 the compiled loops; both the reference's labels."""
    context = random_context(seed, "strict")
    H, C = context.heads, context.classes
    audio = torch.randn(3, 30, 8, generator=torch.Generator().manual_seed(seed))
    noise = draw_sampling_noise(3, 30, H, C, generator=torch.Generator().manual_seed(7))
    compiled = sample_fast(context, audio, noise=noise, draft="none").labels
    in_torch = sample_fast(context.double(), audio.double(), noise=noise.double(), draft="none").labels
    context.float()
    assert torch.equal(compiled, in_torch)
    assert torch.equal(compiled, sample_reference(context, audio, noise=noise).labels)


def test_compiled_products_equal_torchs():
    """A wave's products (a column count that is not a multiple of 4 included), the near taps, the labels' choice
    and their embedding columns, against the torch operations they replace."""
    from meshtalk.sampling.kernels import add_products, choose_labels, wave_products

    g = torch.Generator().manual_seed(0)
    L, B, HK, HC = 2, 3, 12, 10
    ins, z = torch.randn(L + 1, B, HK, generator=g), torch.randn(B, HC, generator=g)
    blocks = [torch.randn(7, 4, generator=g), torch.randn(12, 6, generator=g), torch.randn(0, 4, generator=g)]
    flat = torch.cat([b.reshape(-1) for b in blocks])
    table = torch.tensor([[0, 4, 4, 7, 0], [2, 2, 6, 12, 28], [1, 8, 4, 0, 100]]).numpy()  # level, o0, width, cols, at
    want_ins, want_z = ins.clone(), z.clone()
    want_ins[1][:, 4:8] = torch.nn.functional.leaky_relu(want_ins[1][:, 4:8] + ins[0][:, :7] @ blocks[0], 0.2)
    want_z[:, 2:8] += ins[2][:, :12] @ blocks[1]
    want_ins[2][:, 8:12] = torch.nn.functional.leaky_relu(want_ins[2][:, 8:12], 0.2)  # no visible input
    wave_products(ins.numpy(), z.numpy(), table, flat.numpy(), 0.2)
    torch.testing.assert_close(ins, want_ins, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z, want_z, rtol=1e-6, atol=1e-6)

    x, w = torch.randn(L, B, 13, generator=g), torch.randn(L, 13, 5, generator=g)
    out = torch.randn(L, B, 5, generator=g)
    want = torch.baddbmm(out, x, w)
    add_products(out.numpy(), x.numpy(), w.numpy())
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)

    H, C, T = 4, 5, 3
    logits, noise = torch.randn(B, H * C, generator=g) * 3, torch.randn(B, H, C, generator=g)
    emb_rows, emb = torch.randn(H * C, HK, generator=g), torch.randn(B, HK, generator=g)
    labels = torch.zeros(B, T, H, dtype=torch.long)
    want_labels = (torch.log_softmax(logits.view(B, H, C), -1) + noise).argmax(-1)  # (B, H)
    want_emb = emb + emb_rows[want_labels[:, 1:3] + torch.arange(1, 3) * C].sum(1)
    choose_labels(logits.numpy(), noise.numpy(), labels.numpy(), 2, 1, 3, True, emb_rows.numpy(), emb.numpy())
    assert torch.equal(labels[:, 2, 1:3], want_labels[:, 1:3]) and not labels[:, :2].any() and not labels[:, 2, 3].any()
    torch.testing.assert_close(emb, want_emb, rtol=1e-6, atol=1e-6)
    labels[:, 0] = torch.tensor([4, 0, 2, 1])  # given labels are kept, their columns added
    before = emb.clone()
    choose_labels(logits.numpy(), noise[:0].numpy(), labels.numpy(), 0, 0, H, False, emb_rows.numpy(), emb.numpy())
    assert torch.equal(labels[:, 0], torch.tensor([4, 0, 2, 1]).expand(B, H))
    torch.testing.assert_close(emb, before + emb_rows[torch.tensor([4, 0, 2, 1]) + torch.arange(H) * C].sum(0))


@pytest.mark.parametrize("ahead", [False, True])
def test_drafting_the_next_block_meanwhile_changes_no_label(ahead, monkeypatch):
    """The next block drafted on a second thread (from the draft's own inputs) or after the check: the same labels."""
    import meshtalk.sampling.speculative as speculative

    monkeypatch.setattr(speculative, "DRAFT_AHEAD", ahead)
    context = random_context(6, "strict")
    audio = torch.randn(1, 100, 8, generator=torch.Generator().manual_seed(6))
    noise = draw_sampling_noise(1, 100, context.heads, context.classes, generator=torch.Generator().manual_seed(8))
    stats = SamplerStats()
    fast = sample_fast(context, audio, noise=noise, draft="compiled", stats=stats)
    assert torch.equal(fast.labels, sample_reference(context, audio, noise=noise).labels)
    assert stats.path == "speculative" and stats.drafted_frames >= 100 and stats.checked_frames >= 100


def test_the_compiled_draft_keeps_no_state_between_calls():
    """Two threads drafting with one drafter at once get what each gets alone (its buffers are per call)."""
    from concurrent.futures import ThreadPoolExecutor

    context = random_context(3, "strict")
    H, C, L = context.heads, context.classes, len(context.layers)
    HK = H * context.embedding.out_per_head
    drafter = _prepare(context).drafter(compiled=True)
    g = torch.Generator().manual_seed(1)
    frames = [(torch.randn(L, HK, generator=g), torch.rand(L, HK, generator=g), torch.randn(H, C, generator=g))
              for _ in range(2)]
    keep, given = torch.zeros(H, dtype=torch.bool), torch.zeros(H, dtype=torch.long)
    alone = [drafter.step(start, previous, noise, given, keep) for start, previous, noise in frames]

    def many(k: int) -> bool:
        start, previous, noise = frames[k]
        return all(all(torch.equal(a, b) for a, b in zip(drafter.step(start, previous, noise, given, keep), alone[k],
                                                           strict=True)) for _ in range(200))

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(many, [0, 1])) == [True, True]
    assert not torch.equal(alone[0][1], alone[1][1])
