"""Loading from a hub id or a local directory, with one clear line when neither works.

The libraries' own ``from_pretrained`` does the loading (so hub ids work for users with
internet access); this module only turns their long network tracebacks into one line that
names the id and says how to pass a local directory instead.

Fast failure: with ``HF_HUB_OFFLINE`` set, a hub id is tried from the local cache only; otherwise
one metadata request (a few seconds' timeout, no retries) decides whether the hub is reachable
before the library's own downloads (which retry for tens of seconds) start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
PROBE_TIMEOUT_S = 4.0


class FiffDepthError(RuntimeError):
    """An error the command line reports as one line (no traceback), exit code 2."""


class UsageError(FiffDepthError, ValueError):
    """An argument or input the caller can fix (a bad ``processing_resolution``, an ``--out`` inside the inputs)."""


class HubUnreachableError(FiffDepthError, OSError):
    pass


def looks_like_local_path(id_or_path: str) -> bool:
    s = str(id_or_path)
    return s.startswith((".", "/", "~")) or s.count("/") != 1 or Path(s).exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def _how_to_fix(s: str) -> str:
    return (f"download it where you have internet (e.g. `hf download {s} --local-dir DIR`) "
            f"and pass the local directory instead")


def probe_hub(repo_id: str) -> None:
    """One request for the repo's metadata; raise ``HubUnreachableError`` (one line) when the
    hub cannot be reached or the repo is not there."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except HfHubHTTPError as err:  # reachable, but no such repo / no access
        raise HubUnreachableError(f"hub id {repo_id!r}: {_first_line(err)}; {_how_to_fix(repo_id)}") from None
    except Exception as err:  # network errors come in many types (httpx, OSError, timeouts, ...)
        raise HubUnreachableError(
            f"hub id {repo_id!r}: cannot reach the hub ({type(err).__name__}: {_first_line(err)}); "
            f"set HF_HUB_OFFLINE=1 to use a cached copy, or {_how_to_fix(repo_id)}"
        ) from None


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
        try:
            return loader(str(path))
        except FiffDepthError:
            raise
        except Exception as err:  # missing config, garbled weights, wrong layout: diffusers/transformers raise many types
            raise FiffDepthError(f"{what}: cannot load from {path} ({type(err).__name__}: {_first_line(err)})") from None
    if not hub_offline():
        probe_hub(s)
    try:
        return loader(s)
    except Exception as err:
        where = "not in the local cache (HF_HUB_OFFLINE is set)" if hub_offline() else f"{type(err).__name__}: {_first_line(err)}"
        raise HubUnreachableError(f"{what}: cannot load hub id {s!r} ({where}); {_how_to_fix(s)}") from None
