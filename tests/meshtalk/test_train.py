"""The trainer on a tiny generated store: both stages, exact resume, fine-tuning, the NaN guard and SIGTERM.

The model is the reference architecture at H = 4, C = 8, V = 64 with 8 context channels per head; windows of 8
frames, batches of 2. These are the CI smoke runs: finite losses, monitors logged, checkpoints written and resumed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facedata.errors import InputError, StoreError
from facedata.store import ARRAYS_DIR, Store, create_array, ensure_groups
from meshtalk import train as train_module
from meshtalk.checkpoint import load_checkpoint
from meshtalk.train import TrainConfig, TrainingError, main_entry, parse_assignments, read_log

SMALL = {"heads": 4, "classes": 8, "context_channels_per_head": 8}
REPO = Path(__file__).resolve().parents[2]


def settings(store: Path, out: Path, **changes) -> dict:
    return {"store": str(store), "out": str(out), "stage": 1, "steps": 4, "frames": 8, "batch_size": 2,
            "workers": 0, "model": SMALL, "monitor_every": 2, "val_every": 2, "val_windows": 2,
            "checkpoint_every": 2, **changes}


@pytest.fixture(scope="module")
def stage1_run(tiny_store, tmp_path_factory) -> Path:
    """Four stage-1 steps, uninterrupted (the reference for the resume test and the start of stage 2)."""
    out = tmp_path_factory.mktemp("runs") / "stage1"
    main_entry(settings(tiny_store, out), resume=False, progress=False)
    return out


def test_stage1_trains_logs_monitors_and_checkpoints(stage1_run):
    train = read_log(stage1_run, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for record in train:
        losses = record["losses"]
        assert set(losses) == {"loss", "recon", "landmarks", "modality_crossing"}
        assert all(math.isfinite(v) for v in losses.values())
        assert losses["loss"] == pytest.approx(losses["recon"] + losses["landmarks"] + losses["modality_crossing"])
        assert record["lr"] == 1e-4 and record["steps_per_s"] > 0 and math.isfinite(record["grad_norm"])
    monitors = read_log(stage1_run, "monitor")
    assert [r["step"] for r in monitors] == [1, 2, 4]
    for key in ("perplexity", "max_prob", "flip_rate", "information", "recon_ratio", "shuffle_ratio"):
        assert all(math.isfinite(r[key]) for r in monitors), key
    assert all(1 <= r["perplexity"] <= 8 and 0 <= r["flip_rate"] <= 1 for r in monitors)
    val = read_log(stage1_run, "val")
    assert [r["step"] for r in val] == [2, 4]
    assert set(val[0]["metrics"]) == {"reconstruction", "template"} and val[0]["windows"] == 2
    assert math.isfinite(val[0]["lve_ratio"])

    assert sorted(p.name for p in (stage1_run / "checkpoints").iterdir()) == ["step-0000002.pt", "step-0000004.pt"]
    checkpoint = load_checkpoint(stage1_run / "last.pt")
    trainer = checkpoint.extra["trainer"]
    assert trainer["step"] == 4 and trainer["samples"] == 8 and trainer["config"]["steps"] == 4
    assert set(trainer["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert {"python", "torch", "numpy", "meshtalk", "git"} <= set(trainer["versions"])
    assert checkpoint.config.heads == 4
    saved = json.loads((stage1_run / "config.json").read_text())
    assert saved["config"]["lr_decay_step"] == 40_000 and saved["normalisation"] == "estimated"


def test_resume_reproduces_the_uninterrupted_losses_exactly(tiny_store, stage1_run, tmp_path):
    out = tmp_path / "resumed"
    # Two steps, stopped; then resumed to four, with a DataLoader worker this time (the data order is the counter).
    main_entry(settings(tiny_store, out, steps=2), resume=False, progress=False)
    result = main_entry({"out": str(out), "steps": 4, "workers": 1}, resume=True, progress=False)
    assert result.step == 4
    resumed = [r["losses"] for r in read_log(out, "train")]
    uninterrupted = [r["losses"] for r in read_log(stage1_run, "train")]
    assert resumed == uninterrupted  # bit for bit: JSON keeps every digit of the float
    assert [r["recon_argmax"] for r in read_log(out, "monitor")] == \
        [r["recon_argmax"] for r in read_log(stage1_run, "monitor")]
    a = load_checkpoint(out / "last.pt").model.state_dict()
    b = load_checkpoint(stage1_run / "last.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_is_not_overwritten_without_resume(tiny_store, stage1_run):
    with pytest.raises(TrainingError, match="already holds a run"):
        main_entry(settings(tiny_store, stage1_run), resume=False, progress=False)


def test_stage2_trains_the_context_model_on_the_frozen_encoder(tiny_store, stage1_run, tmp_path):
    out = tmp_path / "stage2"
    main_entry(settings(tiny_store, out, stage=2, steps=2, init_from=str(stage1_run / "last.pt"), model={}),
               resume=False, progress=False)
    train = read_log(out, "train")
    assert [set(r["losses"]) for r in train] == [{"loss", "cross_entropy"}] * 2
    assert all(math.isfinite(r["losses"]["loss"]) for r in train)
    monitor = read_log(out, "monitor")[0]
    for key in ("target_perplexity", "accuracy", "cross_entropy", "marginal_entropy", "audio_change"):
        assert math.isfinite(monitor[key]), key
    assert set(read_log(out, "val")[0]["metrics"]) == {"audio_argmax", "template"}
    before = load_checkpoint(stage1_run / "last.pt").model.state_dict()
    after = load_checkpoint(out / "last.pt").model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "decoder.")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("context."))
    assert json.loads((out / "config.json").read_text())["config"]["frames"] == 8  # overridden; default 64


def test_fine_tune_from_imported_reference_weights(tiny_store, tmp_path):
    """Released-format state dicts (written with meshtalk.reference) -> import -> one stage-1 step."""
    from meshtalk.config import MeshTalkConfig
    from meshtalk.model import MeshTalk
    from meshtalk.reference import export_reference, import_reference

    torch.manual_seed(1)
    reference = MeshTalk(MeshTalkConfig.preset("meshtalk", n_vertices=64, **SMALL))
    reference.set_vertex_statistics(torch.full((64, 3), 1.0), torch.full((64, 3), 30.0))
    released = tmp_path / "released"
    released.mkdir()
    for name, state in export_reference(reference).items():
        torch.save(state, released / f"{name}.pkl")
    import_reference(released, tmp_path / "imported.pt")

    out = tmp_path / "finetune"
    result = main_entry(settings(tiny_store, out, steps=1, init_from=str(tmp_path / "imported.pt"), model={}),
                        resume=False, progress=False)
    assert result.step == 1 and math.isfinite(result.losses["loss"])
    tuned = load_checkpoint(out / "last.pt").model
    # A checkpoint's normalisation is part of what its weights learned: it is kept, not re-estimated.
    assert torch.equal(tuned.decoder.stddev, torch.full((64, 3), 30.0))
    assert not torch.equal(tuned.decoder.vertex_bias, reference.decoder.vertex_bias)


def test_bf16_autocast_and_clipping_run_on_cpu(tiny_store, tmp_path):
    """The CUDA bf16 code path, exercised with CPU autocast, with gradient clipping."""
    result = main_entry(settings(tiny_store, tmp_path / "bf16", steps=1, bf16=True, grad_clip=0.5, val_every=0),
                        resume=False, progress=False)
    assert math.isfinite(result.losses["loss"])


def test_cli_options_config_file_and_assignments(tiny_store, tmp_path):
    from typer.testing import CliRunner

    from meshtalk.cli import app

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"frames": 8, "batch_size": 2, "model": SMALL, "val_every": 0}))
    out = tmp_path / "cli"
    done = CliRunner().invoke(app, ["train", "--store", str(tiny_store), "--stage", "1", "--out", str(out),
                                    "--steps", "1", "--workers", "0", "--config", str(config),
                                    "--set", "model.gumbel_noise_scale=0.5", "--set", "lr=3e-4"])
    assert done.exit_code == 0, done.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["model"] == {**SMALL, "gumbel_noise_scale": 0.5} and saved["config"]["lr"] == 3e-4
    assert saved["model_config"]["gumbel_noise_scale"] == 0.5 and saved["config"]["frames"] == 8
    refused = CliRunner().invoke(app, ["train", "--store", str(tiny_store), "--out", str(tmp_path / "x"),
                                       "--set", "lerning_rate=1"])
    assert refused.exit_code != 0 and "unknown key 'lerning_rate'" in str(refused.exception)


def _store_with_nan(tiny_store: Path, tmp_path: Path) -> Path:
    """A copy of the store whose training sentences hold NaN frames, with finite normalisation statistics."""
    copy = shutil.copytree(tiny_store, tmp_path / "nan-store")
    store = Store(copy)
    for row in store.sequences().iter_rows(named=True):
        shard = copy / ARRAYS_DIR / row["path"] / "vertices" / "c" / "0" / "0" / "0"
        frames = np.memmap(shard, dtype="<f4", mode="r+", shape=(16, 64, 3))
        frames[:] = np.nan  # the first shard (16 frames) of every sentence
        frames.flush()
    group = ensure_groups(copy, "stats")
    create_array(group, "vertex_mean", np.zeros((64, 3), np.float32))
    create_array(group, "vertex_std", np.ones((64, 3), np.float32))
    return copy


def test_nan_guard_names_the_step_and_the_sequences(tiny_store, tmp_path):
    store = _store_with_nan(tiny_store, tmp_path)
    with pytest.raises(TrainingError) as error:
        main_entry(settings(store, tmp_path / "nan", steps=3, frames=40, val_every=0), resume=False, progress=False)
    message = str(error.value)
    assert message.startswith("step 1: non-finite loss (recon=nan")
    assert message.count("/SEN_sentence_") == 2 and "\n" not in message  # the batch's 2 windows, one line


def test_nan_guard_catches_a_term_added_by_the_recipe(tiny_store, tmp_path, monkeypatch):
    def poisoned(config, state, batch, result, step):
        return {"bonus": torch.tensor(float("inf"))} if step == 1 else {}

    monkeypatch.setattr("meshtalk.train.recipe.extra_losses", poisoned)  # where the loop looks its hooks up
    with pytest.raises(TrainingError, match=r"^step 2: non-finite loss \(.*bonus=inf\) on the batch of m--"):
        main_entry(settings(tiny_store, tmp_path / "inf", steps=3, val_every=0), resume=False, progress=False)
    assert [r["step"] for r in read_log(tmp_path / "inf", "train")] == [1]


@pytest.mark.parametrize(("values", "message"), [
    ({"stage": 1, "learning_rate": 1.0}, "unknown key 'learning_rate'"),
    ({"stage": 1, "recipe": {"entropy_bonsu": 0.1}}, "config.recipe: unknown key 'entropy_bonsu'"),
    ({"stage": 3}, "unknown stage"),
    ({"stage": 2}, "stage 2 trains on a stage-1 encoder's codes"),
    ({"stage": 1, "batch_size": 1}, "stage 1 swaps codes"),
])
def test_config_rejects_what_no_run_can_use(values, message):
    with pytest.raises(InputError, match=message):
        TrainConfig.from_dict({"store": "s", "out": "o", **values})


def test_config_takes_each_stage_reference_settings():
    one = TrainConfig.from_dict({"store": "s", "out": "o", "stage": 1})
    two = TrainConfig.from_dict({"store": "s", "out": "o", "stage": 2, "init_from": "c"})
    assert (one.steps, one.frames, one.lr_decay_step, one.decoder_weight_decay) == (50_000, 32, 40_000, 1e-3)
    assert (two.steps, two.frames, two.lr_decay_step, two.decoder_weight_decay) == (15_000, 64, 10_000, 0.0)
    assert one.lr == two.lr == 1e-4 and one.batch_size == two.batch_size == 8 and one.grad_clip is None
    assert TrainConfig.from_dict(one.to_dict()) == one  # what a checkpoint saves rebuilds the same config
    assert parse_assignments(["lr=3e-4", "model.heads=4", "split=null", "device=cpu"]) == \
        {"lr": 3e-4, "model": {"heads": 4}, "split": None, "device": "cpu"}


def test_learning_rate_steps_down_at_the_decay_step():
    config = TrainConfig.from_dict({"store": "s", "out": "o", "lr_decay_step": 10})
    assert train_module.learning_rate(config, 9, {}) == 1e-4
    assert train_module.learning_rate(config, 10, {}) == pytest.approx(1e-5)


def test_a_store_without_splits_trains_on_every_sentence(tiny_store, tmp_path):
    copy = shutil.copytree(tiny_store, tmp_path / "nosplit")
    (copy / "manifests" / "splits.parquet").unlink()
    out = tmp_path / "run"
    main_entry(settings(copy, out, steps=1), resume=False, progress=False)
    events = read_log(out, "event")
    assert any("has no splits" in e.get("warning", "") for e in events)
    assert next(e for e in events if e.get("event") == "start")["train_sentences"] == 20
    assert not read_log(out, "val")


def test_a_store_without_masks_is_refused_with_the_fix(tiny_store, tmp_path):
    copy = shutil.copytree(tiny_store, tmp_path / "nomasks")
    shutil.rmtree(copy / ARRAYS_DIR / "masks")
    with pytest.raises(StoreError, match="build-masks"):
        main_entry(settings(copy, tmp_path / "run", steps=1), resume=False, progress=False)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_store, tmp_path):
    out = tmp_path / "signalled"
    command = [sys.executable, "-m", "meshtalk", "train", "--store", str(tiny_store), "--stage", "1", "--out",
               str(out), "--steps", "100000", "--frames", "8", "--batch-size", "2", "--workers", "1",
               "--checkpoint-every", "100000", "--val-every", "0", "--set", f"model={json.dumps(SMALL)}"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and '"type": "train"' in log.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no training step within 120 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    stopped = read_log(out, "event")[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == "SIGTERM"
    step = load_checkpoint(out / "last.pt").extra["trainer"]["step"]
    assert step == stopped["step"] >= 1
    result = main_entry({"out": str(out), "steps": step + 1, "workers": 0}, resume=True, progress=False)
    assert result.step == step + 1
