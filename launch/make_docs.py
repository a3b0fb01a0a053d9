"""Regenerate ``docs/config.md`` from the config dataclasses: ``python -m launch.make_docs``."""

from __future__ import annotations

from pathlib import Path

from rlcore.config import field_docs

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def render_config_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the dataclasses in `rlcore/config.py` by `python -m launch.make_docs`; do not edit by hand.",
        "",
        "Set any field in a YAML preset (`launch/configs/*.yaml`) or on the command line as",
        "`section.field=value`, e.g. `python -m launch.train --config launch/configs/grpo_arithmetic.yaml "
        "trainer.total_steps=20 rollout.num_workers=2`.",
        "An unknown key, a wrong type or an impossible combination stops the run with exit code 2",
        "and a one-line message naming the key.",
    ]
    for section, rows in field_docs().items():
        lines += ["", f"## `{section}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, type_, default, doc in rows:
            lines.append(f"| `{name}` | `{type_}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_config_reference())
    print(f"wrote {DOC}")
