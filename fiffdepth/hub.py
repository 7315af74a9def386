"""Loading from a hub id or a local directory, with one clear line when neither works.

The libraries' own ``from_pretrained`` does the loading (so hub ids work for users with
internet access); this module only turns their long network tracebacks into one line that
names the id and says how to pass a local directory instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class FiffDepthError(RuntimeError):
    """An error the command line reports as one line (no traceback)."""


class HubUnreachableError(FiffDepthError, OSError):
    pass


def looks_like_local_path(id_or_path: str) -> bool:
    s = str(id_or_path)
    return s.startswith((".", "/", "~")) or s.count("/") != 1 or Path(s).exists()


def load_or_explain(loader: Callable[[str], T], id_or_path: str | Path, what: str) -> T:
    """Call ``loader(id_or_path)``; on failure raise one readable line.

    ``what`` names the thing being loaded ("Stable Diffusion UNet", "Depth Anything teacher").
    """
    s = str(id_or_path)
    if looks_like_local_path(s):
        path = Path(s).expanduser()
        if not path.exists():
            raise FiffDepthError(f"{what}: local directory {s!r} does not exist")
        if not path.is_dir():
            raise FiffDepthError(f"{what}: {s!r} is not a directory (pass a model directory in the diffusers/transformers layout)")
        return loader(str(path))
    try:
        return loader(s)
    except Exception as err:  # network errors come in many types (OSError, HTTPError, LocalEntryNotFound, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubUnreachableError(
            f"{what}: cannot load hub id {s!r} ({type(err).__name__}: {reason[:160]}); "
            f"download it where you have internet (e.g. `hf download {s} --local-dir DIR`) "
            f"and pass the local directory instead"
        ) from None
