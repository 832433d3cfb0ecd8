"""Mutation check: plant each bug below in a copy of src/ and run the tests that guard it.

    python .ci/mutants.py [--after-suite] [NAME ...]   (from the repo root, in the venv that
                                                        runs the tests)

A mutant is "caught" when at least one test fails with it; every one must be. Each runs only
the test files that should catch it (`-x`, default suite, no slow tests), so the whole check
takes a few minutes instead of one full suite per mutant. Exit code 1 if any survives.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


class Mutant(NamedTuple):
    name: str
    file: str  # under src/
    original: str  # must occur exactly once
    mutated: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "a trial that never started keeps its slot",
        "hydra_plugins/hpsweep_sweeper/_worker_loop.py",
        "            close_unstarted(study, running)",
        "            pass",
        ("tests/test_slots.py::test_a_trial_asked_but_never_started_takes_no_slot",),
    ),
    Mutant(
        "a full disk fails the trial",
        "hydra_plugins/hpsweep_sweeper/_worker_loop.py",
        "        if isinstance(outcome, Exception) and environment_cause(outcome) is not None:",
        "        if False:",
        (
            "tests/test_slots.py::test_a_full_disk_stops_the_sweep_in_one_line_and_charges_no_trial"
            "[elsewhere]",
        ),
    ),
    Mutant(
        "a permanent refusal retried as an outage",
        "hydra_plugins/hpsweep_sweeper/_storage.py",
        "            transient = transient and not permanent_refusal(e.orig)\n",
        "",
        ("tests/test_faults.py::test_a_servers_refusal_is_said_at_once_and_its_restarts_waited_for",),
    ),
    Mutant(
        "a sweep's values not checked before it starts",
        "hydra_plugins/hpsweep_sweeper/_sweep.py",
        "        check_values(self.context, self.space, settings.enqueue, check)\n",
        "",
        ("tests/test_hostile.py::test_hostile_input_is_refused_cleanly_and_changes_nothing"
         "[sweep batch size 0]",),
    ),
    Mutant(
        "a copied journal line replayed",
        "hydra_plugins/hpsweep_sweeper/_journal.py",
        "                if line in self.creates:\n                    return DUPLICATE\n",
        "",
        ("tests/test_faults.py::test_a_copied_create_trial_line_is_repaired_away_not_replayed",),
    ),
    Mutant(
        "delete zero_grad",
        "hpsweep/job/_steps.py",
        "        optimizer.zero_grad(set_to_none=True)\n",
        "",
        ("tests/test_models_and_steps.py",),
    ),
    Mutant(
        "drop the RNG restore on resume",
        "hpsweep/job/_trial.py",
        '    restore_rng(state["rng"], job.shuffle)\n',
        "",
        ("tests/test_trial.py",),
    ),
    Mutant(
        "skip model.eval() in evaluate",
        "hpsweep/job/_steps.py",
        "    model.eval()\n",
        "",
        ("tests/test_models_and_steps.py::test_evaluate_restores_mode_and_leaves_weights_alone",),
    ),
    Mutant(
        "swap the objective's direction",
        "hpsweep/record/_files.py",
        '    "loss": "minimize",\n    "acc": "maximize",\n',
        '    "loss": "maximize",\n    "acc": "minimize",\n',
        ("tests/test_record.py", "tests/test_trial.py"),
    ),
    Mutant(
        "skip the atomic rename (write in place)",
        "hpsweep/record/_files.py",
        '    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")\n',
        "    tmp = path\n",
        ("tests/test_record.py",),
    ),
    Mutant(
        "drop the pruning report",
        "hpsweep/loop.py",
        "        trial.report(value, step=epoch)\n",
        "",
        (
            "tests/test_sweeper.py::test_median_pruner_stops_bad_learning_rates_early_and_keeps_their_files",
        ),
    ),
    Mutant(
        "no shuffling of training batches",
        "hpsweep/job/_trial.py",
        "None if cfg.overfit_batches else job.shuffle",
        "None",
        ("tests/test_trial.py::test_training_batches_are_shuffled_anew_every_epoch",),
    ),
    Mutant(
        "test set evaluated on validation",
        "hpsweep/job/_trial.py",
        'evaluate_split(job, job.splits.test, meter, "test")',
        'evaluate_split(job, job.splits.val, meter, "test")',
        ("tests/test_trial.py",),
    ),
    Mutant(
        "final report on the last epoch's weights, not best.pt",
        "hpsweep/job/_trial.py",
        '    job.model.load_state_dict(load_checkpoint(files.best)["model"])\n',
        "",
        ("tests/test_trial.py::test_final_report_tests_the_best_epochs_weights_not_the_last",),
    ),
    Mutant(
        "gradient clipping ignored",
        "hpsweep/job/_steps.py",
        "        if grad_clip_norm is not None:\n",
        "        if False:\n",
        ("tests/test_models_and_steps.py::test_gradient_clipping_bounds_the_update",),
    ),
    Mutant(
        "optimizer state not restored on resume",
        "hpsweep/job/_trial.py",
        '    job.optimizer.load_state_dict(state["optimizer"])\n',
        "",
        ("tests/test_trial.py",),
    ),
    Mutant(
        "seeded sampler not rebuilt before each ask",
        "hydra_plugins/hpsweep_sweeper/_worker_loop.py",
        "        if self.plan.reseed is not None:\n",
        "        if False:\n",
        (
            "tests/test_sweeper.py::test_a_seeded_sweep_never_replays_when_resumed_and_is_reproducible",
        ),
    ),
    Mutant(
        "sweep direction not taken from the objective",
        "hydra_plugins/hpsweep_sweeper/_settings.py",
        '        return [implied or "maximize"]\n',
        '        return ["maximize"]\n',
        (
            "tests/test_sweeper.py::test_val_loss_objective_is_minimized_and_every_reader_names_the_same_best",
        ),
    ),
    Mutant(
        "dead worker's trial retried without limit",
        "hydra_plugins/hpsweep_sweeper/_study.py",
        "    return max(0, max_retries(study) - len(retry_history(trial)))\n",
        "    return 1\n",
        (
            "tests/test_sweeper.py::test_a_trial_that_always_kills_its_worker_fails_after_max_retries",
        ),
    ),
    Mutant(
        "delete zero_grad in a fused group",
        "hpsweep/fused/_steps.py",
        "        optimizer.zero_grad()\n",
        "",
        ("tests/test_fused.py",),
    ),
    Mutant(
        "a fused trial's pruning hook ignored",
        "hpsweep/fused/_trials.py",
        "    stop = end_epoch(m.run, row, m.hook, state_of",
        "    stop = end_epoch(m.run, row, None, state_of",
        ("tests/test_fused_trials.py",),
    ),
    Mutant(
        "a resumed fused group starts its optimizer afresh",
        "hpsweep/fused/_steps.py",
        "        if not steps:\n",
        "        if True:\n",
        ("tests/test_fused_trials.py",),
    ),
    Mutant(
        "train on unaugmented batches",
        "hpsweep/job/_trial.py",
        "        batches = job.augment.batches(batches, job.shuffle)\n",
        "        pass\n",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "augmentation draws from the global RNG",
        "hpsweep/data/_augment.py",
        "torch.randint(0, 2 * s + 1, (n, 2), generator=generator)",
        "torch.randint(0, 2 * s + 1, (n, 2))",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "shifts pad with zeros, not a blank pixel",
        "hpsweep/data/_augment.py",
        "padded = F.pad(x, (s, s, s, s), value=self.fill)",
        "padded = F.pad(x, (s, s, s, s), value=0.0)",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "let flips through on digits",
        "hpsweep/config.py",
        '    if augment.get("hflip") and dataset in NO_FLIP_DATASETS:\n',
        "    if False:\n",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "label smoothing in the validation loss",
        "hpsweep/job/_build.py",
        "return make_criterion(task, cfg.label_smoothing), make_criterion(task)\n",
        "return make_criterion(task, cfg.label_smoothing), make_criterion(task, cfg.label_smoothing)\n",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "train without autocast",
        "hpsweep/job/_steps.py",
        "        with autocast(device, autocast_dtype):\n            outputs = model(x)\n            loss",
        "        with autocast(device, None):\n            outputs = model(x)\n            loss",
        ("tests/test_augment.py",),
    ),
    Mutant(
        "regression trained with BCE",
        "hpsweep/job/_steps.py",
        '    if kind == "regression":\n        return nn.MSELoss()\n',
        '    if kind == "regression":\n        return nn.BCEWithLogitsLoss()\n',
        ("tests/test_own_data.py::test_a_float_target_is_regression_with_mse_and_its_r2_rises",),
    ),
    Mutant(
        "ten classes whatever the labels",
        "hpsweep/data/_task.py",
        "    k = num_classes if num_classes is not None else high + 1\n",
        "    k = 10\n",
        ("tests/test_own_data.py::test_class_labels_set_the_head_width_and_train_with_cross_entropy",),
    ),
    Mutant(
        "R2 without the targets' mean",
        "hpsweep/job/_metrics.py",
        "            spread = total_sq - total.square() / n",
        "            spread = total_sq",
        ("tests/test_own_data.py::test_a_float_target_is_regression_with_mse_and_its_r2_rises",),
    ),
    Mutant(
        "Dataset batches not shuffled",
        "hpsweep/data/_splits.py",
        "        shuffle=generator is not None,\n",
        "        shuffle=False,\n",
        (
            "tests/test_own_data.py::"
            "test_dataset_batches_come_in_a_new_order_each_epoch_from_the_trials_generator",
        ),
    ),
    Mutant(
        "a sweep returns before its drawer drew every figure",
        "hpsweep/train.py",
        "        finish_drawing(Path(config.hydra.sweep.dir))\n",
        "        pass\n",
        ("tests/test_trial_files.py::test_every_trial_dir_holds_its_files_when_the_sweep_returns",),
    ),
    Mutant(
        "the drawer draws another figure than the trial",
        "hpsweep/record/_drawing.py",
        '        request = {"dir": str(Path(trial_dir).resolve()), "label_smoothing": label_smoothing}',
        '        request = {"dir": str(Path(trial_dir).resolve()), "label_smoothing": 0.0}',
        ("tests/test_trial_files.py::test_the_drawer_draws_the_figure_the_trial_draws",),
    ),
    Mutant(
        "a derived job config keeps the first trial's overrides",
        "hydra_plugins/hpsweep_sweeper/_derive.py",
        "        config.hydra.overrides.task = task\n",
        "        pass\n",
        ("tests/test_sweeper.py::test_enqueued_params_run_first",),
    ),
    Mutant(
        "a pruned trial is scored on the test set",
        "hpsweep/job/_trial.py",
        '    if status is not Status.PRUNED or job.cfg.get("test_pruned", False):',
        "    if True:",
        ("tests/test_trial.py::test_a_pruned_trial_is_scored_on_the_test_set_only_on_request",),
    ),
    Mutant(
        "result.json is written before the trial's checkpoints are on disk",
        "hpsweep/record/_files.py",
        "            sync_file(path)\n",
        "            pass\n",
        ("tests/test_record.py::test_a_result_is_written_once_the_files_it_is_about_are_on_disk",),
    ),
    Mutant(
        "a .hydra record keeps a section's text when its value changed type (1 -> 1.0)",
        "hpsweep/record/_yaml_text.py",
        "    if type(a) is not type(b):",
        "    if False:",
        ("tests/test_record.py::test_the_records_yaml_is_omegaconfs_from_trial_to_trial",),
    ),
    Mutant(
        "a trial's task gets the job's own config, hydra node and all",
        "hydra_plugins/hpsweep_sweeper/_job.py",
        "        ret.cfg = task_config = _compat.copy_without_hydra(config)",
        "        ret.cfg = task_config = config",
        ("tests/test_sweep_job.py::test_a_trial_job_is_what_hydra_run_job_makes_of_it",),
    ),
]


def run_tests(src: Path, tests: tuple[str, ...]) -> tuple[int, str, float]:
    """pytest over `tests` with `src` first on the path, for this process's imports and for the
    CLI processes the tests start; returns (exit code, the first failure's line, seconds)."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    return proc.returncode, (failed or [""])[0], time.perf_counter() - started


def mutate(mutant: Mutant, workdir: Path) -> Path:
    src = workdir / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(REPO / "src", src)  # conf/ is a symlink: copied as files
    path = src / mutant.file
    text = path.read_text()
    if text.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.name}: the line to mutate is not once in {mutant.file}")
    path.write_text(text.replace(mutant.original, mutant.mutated))
    return src


def catch(mutant: Mutant) -> tuple[bool, str, float]:
    """(caught, first failure, seconds): the mutant's tests on a mutated copy of src/."""
    with tempfile.TemporaryDirectory() as tmp:
        code, failure, seconds = run_tests(mutate(mutant, Path(tmp)), mutant.tests)
    return code == 1, failure, seconds  # 1: tests ran and some failed; others are errors


def main() -> int:
    args = sys.argv[1:]
    # `--after-suite`: the same tests just passed unmutated (.ci/run runs the suite first)
    after_suite = "--after-suite" in args
    names = [a for a in args if a != "--after-suite"]
    chosen = [m for m in MUTANTS if not names or m.name in names]
    # Without the mutations the same tests must pass, or "caught" would mean nothing.
    if not after_suite:
        baseline = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, failure, seconds = run_tests(REPO / "src", baseline)
        if code != 0:
            print(f"the tests fail without any mutation (exit {code}, {seconds:.0f} s): {failure}")
            return 2
    survivors = []
    print(f"{'mutant':<55} {'result':<8} {'seconds':>7}  first failure")
    # Two at a time: most of a mutant's run is starting processes, which overlap well
    with ThreadPoolExecutor(max_workers=2) as pool:
        for mutant, (caught, failure, seconds) in zip(chosen, pool.map(catch, chosen), strict=True):
            result = "caught" if caught else "SURVIVED"
            print(
                f"{mutant.name:<55} {result:<8} {seconds:>7.1f}  {failure.removeprefix('FAILED ')}",
                flush=True,
            )
            if not caught:
                survivors.append(mutant.name)
    if survivors:
        print(f"{len(survivors)} of {len(chosen)} mutants survived: {', '.join(survivors)}")
        return 1
    print(f"all {len(chosen)} mutants caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
