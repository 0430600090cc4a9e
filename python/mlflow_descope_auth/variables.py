"""Every environment variable the package reads: a view of the Rust core's settings table
(``_core.SETTINGS``), for ``mlflow-descope-auth doctor`` and the README's configuration reference.

``python -m mlflow_descope_auth.variables --markdown`` prints that reference; a test keeps the README
equal to it.
"""

from __future__ import annotations

import argparse

from mlflow_descope_auth._core import SETTINGS, Setting

VARIABLES: tuple[Setting, ...] = SETTINGS
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# The README's table sits between these two lines.
MARKDOWN_BEGIN = "<!-- configuration reference: python -m mlflow_descope_auth.variables --markdown -->"
MARKDOWN_END = "<!-- end of the configuration reference -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_cell(setting: Setting) -> str:
    if setting.default is not None:
        return f"`{setting.default_shown}`"
    return setting.default_shown


def _accepts_cell(setting: Setting) -> str:
    if setting.kind == "choice":
        return "one of " + ", ".join(f"`{c}`" for c in setting.choices)
    return setting.accepts


def markdown_table() -> str:
    rows = [
        "| variable | where | default | example | accepts | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        example = s.example if s.example.startswith("(") else f"`{s.example}`"
        cells = [f"`{s.name}`", s.side, _default_cell(s), example, _accepts_cell(s), s.help]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlflow_descope_auth.variables", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="the README's configuration table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
    else:
        width = max(len(s.name) for s in SETTINGS)
        for s in SETTINGS:
            print(f"{s.name:<{width}}  {s.side:<6}  {s.default_shown}")


if __name__ == "__main__":
    main()
