"""``make reproduce``: execute notebooks 00→06 with papermill, in order, into an output folder.

    python -m fiffdepth.reproduce --preset tiny --out outputs            # the embedded default
    python -m fiffdepth.reproduce --preset paper --out /scratch/fiff \\
        --set 'overrides={"data.synthetic": ["hypersim:/data/hypersim", "vkitti:/data/vkitti"], ...}'
    python -m fiffdepth.reproduce --smoke --out /tmp/smoke               # minutes-long wiring check
    python -m fiffdepth.reproduce --seeds 3                               # ablations over 3 training seeds

Executed notebooks land in ``OUT/notebooks``; every stage's outputs (data, priors, runs,
results) in ``OUT``; figures in ``--figures`` (default ``figures/``). Stages are idempotent,
so re-running after an interruption redoes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .atomic import write_json

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["00_data", "01_priors", "02_teacher_pseudo_labels", "03_train", "04_evaluate", "05_ablations",
             "06_figures"]

# Small parameters that exercise every cell in a few minutes (tests and `--smoke`).
SMOKE: dict[str, dict] = {
    "00_data": {"n_synth": 24, "n_eval": 8, "size": 64, "n_styled": 8, "n_styled_real": 8},
    "01_priors": {"sample_steps": 2},
    "02_teacher_pseudo_labels": {},
    "03_train": {"steps": 3, "n_show": 2},
    "04_evaluate": {"steps": 3, "max_images": 2, "marigold_steps": 2, "marigold_ensemble": 1, "bench_images": 1,
                    "bench_resolution": 64},
    "05_ablations": {"steps": 3, "max_images": 2, "marigold_steps": 2, "marigold_ensemble": 1, "extra_seeds": [1]},
    "06_figures": {"n_images": 2, "marigold_steps": 2, "marigold_ensemble": 1},
}


# ``--data ROOT`` (``make reproduce PRESET=paper DATA=ROOT``): the conventional layout under ROOT.
DATA_LAYOUT = {"hypersim": "synthetic", "vkitti": "synthetic", "laion_art": "real", "laion_art_pseudo": "pseudo"}
EVAL_SETS = ("nyu", "kitti", "eth3d", "scannet", "diode")


def data_parameters(root: str | Path) -> tuple[dict, list[str]]:
    """Notebook parameters for datasets found under ROOT: ROOT/hypersim, ROOT/vkitti (synthetic),
    ROOT/laion_art (real), ROOT/laion_art_pseudo (pseudo-labels), ROOT/{nyu,kitti,eth3d,scannet,diode}
    (Table 1). Only what exists is used; ROOT itself must exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found (expected hypersim/, vkitti/, laion_art/ ... inside)")
    synthetic = [f"{k}:{root / k}" for k, v in DATA_LAYOUT.items() if v == "synthetic" and (root / k).is_dir()]
    overrides: dict = {}
    if synthetic:
        overrides["data.synthetic"] = synthetic
    if (root / "laion_art").is_dir():
        overrides["data.real"] = [str(root / "laion_art")]
    if (root / "laion_art_pseudo").is_dir():
        overrides["data.pseudo_labels"] = str(root / "laion_art_pseudo")
    params: dict = {"overrides": overrides} if overrides else {}
    datasets = [f"{k}:{root / k}" for k in EVAL_SETS if (root / k).is_dir()]
    return params, datasets


def notebook_parameters(name: str, preset: str, out: str, figures: str, smoke: bool, extra: dict) -> dict:
    params = {"preset": preset, "out_dir": out, "figures_dir": figures}
    if smoke:
        params.update(SMOKE.get(name, {}))
    params.update(extra)
    return params


def run_notebooks(out: str | Path = "outputs", preset: str = "tiny", figures: str | Path = "figures",
                  smoke: bool = False, only: list[str] | None = None, extra: dict | None = None,
                  notebooks_dir: str | Path | None = None, progress: bool = True,
                  per_notebook: dict | None = None) -> dict:
    """Execute the notebooks in order; returns ``{name: seconds}`` (raises on the first failure).
    ``extra``: parameters for every notebook; ``per_notebook``: ``{name: parameters}``."""
    import papermill as pm

    nb_dir = Path(notebooks_dir) if notebooks_dir else REPO / "notebooks"
    out = Path(out).resolve()
    figures = Path(figures).resolve()
    executed = out / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name in NOTEBOOKS:
        if only and name not in only:
            continue
        src = nb_dir / f"{name}.ipynb"
        if not src.is_file():
            raise FileNotFoundError(f"{src}: notebook missing (recreate it from its pair with `make notebooks`)")
        params = notebook_parameters(name, preset, str(out), str(figures), smoke,
                                     {**(extra or {}), **(per_notebook or {}).get(name, {})})
        print(f"[reproduce] {name} {json.dumps(params)}", flush=True)
        t0 = time.time()
        pm.execute_notebook(str(src), str(executed / f"{name}.ipynb"), parameters=params, cwd=str(REPO),
                            progress_bar=progress, kernel_name="python3")
        timings[name] = round(time.time() - t0, 1)
        print(f"[reproduce] {name} done in {timings[name]:.0f} s", flush=True)
    path = out / ("timings_smoke.json" if smoke else "timings.json")
    try:  # a partial run (--only) updates its notebooks' times and keeps the others
        old = json.loads(path.read_text())
        merged = {k: v for k, v in old["seconds"].items() if k != "total"} if old.get("preset") == preset else {}
    except (OSError, ValueError, KeyError, AttributeError):
        merged = {}
    merged.update(timings)
    merged["total"] = round(sum(merged[n] for n in NOTEBOOKS if n in merged), 1)
    write_json(path, {"preset": preset, "seconds": merged})
    timings["total"] = round(sum(timings.values()), 1)
    return timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fiffdepth.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    p.add_argument("--out", default="outputs")
    p.add_argument("--figures", default="figures")
    p.add_argument("--smoke", action="store_true", help="tiny parameters: checks the wiring in minutes")
    p.add_argument("--only", nargs="*", help=f"run only these notebooks ({', '.join(NOTEBOOKS)})")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="data root with hypersim/, vkitti/, laion_art/, laion_art_pseudo/, nyu/, kitti/, ... (paper scale)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every ablation variant with this many training seeds (0..N-1) and report mean ± std")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="extra notebook parameter, value parsed as JSON (e.g. steps=800)")
    args = p.parse_args(argv)
    extra = {}
    eval_sets: list = []
    if args.data:
        try:
            data_params, eval_sets = data_parameters(args.data)
        except FileNotFoundError as err:
            p.error(str(err))
        extra.update(data_params)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds}: need at least 1")
    per_notebook: dict = {"04_evaluate": {"datasets": eval_sets}} if eval_sets else {}
    if args.seeds > 1:
        per_notebook["05_ablations"] = {"extra_seeds": list(range(1, args.seeds))}
    try:
        timings = run_notebooks(args.out, args.preset, args.figures, args.smoke, args.only, extra,
                                per_notebook=per_notebook or None)
    except Exception as err:  # papermill raises PapermillExecutionError naming the failing cell
        print(f"reproduce: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
              file=sys.stderr)
        print(f"(the executed notebook with the traceback is in {Path(args.out) / 'notebooks'})", file=sys.stderr)
        return 1
    print(json.dumps(timings, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
