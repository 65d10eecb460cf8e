"""The recipe's departures from the reference: audio and expression pre-training, the frozen and cached audio
encoder, the frozen expression encoder, the information bonus, the region balance, the head separation, the
lower-face swap, and the named ``fast`` and ``expressive`` recipes run through the trainer (tiny store, small
model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facedata.store import Store
from meshtalk.checkpoint import load_checkpoint
from meshtalk.config import MeshTalkConfig
from meshtalk.data import WindowDataset, select_sequences
from meshtalk.model import MeshTalk
from meshtalk.objectives import BatchShard, stage2_losses
from meshtalk.recipes import (
    AudioCodeCache,
    information_terms,
    region_components,
    region_motion_variance,
    separation_terms,
    swap_lower_face,
)
from meshtalk.train import RECIPES, TrainConfig, main_entry, merge, read_log

SMALL = {"heads": 4, "classes": 8, "context_channels_per_head": 8}


def fast_settings(store, out, **changes) -> dict:
    values = merge(RECIPES["fast"], {"store": str(store), "out": str(out), "stage": 1, "steps": 4, "frames": 8,
                                     "batch_size": 2, "workers": 0, "model": SMALL, "monitor_every": 2,
                                     "val_every": 0, "checkpoint_every": 2,
                                     "recipe": {"audio_pretrain_steps": 3, "audio_pretrain_batch": 4,
                                                "audio_pretrain_components": 4}})
    return merge(values, changes)


def small_model(n_vertices: int = 64, seed: int = 0) -> MeshTalk:
    torch.manual_seed(seed)
    return MeshTalk(MeshTalkConfig.preset("meshtalk", n_vertices=n_vertices, **SMALL)).eval()


def test_fast_recipe_resolves_to_its_departures():
    config = TrainConfig.from_dict(merge(RECIPES["fast"], {"store": "s", "out": "o"}))
    assert config.lr == 1e-3 and config.decoder_weight_decay == 0.0
    assert config.model == {"context_mask": "first-strict"}
    assert config.recipe.audio_pretrain_steps == 250 and config.recipe.freeze_audio
    assert config.recipe.entropy_bonus == config.recipe.confidence_weight == 0.1
    assert TrainConfig.from_dict({"store": "s", "out": "o"}).recipe == TrainConfig.from_dict(
        merge(RECIPES["reference"], {"store": "s", "out": "o"})).recipe


def test_information_terms_measure_how_the_code_is_used():
    C, shard = 8, BatchShard.whole(4)
    uniform = torch.full((4, 3, 2, C), -math.log(C))
    terms = information_terms(uniform, shard)
    assert float(terms["batch_entropy"]) == pytest.approx(math.log(C))
    assert float(terms["frame_entropy"]) == pytest.approx(math.log(C))  # information 0
    # Each of the 12 frames certain of its own class (C = 12 here): information log 12.
    certain = torch.full((4, 3, 2, 12), -30.0)
    for i in range(12):
        certain.view(12, 2, 12)[i, :, i] = 0.0
    terms = information_terms(certain.log_softmax(-1), shard)
    assert float(terms["batch_entropy"]) == pytest.approx(math.log(12), abs=1e-4)
    assert float(terms["frame_entropy"]) == pytest.approx(0.0, abs=1e-4)


def test_region_components_match_a_full_pca(tiny_store):
    store = Store(tiny_store)
    entries = select_sequences(store, split="sentence", subset="train")
    mask = store.masks()["mouth"]
    pca = region_components(store, entries, mask, 3)
    rows = []
    for entry in entries:
        arrays = store.open_sequence(entry.path)
        vertices = np.asarray(arrays.vertices[:])[:, mask > 0.5]
        rows.append((vertices - store.template(entry.identity)[mask > 0.5]).reshape(len(vertices), -1))
    x = np.concatenate(rows).astype(np.float64)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    assert np.flatnonzero(mask > 0.5).tolist() == pca.vertices.tolist()
    for k in range(3):  # the same directions up to sign, the same spread
        assert abs(float(np.dot(vt[k], pca.basis[k].double().numpy()))) == pytest.approx(1.0, abs=1e-4)
    coefficients = (x @ pca.basis.double().numpy().T - pca.mean.double().numpy()) / pca.std.double().numpy()
    np.testing.assert_allclose(coefficients.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(coefficients.std(0), 1.0, rtol=1e-3)
    assert pca.explained == pytest.approx(float((s[:3] ** 2).sum() / (s ** 2).sum()), rel=1e-6)


def test_cached_audio_codes_are_the_eval_encoders(tiny_store):
    store = Store(tiny_store)
    entries = select_sequences(store, split="sentence", subset="train")
    model = small_model()
    cache = AudioCodeCache(model, store, entries, chunk=16)  # chunks cut sentences
    batch = WindowDataset(store, entries, frames=8, seed=3).__getitems__(list(range(4)))
    with torch.no_grad():
        direct = model.encoder.audio(batch["mel"])
        cached = cache.batch(batch["sequence"], batch["start"], 8)
        torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
        with_cache = stage2_losses(model, batch | {"audio_code": cached}).losses["cross_entropy"]
        without = stage2_losses(model, batch).losses["cross_entropy"]
    torch.testing.assert_close(with_cache, without, rtol=1e-5, atol=1e-6)


def test_fast_recipe_pretrains_freezes_and_resumes_exactly(tiny_store, tmp_path):
    out = tmp_path / "fast"
    main_entry(fast_settings(tiny_store, out), resume=False, progress=False)
    recipe_log = read_log(out, "recipe")
    pretrain = [r for r in recipe_log if r["message"].startswith("audio pre-training step")]
    assert [r["pretrain_step"] for r in pretrain] == [3]
    assert math.isfinite(pretrain[0]["loss"]) and -1 <= pretrain[0]["r_first_component"] <= 1
    assert [r["message"] for r in recipe_log][-1] == "audio codes cached"
    train = read_log(out, "train")
    for record in train:
        losses = record["losses"]
        assert {"batch_entropy_bonus", "frame_entropy_penalty"} <= set(losses)
        assert losses["batch_entropy_bonus"] < 0 < losses["frame_entropy_penalty"]
        assert losses["loss"] == pytest.approx(sum(v for k, v in losses.items() if k != "loss"), rel=1e-5)
        assert record["lr"] == 1e-3

    # Pre-training moved the audio encoder away from its initialisation; stage 1 then left it alone.
    fresh = small_model()
    middle = load_checkpoint(out / "checkpoints" / "step-0000002.pt").model.state_dict()
    last = load_checkpoint(out / "last.pt").model.state_dict()
    audio_keys = [k for k in last if k.startswith("encoder.audio.")]
    assert audio_keys and all(torch.equal(middle[k], last[k]) for k in audio_keys)
    assert any(not torch.equal(fresh.state_dict()[k], last[k]) for k in audio_keys)
    assert any(not torch.equal(middle[k], last[k]) for k in last if k.startswith("encoder.fusion."))
    assert load_checkpoint(out / "last.pt").model.config.context_mask == "first-strict"

    # Resumed from step 2 (no second pre-training: the checkpoint holds it), the same losses bit for bit.
    resumed = tmp_path / "resumed"
    main_entry(fast_settings(tiny_store, resumed, steps=2), resume=False, progress=False)
    main_entry({"out": str(resumed), "steps": 4}, resume=True, progress=False)
    assert [r["losses"] for r in read_log(resumed, "train")] == [r["losses"] for r in train]
    assert sum(r["message"] == "audio pre-training done" for r in read_log(resumed, "recipe")) == 1

    # Stage 2 on the frozen encoder, with cached codes.
    stage2 = tmp_path / "stage2"
    main_entry(fast_settings(tiny_store, stage2, stage=2, steps=2, frames=16, init_from=str(out / "last.pt")),
               resume=False, progress=False)
    losses = [r["losses"] for r in read_log(stage2, "train")]
    assert len(losses) == 2 and set(losses[0]) == {"loss", "cross_entropy"}
    assert all(math.isfinite(v["loss"]) for v in losses)
    assert [r["message"] for r in read_log(stage2, "recipe")] == ["audio codes cached"]


def test_plot_draws_the_runs_curves(tiny_store, tmp_path):
    from matplotlib.image import imread

    from meshtalk.plots import plot_runs

    run = tmp_path / "run"
    main_entry(fast_settings(tiny_store, run, monitor_every=1), resume=False, progress=False)
    image = imread(plot_runs([run], tmp_path / "curves.png"))
    assert image.shape[:2] == (720, 1350)  # 15 x 8 inches at 90 dpi
    # The panels with data hold coloured curves; an empty run directory's log gives only "no data" panels.
    colour = lambda im: float((im[..., :3].max(-1) - im[..., :3].min(-1) > 0.3).mean())  # noqa: E731
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "log.jsonl").write_text("")
    blank = imread(plot_runs([empty], tmp_path / "blank.png"))
    assert colour(image) > 0.005 and colour(blank) < colour(image) / 5, (colour(image), colour(blank))


def test_expressive_recipe_resolves_to_fast_plus_the_expression_path():
    config = TrainConfig.from_dict(merge(RECIPES["expressive"], {"store": "s", "out": "o"}))
    fast = TrainConfig.from_dict(merge(RECIPES["fast"], {"store": "s", "out": "o"}))
    assert config.lr == fast.lr and config.model == fast.model
    assert config.recipe.expression_pretrain_steps == 250 and config.recipe.expression_pretrain_lr == 1e-4
    assert config.recipe.freeze_expression and config.recipe.balance_regions
    assert config.recipe.audio_pretrain_steps == fast.recipe.audio_pretrain_steps and config.recipe.freeze_audio


def test_swap_lower_face_keeps_the_upper_face_and_takes_the_partners_lower_face():
    template = torch.zeros(2, 3, 3)
    template[1] += 10.0  # another identity
    vertices = template[:, None].repeat(1, 2, 1, 1)  # (B=2, T=2, V=3, 3)
    vertices[0, :, :, 0] += torch.tensor([1.0, 2.0, 3.0])  # window 0 moves every vertex in x
    vertices[1, :, :, 1] += torch.tensor([4.0, 5.0, 6.0])  # window 1 in y
    upper = torch.tensor([1.0, 0.5, 0.0])  # vertex 0 upper face, vertex 2 lower face, vertex 1 half
    swapped = swap_lower_face(vertices, template, upper)
    # Window 0: vertex 0 keeps its motion, vertex 2 takes window 1's (y = 6) on its own template, vertex 1 half each.
    torch.testing.assert_close(swapped[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(swapped[0, 0, 2], torch.tensor([0.0, 6.0, 0.0]))
    torch.testing.assert_close(swapped[0, 0, 1], torch.tensor([1.0, 2.5, 0.0]))
    torch.testing.assert_close(swapped[1, 1, 2], torch.tensor([13.0, 10.0, 10.0]))  # window 0's x on template 10


def test_separation_terms_measure_each_heads_dependence_on_the_crossed_input():
    B, T, H, C = 2, 3, 4, 5
    own = torch.randn(B, T, H, C).log_softmax(-1)
    same = torch.cat([own, own, own])
    terms = separation_terms(same, expression_heads=1)
    assert float(terms["expression_heads_on_audio"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["audio_heads_on_expression"]) == pytest.approx(0.0, abs=1e-6)
    crossed_audio = own.clone()
    crossed_audio[:, :, :3] = torch.randn(B, T, 3, C).log_softmax(-1)  # only the audio heads change
    terms = separation_terms(torch.cat([own, own, crossed_audio]), expression_heads=1)
    assert float(terms["expression_heads_on_audio"]) == pytest.approx(0.0, abs=1e-6)  # head 3 unchanged
    crossed_expression = own.clone()
    crossed_expression[:, :, :3] = crossed_audio[:, :, :3]
    terms = separation_terms(torch.cat([own, crossed_expression, own]), expression_heads=1)
    kl = (own[:, :, :3].exp() * (own[:, :, :3] - crossed_audio[:, :, :3])).sum(-1).mean()
    assert float(terms["audio_heads_on_expression"]) == pytest.approx(float(kl), rel=1e-5)
    assert set(separation_terms(same, expression_heads=H)) == {"expression_heads_on_audio"}


def test_region_motion_variance_is_the_squared_distance_from_each_sentences_mean(tiny_store):
    store = Store(tiny_store)
    entries = select_sequences(store, split="sentence", subset="train")
    masks = {k: v for k, v in store.masks().items() if k in ("mouth", "upper_face")}
    variance = region_motion_variance(store, entries, masks, max_frames=10**6)
    total = dict.fromkeys(masks, 0.0)
    frames = 0
    for entry in entries:
        x = np.asarray(store.open_sequence(entry.path).vertices[:], np.float64)
        squared = ((x - x.mean(0)) ** 2).sum(-1)  # (T, V)
        for name, mask in masks.items():
            total[name] += float((squared * mask).sum() / mask.sum())
        frames += len(x)
    for name in masks:
        assert variance[name] == pytest.approx(total[name] / frames, rel=1e-5)
        assert variance[name] > 0


def test_expressive_recipe_pretrains_and_freezes_the_expression_encoder(tiny_store, tmp_path):
    out = tmp_path / "expressive"
    recipe = {"audio_pretrain_steps": 2, "audio_pretrain_batch": 4, "audio_pretrain_components": 4,
              "expression_pretrain_steps": 3, "expression_pretrain_batch": 2, "expression_pretrain_frames": 8,
              "expression_pretrain_components": 4}
    settings = merge(fast_settings(tiny_store, out), {"recipe": {**RECIPES["expressive"]["recipe"], **recipe}})
    main_entry(settings, resume=False, progress=False)
    messages = [r["message"] for r in read_log(out, "recipe")]
    assert messages.index("audio pre-training done") < messages.index("expression pre-training done")
    balanced = next(r for r in read_log(out, "recipe") if r["message"] == "regions balanced")
    assert balanced["upper_weight"] == pytest.approx(balanced["mouth_variance_mm2"]
                                                     / balanced["upper_face_variance_mm2"])
    fresh = small_model()
    middle = load_checkpoint(out / "checkpoints" / "step-0000002.pt").model.state_dict()
    last = load_checkpoint(out / "last.pt").model.state_dict()
    keys = [k for k in last if k.startswith("encoder.expression.") and not k.endswith(("mean", "stddev"))]
    assert keys and all(torch.equal(middle[k], last[k]) for k in keys)  # frozen in stage 1
    assert any(not torch.equal(fresh.state_dict()[k], last[k]) for k in keys)  # moved by its pre-training
    train = read_log(out, "train")
    for record in train:  # the upper-face term weighed by the measured ratio
        losses, parts = record["losses"], record["parts"]
        assert losses["modality_crossing"] == pytest.approx(
            parts["crossing_mouth"] + balanced["upper_weight"] * parts["crossing_upper"], rel=1e-5)
    monitors = read_log(out, "monitor")
    assert all({"expression_ratio", "upper_ratio"} <= set(r) for r in monitors)


def test_plot_draws_one_pretraining_series_per_encoder():
    from meshtalk.plots import _groups

    records = [{"type": "recipe", "step": 0, "message": f"{encoder} pre-training step {k}/2", "pretrain_step": k,
                "loss": 1.0 / k} for encoder in ("audio", "expression") for k in (1, 2)]
    records.append({"type": "recipe", "step": 0, "message": "audio codes cached"})  # no pretrain_step: not drawn
    groups = _groups(records, "recipe")
    assert {g: [r["pretrain_step"] for r in rs] for g, rs in groups.items()} == {"audio:": [1, 2],
                                                                                  "expression:": [1, 2]}
    assert _groups([{"type": "monitor", "step": 5}, *records], "monitor") == {"": [{"type": "monitor", "step": 5}]}
