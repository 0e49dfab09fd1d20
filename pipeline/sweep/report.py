"""What a sweep gives back: a table of its trials, the best trial (or, with two objectives, the Pareto front),
``best.yaml`` that ``train.py`` reproduces, and Optuna's plots, all in the sweep folder."""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from pipeline.sweep.spec import SweepSpec
from pipeline.sweep.trial import BASE_SEED, trial_config

BEST_FILE, CHOICE_FILE, TABLE_FILE = "best.yaml", "choice.yaml", "trials.json"
SPEED_ALONE = "records_per_s_alone"  # the front's speed, measured again with the machine to itself
SPEED_TIE = 0.1  # records/s this close to the fastest count as equal: one model measured twice differs by as much


def shown(values: list[float]) -> str:
    """Validation macro-F1 to 4 places; records/s to 1."""
    return ", ".join(f"{v:.4f}" if i == 0 else f"{v:.1f}" for i, v in enumerate(values))


def trial_row(t: FrozenTrial, alone: dict, members: set[int], chosen: int | None = None) -> dict:
    scores = t.user_attrs.get("scores") or []
    return {
        "trial": t.number,
        "state": t.state.name,
        "values": t.values,
        "front": t.number in members,
        "choice": t.number == chosen,
        "params": t.params,
        "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
        "spread": round(statistics.pstdev(scores), 4) if len(scores) > 1 else None,
        "epochs": len(t.intermediate_values),
        "folder": t.user_attrs.get("folder"),
        "records_per_s_alone": alone.get(str(t.number)),
    }


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial, or with two objectives the trials no other trial beats on both."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]


def choice(members: list[FrozenTrial], alone: dict, within: float) -> FrozenTrial:
    """Of the front, the fastest trial whose validation figure is within ``within`` of the best one (by the speed
    measured alone when every candidate has it, else while sweeping); of those within ``SPEED_TIE`` of the
    fastest, the best on validation."""
    top = max(t.values[0] for t in members)
    near = [t for t in members if t.values[0] >= top - within]
    measured_alone = all(str(t.number) in alone for t in near)

    def speed(t: FrozenTrial) -> float:
        return alone[str(t.number)] if measured_alone else t.values[1]

    fastest = max(speed(t) for t in near)
    return max((t for t in near if speed(t) >= fastest * (1 - SPEED_TIE)), key=lambda t: t.values[0])


def remeasure(study: optuna.Study, members: list[FrozenTrial], rounds: int = 2) -> None:
    """The front's speed again, nothing else of the sweep running: the members take turns for ``rounds``, each
    keeping its best (the first model a process loads reads slower for seconds, whichever it is)."""
    from pipeline.sweep.speed import records_per_second

    alone = dict(study.user_attrs.get(SPEED_ALONE, {}))
    todo = [t for t in members if str(t.number) not in alone and t.user_attrs.get("runs")]
    for _ in range(rounds):
        for t in todo:
            rate = records_per_second(Path(t.user_attrs["runs"][0]))
            alone[str(t.number)] = max(alone.get(str(t.number), 0.0), rate)
    study.set_user_attr(SPEED_ALONE, alone)


def importances(plots, study: optuna.Study, two: bool):
    """Optuna's parameter importances for validation macro-F1 (of two objectives, the first)."""
    with warnings.catch_warnings():  # with a target it warns that it ranks low values: they are, F1 negated
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator")
        return plots.plot_param_importances(
            study, target=(lambda t: -t.values[0]) if two else None, target_name="validation macro-F1"
        )


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    written = []
    two = len(study.directions) > 1
    wanted = [
        (
            "history",
            lambda: plots.plot_optimization_history(
                study, target=(lambda t: t.values[0]) if two else None, target_name="validation macro-F1"
            ),
        )
    ]
    if len(complete) > 1 and study.get_trials(deepcopy=False)[0].params:
        wanted.append(
            (
                "importances",
                lambda: importances(plots, study, two),
            )
        )
    if two:
        wanted.append(
            (
                "pareto_front",
                lambda: plots.plot_pareto_front(study, target_names=["validation macro-F1", "records/s (sweeping)"]),
            )
        )
    for name, draw in wanted:
        try:
            axes = draw()
        except (ValueError, RuntimeError):  # too few trials for it yet
            continue
        path = folder / f"{name}.png"
        axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(path)
    return written


def epochs_not_run(t: FrozenTrial) -> int:
    """The epochs a pruned trial's fit was asked for and did not run."""
    from pipeline.core.run_files import RunFolder

    asked = (
        RunFolder(Path(t.user_attrs["folder"])).section("trainer").get("max_epochs")
        if "folder" in t.user_attrs
        else None
    )
    return max(0, int(asked) - len(t.intermediate_values)) if asked else 0


def running_seconds(trials: list[FrozenTrial]) -> float:
    """Seconds in which at least one trial ran: a sweep stopped and continued later does not count the pause."""
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete)
    total, reached = 0.0, None
    for start, end in spans:
        counted_from = start if reached is None else max(start, reached)
        if end > counted_from:
            total += (end - counted_from).total_seconds()
            reached = end
    return total


def time_and_pruning(trials: list[FrozenTrial]) -> str:
    """How long the sweep has taken (trials running, pauses left out) and what pruning saved."""
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    fits = sum(t.duration.total_seconds() for t in trials if t.duration)
    return (
        f"time: {running_seconds(trials) / 60:.1f} min with trials running, {fits / 60:.1f} min of "
        f"trials; pruning stopped {len(pruned)} of {len(trials)} trials early, "
        f"{sum(epochs_not_run(t) for t in pruned)} epochs not run"
    )


def write_report(study: optuna.Study, spec: SweepSpec, folder: Path, final: bool) -> list[str]:
    """The report's files in ``folder`` and its lines; ``final``: the front's speed is measured again alone."""
    members = front(study)
    if final and spec.speed:
        remeasure(study, members)
    alone = study.user_attrs.get(SPEED_ALONE, {})
    trials, numbers = study.get_trials(deepcopy=False), {t.number for t in members}
    chosen = choice(members, alone, spec.within) if members and spec.speed else None
    rows = [trial_row(t, alone, numbers, chosen.number if chosen else None) for t in trials]
    (folder / TABLE_FILE).write_text(json.dumps(rows, indent=1))
    lines = [f"{'trial':>5}  {'state':8}  {'value(s)':22}  {'seconds':>7}  params"]
    for t, row in zip(trials, rows):
        values = shown(t.values) if t.values else "-"
        spread = f" sd {row['spread']}" if row["spread"] is not None else ""
        lines.append(
            f"{t.number:>5}  {t.state.name:8}  {values + spread:22}  {row['seconds'] or '-':>7}  "
            f"{json.dumps(t.params)}  {row['folder'] or ''}"
        )
    if members:
        best = members[0] if not spec.speed else max(members, key=lambda t: t.values[0])
        (folder / BEST_FILE).write_text(yaml.safe_dump(trial_config(spec, best.params, BASE_SEED), sort_keys=False))
        title = "Pareto front (validation macro-F1, records/s)" if spec.speed else "best"
        lines.append(
            f"{title}: "
            + "; ".join(
                f"trial {t.number} {shown(t.values)}"
                + (f" (alone: {alone[str(t.number)]} records/s)" if str(t.number) in alone else "")
                for t in members
            )
        )
        stack = " ".join("--config " + c for c in spec.configs)
        lines.append(f"{BEST_FILE}: trial {best.number}: train.py fit {stack} --config {folder / BEST_FILE}")
    if chosen is not None:
        (folder / CHOICE_FILE).write_text(yaml.safe_dump(trial_config(spec, chosen.params, BASE_SEED), sort_keys=False))
        lines.append(
            f"{CHOICE_FILE}: trial {chosen.number}, the fastest on the front (within {SPEED_TIE:.0%}) of those "
            f"within {spec.within} of the best validation figure: train.py fit {stack} --config {folder / CHOICE_FILE}"
        )
    lines.append(time_and_pruning(trials))
    lines += [f"plot: {p}" for p in write_plots(study, folder)]
    return lines
