"""The ``fiffdepth`` command line.

Each sub-command lives in the module that owns its idea; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so
``fiffdepth --help`` stays fast and a sub-command only pays for what it uses.

Exit codes: 0 done; 1 some inputs failed (the command counted and named them); 2 a usage, model
or data error. The project's errors (``FiffDepthError``, ``DataError``) are printed as one
``error:`` line; ``--debug`` (anywhere on the command line) shows their traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("fiffdepth.pipeline", "predict depth for images (one UNet pass each)"),
    "data": ("fiffdepth.data.cli", "make or inspect datasets (e.g. 'fiffdepth data synth')"),
    "pseudolabel": ("fiffdepth.teacher", "pseudo-label images with a Depth Anything V2 teacher"),
    "pretrain": ("fiffdepth.generator", "pretrain the embedded priors: tiny generator (VAE + latent diffusion UNet) and tiny teacher"),
    "train": ("fiffdepth.train", "fine-tune FiffDepth (Eq. 7) with accelerate"),
    "evaluate": ("fiffdepth.evaluate", "evaluate a model on depth / boundary / DA-2K benchmarks"),
    "bench": ("fiffdepth.bench", "time FiffDepth against Marigold and Depth Anything (Table 3)"),
    "distill-decoder": ("fiffdepth.distill", "distil the VAE decoder into a fast TAESD depth decoder"),
    "config": ("fiffdepth.config", "print a preset's configuration as YAML"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, unless there is none to show (None, off, required)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.required or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fiffdepth", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Arguments are added on demand (see main) so that a missing optional module
        # does not break the other commands.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (any position)")
    if not argv or argv[0] in {"-h", "--help", "--version"} or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    try:
        return _run(argv)
    except Exception as err:
        from .data.io import DataError
        from .hub import FiffDepthError

        if debug or not isinstance(err, (FiffDepthError, DataError)):
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2


def _run(argv: list[str]) -> int:
    module_name, help_text = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("fiffdepth"):
            print(f"fiffdepth {argv[0]}: not available in this version ({err.name} is missing)", file=sys.stderr)
            return 2
        raise
    sub = argparse.ArgumentParser(prog=f"fiffdepth {argv[0]}", description=help_text,
                                  formatter_class=HelpFormatter)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
