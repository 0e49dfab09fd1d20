"""A sweep file: the config stack the trials start from, the space searched, the objective and the search itself.

```yaml
name: demo                      # the study, and the folder runs/sweeps/<name>
configs: [configs/demo.yaml]    # train.py's --config files, in order
fixed: {trainer.max_epochs: 4}  # keys every trial sets
space:
  model.lr: {float: [0.0005, 0.01], log: true}
  model.text_hidden: {int: [32, 128], step: 32}
  model.text_encoder: {categorical: [lstm, textcnn]}
objective: {part: network, speed: false}   # validation macro-F1, mean over tasks: network alone or the blend
                                # speed: true adds records/s; within: 0.01 picks the front's fastest that close
first: [{model.lr: 0.003}]      # trials tried first (today's recipe, say): keys of the space
seeds: 1
trials: 20
timeout_minutes: null
sampler: tpe                    # tpe, nsga2, random or grid
pruner: {kind: median, warmup_epochs: 1}   # median, hyperband or none
```

Every key is checked against the keys ``train.py fit`` accepts before any fit: a wrong one is refused with the
nearest right one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.option_groups import did_you_mean

SAMPLERS = ("tpe", "nsga2", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
PARTS = ("network", "blend")
KINDS = ("float", "int", "categorical")
FILE_KEYS = (
    "name",
    "configs",
    "fixed",
    "space",
    "first",
    "objective",
    "seeds",
    "trials",
    "timeout_minutes",
    "sampler",
    "pruner",
)


class SweepError(Exception):
    """A sweep that cannot run as asked (one line for the user)."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``float`` (``low``, ``high``, ``log``), ``int`` (``low``, ``high``, ``step``) or
    ``categorical`` (``choices``)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | float | None = None
    choices: tuple = ()

    def grid(self) -> list:
        """The values a grid search tries."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise SweepError(f"space.{self.key}: a grid needs a step for a {self.kind} range (or categorical choices)")
        values, value = [], self.low
        while value <= self.high + 1e-12:
            values.append(int(value) if self.kind == "int" else round(value, 12))
            value += self.step
        return values


@dataclass(frozen=True)
class SweepSpec:
    name: str
    configs: tuple[str, ...]
    dimensions: tuple[Dimension, ...]
    fixed: dict = field(default_factory=dict)
    first: tuple[dict, ...] = ()  # parameters tried before the sampler's
    part: str = "network"  # the objective: the network alone, or the blend validation chose
    speed: bool = False  # a second objective: text-only records/s
    within: float = 0.01  # with speed, the choice: the fastest front member this close to the best validation figure
    seeds: int = 1
    trials: int = 20
    timeout_minutes: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    warmup_epochs: int = 1

    @property
    def directions(self) -> list[str]:
        return ["maximize", "maximize"] if self.speed else ["maximize"]


def dimension(key: str, given) -> Dimension:
    if not isinstance(given, dict):
        raise SweepError(
            f"space.{key}: expected {{float: [low, high]}}, {{int: [low, high]}} or "
            f"{{categorical: [...]}}, got {given!r}"
        )
    kinds = [k for k in KINDS if k in given]
    extra = [k for k in given if k not in (*KINDS, "log", "step")]
    if len(kinds) != 1 or extra:
        raise SweepError(f"space.{key}: give one of {list(KINDS)} (and log or step), got {sorted(given)}")
    kind, values = kinds[0], given[kinds[0]]
    if kind == "categorical":
        if not isinstance(values, list) or not values:
            raise SweepError(f"space.{key}: categorical needs a non-empty list of choices")
        return Dimension(key, kind, choices=tuple(values))
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
        raise SweepError(f"space.{key}: {kind} needs [low, high], got {values!r}")
    low, high = values
    step, log = given.get("step"), bool(given.get("log", False))
    if not low < high:
        raise SweepError(f"space.{key}: the range [{low}, {high}] is empty (low must be below high)")
    if kind == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise SweepError(f"space.{key}: int needs whole numbers, got [{low}, {high}] step {step}")
    if log and (low <= 0 or step is not None):
        raise SweepError(f"space.{key}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise SweepError(f"space.{key}: step must be positive, got {step}")
    return Dimension(key, kind, low, high, log, step)


def check_keys(keys: list[str], where: str, known: set[str]) -> None:
    wrong = [k for k in keys if k not in known]
    if wrong:
        hints = did_you_mean(wrong, known)
        raise SweepError(
            f"{where}: {', '.join(repr(k) for k in wrong)} is not a key train.py accepts"
            f"{'; ' + ' '.join(hints) if hints else ''}"
        )


def overrides(pairs: list[str]) -> dict:
    """``["model.teacher=runs/t", "trainer.max_epochs=4"]`` -> keys and their YAML values."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {pair}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_spec(path: str | Path, known_keys: set[str], name: str | None = None, fixed: dict | None = None) -> SweepSpec:
    """The sweep file at ``path``, checked (``known_keys``: what ``train.py fit`` accepts); ``name`` and ``fixed``
    (keys set on the command line) replace the file's."""
    path = Path(path)
    try:
        given = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise SweepError(f"{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(given, dict):
        raise SweepError(f"{path}: expected a mapping of {list(FILE_KEYS)}")
    unknown = [k for k in given if k not in FILE_KEYS]
    if unknown:
        hints = did_you_mean(unknown, FILE_KEYS)
        raise SweepError(f"{path}: unknown entries {unknown}{'; ' + ' '.join(hints) if hints else ''}")
    space, fixed = given.get("space") or {}, {**(given.get("fixed") or {}), **(fixed or {})}
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{path}: space is empty: give at least one key to search")
    check_keys(list(space), "space", known_keys)
    check_keys(list(fixed), "fixed", known_keys)
    first = given.get("first") or []
    if not isinstance(first, list) or not all(isinstance(f, dict) for f in first):
        raise SweepError(f"{path}: first: expected a list of {{key: value}} trials")
    for i, trial in enumerate(first):
        outside = [k for k in trial if k not in space]
        if outside:
            raise SweepError(f"first[{i}]: {outside} not in the space (the space's keys: {list(space)})")
    configs = tuple(str(c) for c in given.get("configs") or ())
    for config in configs:
        if not Path(config).is_file():
            raise SweepError(f"configs: {config} is not a file")
    objective = given.get("objective") or {}
    part, speed = objective.get("part", "network"), bool(objective.get("speed", False))
    within = objective.get("within", 0.01)
    if isinstance(within, bool) or not isinstance(within, (int, float)) or not 0 <= within <= 1:
        raise SweepError(f"objective.within {within!r}: expected a macro-F1 difference from 0 to 1 (0.01: a point)")
    pruner = given.get("pruner") or {}
    spec = SweepSpec(
        name=str(name or given.get("name") or path.stem),
        configs=configs,
        dimensions=tuple(dimension(k, v) for k, v in space.items()),
        fixed=dict(fixed),
        first=tuple(first),
        part=part,
        speed=speed,
        within=float(within),
        seeds=int(given.get("seeds", 1)),
        trials=int(given.get("trials", 20)),
        timeout_minutes=given.get("timeout_minutes"),
        sampler=str(given.get("sampler", "nsga2" if speed else "tpe")),
        pruner=str(pruner.get("kind", "median")),
        warmup_epochs=int(pruner.get("warmup_epochs", 1)),
    )
    if spec.part not in PARTS:
        raise SweepError(f"objective.part {spec.part!r}: expected one of {list(PARTS)}")
    if spec.sampler not in SAMPLERS:
        raise SweepError(f"sampler {spec.sampler!r}: expected one of {list(SAMPLERS)}")
    if spec.pruner not in PRUNERS:
        raise SweepError(f"pruner.kind {spec.pruner!r}: expected one of {list(PRUNERS)}")
    if spec.speed and spec.pruner != "none":
        raise SweepError(
            "pruner: Optuna prunes single-objective studies only; with objective.speed set pruner: {kind: none}"
        )
    if spec.seeds < 1 or spec.trials < 1:
        raise SweepError(f"seeds {spec.seeds}, trials {spec.trials}: expected 1 or more")
    if spec.sampler == "grid":
        for d in spec.dimensions:
            d.grid()
    return spec
