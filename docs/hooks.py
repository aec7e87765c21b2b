"""mkdocs hook: the reference pages' tables, written at build time from the code that defines the keys.

``<!-- train-keys -->`` becomes one table per section of ``adapterxfer.config`` (the general sections, then
each regime's, then each transfer's); ``<!-- plan-keys -->`` the table of ``adapterxfer.study.plan.KEYS`` and the keys of its
blocks. Nothing is written twice: a key added to the code appears here by itself.
"""

from __future__ import annotations

from adapterxfer import config
from adapterxfer.keys import default_of
from adapterxfer.study import plan


def on_page_markdown(markdown: str, **_) -> str:
    return (markdown.replace("<!-- train-keys -->", train_keys())
            .replace("<!-- plan-keys -->", plan_keys()))


def train_keys() -> str:
    parts = []
    for section, title in config.SECTIONS.items():
        rows = [f"| `{spec.name}` | `{config.show_value(default_of(spec))}` | {_cell(spec.metadata['help'])}"
                f"{_allowed(spec.metadata)} |" for spec in config.section_fields(section)]
        parts.append(f"## {section}\n\n{_cell(title)}\n\n| key | default | meaning |\n|---|---|---|\n"
                     + "\n".join(rows))
    return "\n\n".join(parts)


def plan_keys() -> str:
    rows = []
    for name, (kind, default, help) in plan.KEYS.items():
        shown = "required" if default is plan.REQUIRED else f"`{default!r}`" if default not in (None, "") else ""
        block = plan.BLOCK_KEYS.get(name)
        inner = f" Keys: {', '.join(f'`{key}`' for key in sorted(block))}." if block else ""
        rows.append(f"| `{name}` | {kind.__name__} | {shown} | {_cell(help)}{inner} |")
    return "| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows)


def _allowed(meta: dict) -> str:
    bounds = [f"{op} {meta[name]}" for name, op in (("at_least", "≥"), ("above", ">"), ("at_most", "≤"))
              if meta[name] is not None]
    return f" ({' and '.join(bounds)})" if bounds else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
