"""How a target phase starts from intermediate artifacts: one typed definition per transfer, one table.

A regime lists the transfers it offers (``Regime.transfers``); everything else about a transfer is
here: how many parents it takes, whether a study runs it over all its intermediates at once, whether
those intermediates train together (``multitask``: one a+b phase, a study-level transfer that the
target phase runs as ``sequential``), whether its result is one plain module a bank can swap, whether the
phase trains at all (``arithmetic`` composes its parent with language modules and trains nothing), and its
own keys (``section``: read by a phase of this transfer only, in a regime that offers it).
"""

from __future__ import annotations

from dataclasses import dataclass

from .arithmetic import ArithmeticKeys
from .errors import UserError
from .merges import MergeKeys


@dataclass(frozen=True)
class Transfer:
    name: str
    help: str
    min_parents: int  # 0: the phase may also start from nothing (the baseline)
    max_parents: int | None  # None: any number
    combines: bool = False  # a study runs it once over all its intermediates, not once per intermediate
    joint: bool = False  # the intermediates train together as one a+b phase, which the target starts from
    swappable: bool = True  # the result is one plain module (bank.py); False: stacked, fused or per language
    trains: bool = True  # False: the phase composes its parents' modules; its dev score is the composition's
    pushable: bool = True  # False: a model card cannot load its result (push refuses it)
    section: type | None = None  # its keys, a dataclass of keys.key() fields titled by its docstring; None: none

    @property
    def phase_transfer(self) -> str:
        """The ``transfer=`` a target phase of this transfer trains with."""
        return "sequential" if self.joint else self.name

    def arm(self, tasks: list[str], way: str | None = None) -> str:
        """A study arm's name: the intermediate itself for sequential, else ``name(a+b)``; ``name-way(a+b)``
        where a plan runs the transfer several named ways (a study's ``merges``)."""
        if self.name == "sequential":
            return tasks[0]
        return f"{self.name}{'-' + way if way else ''}({'+'.join(tasks)})"

    def check(self, regime, count: int) -> None:
        """Refuse this transfer in a ``regime`` that does not offer it, or from ``count`` parents it cannot take."""
        if self.name not in regime.transfers:
            raise UserError(f"transfer={self.name} is not available in regime {regime.name} "
                            f"(available: {', '.join(t for t in regime.transfers if t in PHASE_TRANSFERS)})")
        if count < self.min_parents or (self.max_parents is not None and count > self.max_parents):
            wanted = (f"{self.min_parents}" if self.min_parents == self.max_parents
                      else f"at least {self.min_parents}" if self.max_parents is None
                      else f"{self.min_parents} to {self.max_parents}")
            raise UserError(f"transfer={self.name} starts from {wanted} intermediate artifact(s) (init_from=), "
                            f"got {count}")


TRANSFERS = {t.name: t for t in (
    Transfer("sequential", "the module (or encoder) starts from the one intermediate's; none: the baseline",
             0, 1),
    Transfer("stack", "the intermediate module stays frozen and active, a new one trains on top", 1, 1,
             swappable=False),
    Transfer("fusion", "AdapterFusion over the frozen intermediate modules", 2, None, combines=True,
             swappable=False),
    Transfer("merge", "the intermediate modules merged into one (merge=), which trains on", 2, None, combines=True,
             section=MergeKeys),
    Transfer("arithmetic", "each test language scored with the target's task module (init_from) + "
             "λ·(its language module − the source language's), nothing trained (lang_modules=)", 1, 1,
             swappable=False, trains=False, pushable=False, section=ArithmeticKeys),
    Transfer("multitask", "the intermediates train together (task=a+b), the target starts from that", 1, 1,
             combines=True, joint=True),
)}
PHASE_TRANSFERS = tuple(name for name, t in TRANSFERS.items() if not t.joint)  # RunConfig's transfer=


def get_transfer(name: str | None) -> Transfer:
    """A transfer by name; None (a manifest without parents) is sequential."""
    return TRANSFERS[name or "sequential"]
