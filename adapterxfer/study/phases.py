"""What a plan expands into: phases (units of work, each in its own folder) and arms (what the report
compares). Plain data, so that workers can receive phases without importing the training stack."""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE = "baseline"


@dataclass(frozen=True)
class Phase:
    """One unit of work: ``train`` (a RunConfig, ``settings``) or ``evaluate`` (evaluate_model's arguments).

    ``init_from``, ``stacks_on``, ``lang_modules`` and ``model`` name other phases by key; their folders are
    filled in when the phase runs (``stacks_on``'s under the regime's ``Regime.stacks_key``), and their manifests
    enter its identity."""

    key: str
    action: str  # "train" | "evaluate"
    role: str  # "intermediate" | "language" | "target" | "evaluation"
    task: str
    settings: dict
    seed: int | None = None
    regime: str | None = None
    target: str | None = None
    arm: str | None = None
    init_from: tuple[str, ...] = ()
    stacks_on: tuple[str, ...] = ()  # the regime's language phases it stacks on (madx: language adapters)
    lang_modules: tuple[str, ...] = ()  # transfer=arithmetic's language modules
    model: str | None = None  # evaluate: the phase whose output is scored (None: the backbone)

    @property
    def deps(self) -> tuple[str, ...]:
        return self.init_from + self.stacks_on + self.lang_modules + ((self.model,) if self.model else ())


@dataclass(frozen=True)
class Arm:
    """One cell of the comparison: a regime, a target and how it starts (``name``), with a phase per seed."""

    regime: str
    target: str
    name: str
    keys: dict[int, str]  # seed -> phase key
    intermediates: tuple[str, ...] = ()  # the intermediate phases' tasks it starts from (a+b: multi-task)

    @property
    def label(self) -> str:
        return f"{self.regime}/{self.name}"


@dataclass
class Graph:
    phases: dict[str, Phase] = field(default_factory=dict)
    arms: list[Arm] = field(default_factory=list)

    def add(self, phase: Phase) -> str:
        self.phases.setdefault(phase.key, phase)
        return phase.key

    def arm(self, label: str, target: str) -> Arm | None:
        return next((a for a in self.arms if a.label == label and a.target == target), None)
