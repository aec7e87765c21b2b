"""What differs between the two stacks adapterxfer supports, in one place: transformers 5 with
huggingface_hub 2 (the core environment), and transformers 4.57 with huggingface_hub 0.36 (the
environment of the ``[adapters]`` extra, as adapters 1.3 requires). Importing this module imports neither."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version

from .errors import UserError

TRANSFORMERS_4 = version("transformers").startswith("4.")
CHECKED = ("transformers", "peft")  # the libraries whose version adapterxfer checks at every start


def check_versions() -> None:
    """The transformers and peft installed are within the ranges adapterxfer is tested with (its metadata:
    pyproject.toml's dependencies), else one line naming the installed version and the range."""
    from packaging.requirements import Requirement

    try:
        tested = {req.name: req.specifier for req in map(Requirement, requires("adapterxfer") or []) if not req.marker}
    except PackageNotFoundError:  # run from a source tree that was never installed
        return
    for name in CHECKED:
        installed = version(name)
        if name in tested and not tested[name].contains(installed, prereleases=True):
            raise UserError(f"{name} {installed} is installed, but adapterxfer is tested with {name}{tested[name]}: "
                            f"pip install '{name}{tested[name]}' (or reinstall adapterxfer)")


def layer_mask(encoder):
    """``mask(attention_mask, embedded)``: the mask ``encoder``'s layers take, from a (rows, length) 0/1
    attention mask and the embeddings' output (transformers 4: the additive mask; 5: what its masking
    utilities make for the model's attention implementation, None where nothing is padded)."""
    if TRANSFORMERS_4:
        return lambda attention_mask, embedded: encoder.get_extended_attention_mask(attention_mask,
                                                                                    attention_mask.shape)
    from transformers.masking_utils import create_bidirectional_mask

    return lambda attention_mask, embedded: create_bidirectional_mask(
        config=encoder.config, inputs_embeds=embedded, attention_mask=attention_mask)


def layer_states(output):
    """The hidden states an encoder layer returns (transformers 4: the first of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def hub_unreachable() -> tuple[type[Exception], ...]:
    """What huggingface_hub's HTTP client raises when the Hub cannot be reached (0.x: requests; 2.x: httpx2)."""
    if version("huggingface_hub").startswith("0."):
        import requests

        return requests.ConnectionError, requests.Timeout
    import httpx2

    return httpx2.ConnectError, httpx2.TimeoutException
