"""``transfer=merge``: the methods that combine intermediate modules into one, and the keys that choose them.

A regime that offers the transfer lists its methods (``Regime.merge_methods``, the first its default) and
computes them with its library: LoRA with peft's ``add_weighted_adapter``, bottleneck adapters with adapters'
``average_adapter``. Only the modules merge: each intermediate's head stays in its folder, and the merged
module gets the fresh head the target phase trains. What cannot be computed (a zero weight sum where the
weights are normalised, a pruning method without its density) is refused here, before anything trains; the
regime refuses what its library would merge wrongly (LoRA: DoRA, rsLoRA, ``lora_bias``, unequal ranks).
This module imports no heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .keys import key


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    equal_ranks: bool = False  # the modules must share one rank (peft merges A and B apart)
    prunes: bool = False  # keeps a share of each module's weights: merge_density


METHODS = {method.name: method for method in (
    Method("cat", "LoRA: the modules' ranks side by side, exact"),
    Method("svd", "LoRA: the weighted sum of the deltas, truncated by SVD to the largest rank"),
    Method("ties", "LoRA: TIES (trim, elect the sign, disjoint mean) on A and B", equal_ranks=True, prunes=True),
    Method("ties_svd", "LoRA: TIES on the deltas, then SVD", prunes=True),
    Method("dare_linear", "LoRA: DARE (drop at random, rescale) on A and B, then summed", equal_ranks=True,
           prunes=True),
    Method("dare_linear_svd", "LoRA: DARE on the deltas, summed, then SVD", prunes=True),
    Method("dare_ties", "LoRA: DARE, then TIES's sign election, on A and B", equal_ranks=True, prunes=True),
    Method("dare_ties_svd", "LoRA: DARE and TIES on the deltas, then SVD", prunes=True),
    Method("magnitude_prune", "LoRA: the largest weights of A and B kept, then summed", equal_ranks=True,
           prunes=True),
    Method("magnitude_prune_svd", "LoRA: the largest weights of the deltas kept, summed, then SVD", prunes=True),
    Method("linear", "bottleneck: the weighted sum of the adapters' parameters (adapters' average_adapter)"),
)}
PRUNING = tuple(name for name, method in METHODS.items() if method.prunes)


@dataclass
class MergeKeys:
    """transfer merge: how the intermediate modules (init_from) combine into the one the target trains"""

    merge: str | None = key(None, f"{' | '.join(METHODS)}; none: the regime's first (lora: cat, bottleneck: "
                                  "linear); lora never linear (cross terms, peft #3004)", choices=tuple(METHODS))
    merge_weights: list[float] = key([], "one weight per init_from, negative allowed (task arithmetic); "
                                         "[]: equal weights")
    merge_normalize: bool = key(True, "divide merge_weights by their sum (an average); false: use them as given")
    merge_density: float | None = key(None, f"{', '.join(PRUNING)}: the share of each module's weights kept "
                                            "(required there)", above=0, at_most=1)


def method(regime, config) -> Method:
    """The merge method a phase in ``regime`` uses: ``merge=``, else the regime's first."""
    return METHODS[config.merge or regime.merge_methods(config)[0]]


def weights(config, count: int) -> list[float]:
    """The weight of each of ``count`` modules: ``merge_weights`` (default equal), normalised unless
    ``merge_normalize=false``."""
    given = config.merge_weights or [1.0] * count
    if len(given) != count:
        raise UserError(f"merge_weights has {len(given)} weight(s) for {count} intermediate module(s) (init_from)")
    if not config.merge_normalize:
        return list(given)
    total = sum(given)
    if abs(total) < 1e-12:
        raise UserError(f"merge_weights {','.join(map(str, given))} sum to 0, which merge_normalize=true divides "
                        "by; pass merge_normalize=false to use them as given (task arithmetic)")
    return [weight / total for weight in given]


def check(regime, config, count: int) -> Method:
    """Refuse a merge ``regime`` cannot compute from ``count`` modules as ``config`` asks; the method."""
    chosen, offered = method(regime, config), regime.merge_methods(config)
    if chosen.name not in offered:
        raise UserError(f"merge={chosen.name} is not available in regime {regime.name} "
                        f"(available: {', '.join(offered)})")
    if chosen.prunes and config.merge_density is None:
        raise UserError(f"merge={chosen.name} needs merge_density= (the share of each module's weights kept, "
                        "above 0 and at most 1)")
    if not chosen.prunes and config.merge_density is not None:
        raise UserError(f"merge_density applies to {', '.join(PRUNING)}; merge={chosen.name} prunes nothing")
    weights(config, count)
    return chosen
