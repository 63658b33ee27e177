"""The `alembert` console script: `alembert distill|compress|export|predict|sweep [args...]`.

Each subcommand runs the module that `python -m <module>` runs, with the same arguments, so the two
spellings cannot drift apart.
"""

from __future__ import annotations

import runpy
import sys

SUBCOMMANDS = {
    "distill": ("distill", "distil a teacher into a student (Hydra overrides, e.g. teacher=DIR student.num_layers=3)"),
    "compress": ("compress", "run compression passes on a model directory (model=DIR passes=[...])"),
    "export": ("export", "export a model directory to a checked ONNX bundle (model=DIR)"),
    "predict": ("export.predict", "predict with an ONNX bundle, torch-free (BUNDLE TEXT... or JSONL on stdin)"),
    "sweep": ("distill.sweep", "an Optuna sweep over the whole recipe (sweep=NAME [overrides...])"),
}


def usage() -> str:
    lines = ["usage: alembert <command> [arguments...]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "`alembert CMD ...` is the same as `python -m MODULE ...`; `alembert CMD --help` shows its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"alembert: error: unknown command '{name}'; use one of {', '.join(SUBCOMMANDS)} "
              "(alembert --help lists them)", file=sys.stderr)
        sys.exit(2)
    module = SUBCOMMANDS[name][0]
    sys.argv = [f"alembert {name}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
