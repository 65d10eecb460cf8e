"""``meshtalk train``: stage 1 (encoder + decoder) or stage 2 (context model) on a facedata store.

The package's door is ``main_entry`` (what the command runs) and ``train`` (``meshtalk.train.loop``); the rooms:

- ``loop``: the run: resolve (new or resumed), set up, then each step's forward, NaN guard, backward and update;
  monitors, validation and checkpoints every N steps; SIGINT/SIGTERM (``StopSignals``), the run's ``TrainResult``;
- ``setup``: the sentences of the split, the region masks, the model, the mean faces, the objective, the loader;
- ``recipe``: the hooks the loop calls, the only place where departures from the reference recipe act;
- ``validation``: losses and metrics on fixed validation windows (``validate``);
- ``runlog``: ``RUN/log.jsonl`` and TensorBoard (``RunLog``, ``read_log``), the progress bar (``Progress``);
- ``checkpoints``: ``RUN/checkpoints/step-*.pt`` and ``RUN/last.pt`` with the trainer state to resume exactly;
- ``config``: ``TrainConfig``, ``Recipe``, ``RECIPES``, ``STAGE_DEFAULTS``, ``--set`` parsing, ``TrainingError``;
- ``rng``: every random stream of a run, saved, restored, seeded and set aside (``isolated_rng``).

Their layers: ``loop > setup | recipe | validation | runlog | checkpoints > config | rng``. Every name the trainer
had when it was one module (``meshtalk.train.TrainConfig``, ``meshtalk.train.read_log``, ...) imports from here.
A test or tool that replaces a hook replaces it in ``meshtalk.train.recipe``, where the loop looks it up.
"""

from meshtalk.train.checkpoints import read_trainer_state, save_training_checkpoint, versions
from meshtalk.train.config import (
    RECIPES,
    STAGE_DEFAULTS,
    Recipe,
    TrainConfig,
    TrainingError,
    merge,
    parse_assignments,
)
from meshtalk.train.loop import StopSignals, TrainResult, main_entry, resolve_run, train
from meshtalk.train.recipe import (
    RecipeState,
    before_step,
    extra_losses,
    learning_rate,
    parameter_groups,
    recipe_batch,
    set_train_mode,
    start_recipe,
)
from meshtalk.train.rng import isolated_rng, rng_state, seed_everything, set_rng_state
from meshtalk.train.runlog import Progress, RunLog, SilentLog, read_log
from meshtalk.train.setup import build_model, make_loader, make_objective, mean_face_table, read_masks, select_entries
from meshtalk.train.validation import validate

__all__ = [
    "RECIPES", "STAGE_DEFAULTS", "Progress", "Recipe", "RecipeState", "RunLog", "SilentLog", "StopSignals",
    "TrainConfig", "TrainResult", "TrainingError", "before_step", "build_model", "extra_losses", "isolated_rng",
    "learning_rate", "main_entry", "make_loader", "make_objective", "mean_face_table", "merge", "parameter_groups",
    "parse_assignments", "read_log", "read_masks", "read_trainer_state", "recipe_batch", "resolve_run", "rng_state",
    "save_training_checkpoint", "seed_everything", "select_entries", "set_rng_state", "set_train_mode",
    "start_recipe", "train", "validate", "versions",
]
