"""The ablation lab (``notebooks/07_lab.ipynb``): set Eq. 7's knobs, fine-tune from the shipped
generator prior in the background, and compare each finished run with the full method and the
mean-layout baseline on the held-out scenes of every embedded domain.

    lab = Lab("outputs")                           # needs OUT/data (00_data, 02_teacher_pseudo_labels)
    lab.train(LabSettings(gamma=0.8, steps=100))   # blocking; the widget runs it in a thread
    print(lab.compare()["markdown"])
    LabWidget(lab)                                 # ipywidgets: a notebook cell's last expression

Where things live. OUT/lab is an output root whose data, priors and latent cache are links to
OUT's (``stages.link_inputs``). Each run is OUT/lab/runs/<slug>, the slug spelling its settings,
so the same settings train once (``stages.train_variant`` reuses a finished run with the same
config). OUT/lab/runs/fiffdepth links to the full method: OUT/runs/fiffdepth once 03_train has
made it, else the shipped ``weights/fiffdepth``.
"""

from __future__ import annotations

import html
import json
import math
import os
import queue
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from . import plots, stages
from .atomic import write_json
from .baselines import MEAN_LAYOUT
from .config import LossConfig
from .losses import LOSS_TERMS, TEACHER_MODES, TRAJECTORY_TARGETS

FULL = "fiffdepth"  # OUT/lab/runs/fiffdepth: the link to the full method
MAX_STEPS = 5000    # the lab is for short runs; longer ones belong to `fiffdepth train`
SETTINGS_FILE = "lab_settings.json"
_PAPER = LossConfig()  # the paper's values (Section 4.1) are the controls' defaults
_FIGURES = threading.Lock()  # pyplot is not thread-safe: the trainer thread and the notebook both draw


def _preset_steps() -> int:
    from .config import tiny_config

    return tiny_config().train.iterations


@dataclass(frozen=True)
class LabSettings:
    """The knobs of one lab run: Eq. 7's weights, the Fig. 7 switches, steps and training seed."""

    gamma: float = _PAPER.gamma
    lambda_mae: float = _PAPER.lambda_mae
    lambda_gm: float = _PAPER.lambda_gm
    lambda_k: float = _PAPER.lambda_k
    trajectory: bool = _PAPER.trajectory
    trajectory_target: str = _PAPER.trajectory_target  # "blend" (Eq. 2) or "image" (γ = 1)
    teacher_supervision: str = _PAPER.teacher_supervision  # "d_minus1" (Eq. 4), "d0" or "none"
    steps: int = field(default_factory=_preset_steps)  # the tiny preset's, as 03_train
    seed: int = 0

    def problems(self) -> list[str]:
        """Why these settings cannot train (empty when they can)."""
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def whole(x):
            return isinstance(x, int) and not isinstance(x, bool)

        out = []
        if not number(self.gamma) or not 0 <= self.gamma <= 1:
            out.append(f"γ = {self.gamma} is outside [0, 1] (Eq. 2 blends γ·x0 + (1 − γ)·d0)")
        weights = {"λ_MAE": self.lambda_mae, "λ_GM": self.lambda_gm, "λ_k": self.lambda_k}
        out += [f"{k} = {v} must be a number ≥ 0" for k, v in weights.items() if not number(v) or v < 0]
        if all(number(v) and v >= 0 for v in weights.values()) and \
                self.lambda_mae + self.lambda_gm + (self.lambda_k if self.trajectory else 0) == 0:
            out.append("every loss weight is 0: nothing to train")
        if not whole(self.steps) or not 1 <= self.steps <= MAX_STEPS:
            out.append(f"steps = {self.steps}: give a whole number from 1 to {MAX_STEPS}")
        if not whole(self.seed) or self.seed < 0:
            out.append(f"seed = {self.seed}: give a whole number ≥ 0")
        if self.trajectory_target not in TRAJECTORY_TARGETS:
            out.append(f"trajectory target {self.trajectory_target!r}: one of {TRAJECTORY_TARGETS}")
        if self.teacher_supervision not in TEACHER_MODES:
            out.append(f"teacher supervision {self.teacher_supervision!r}: one of {TEACHER_MODES}")
        return out

    def canonical(self) -> "LabSettings":
        """The same run spelt one way: floats rounded, and knobs the objective ignores at their
        defaults (γ without the blend target, γ/λ_k/target without L_k; λ_k = 0 is no L_k)."""
        s = replace(self, gamma=round(float(self.gamma), 4), lambda_mae=round(float(self.lambda_mae), 4),
                    lambda_gm=round(float(self.lambda_gm), 4), lambda_k=round(float(self.lambda_k), 4),
                    trajectory=bool(self.trajectory) and self.lambda_k != 0)
        if not s.trajectory:
            return replace(s, gamma=_PAPER.gamma, lambda_k=_PAPER.lambda_k, trajectory_target=_PAPER.trajectory_target)
        if s.trajectory_target == "image":
            return replace(s, gamma=_PAPER.gamma)
        return s

    @property
    def slug(self) -> str:
        """The run's folder name and cache key: every setting that changes training, spelt out."""
        s = self.canonical()
        if not s.trajectory:
            traj = "no-traj"
        else:
            traj = f"k{s.lambda_k:g}-" + ("image" if s.trajectory_target == "image" else f"blend-g{s.gamma:g}")
        return f"lab_mae{s.lambda_mae:g}_gm{s.lambda_gm:g}_{traj}_teacher-{s.teacher_supervision}_{s.steps}steps_seed{s.seed}"

    @property
    def label(self) -> str:
        s = self.canonical()
        if not s.trajectory:
            traj = "no L_k"
        elif s.trajectory_target == "image":
            traj = f"λ_k {s.lambda_k:g} → image (γ = 1)"
        else:
            traj = f"λ_k {s.lambda_k:g}, γ {s.gamma:g}"
        teacher = {"d_minus1": "teacher at d₋₁", "d0": "teacher at d0", "none": "no teacher"}[s.teacher_supervision]
        return f"lab: λ_MAE {s.lambda_mae:g}, λ_GM {s.lambda_gm:g}, {traj}, {teacher}; {s.steps} steps, seed {s.seed}"

    def overrides(self) -> dict:
        """Config overrides of the full method (the steps go to ``train_variant`` apart)."""
        s = self.canonical()
        loss = {f"loss.{f.name}": getattr(s, f.name) for f in fields(s) if f.name not in ("steps", "seed")}
        return {**loss, "train.seed": s.seed, "train.log_every": 1}  # every step: the live bar and curve


def full_method_dir(out: str | os.PathLike = "outputs") -> Path:
    """OUT/runs/fiffdepth when 03_train has finished it, else the shipped ``weights/fiffdepth``."""
    from .weights import WEIGHTS_DIR

    run = stages.layout(out).runs / FULL
    return run if (run / "summary.json").is_file() else WEIGHTS_DIR / FULL


def prepare_inputs(out: str | os.PathLike = "outputs", progress: bool = True, **data) -> None:
    """OUT's data and teacher pseudo-labels, made only when missing (``data``: ``stages.make_data``
    settings, e.g. ``n_synth``). Existing data are kept whatever settings made them."""
    L = stages.layout(out)
    if not all(p.is_dir() for p in (L.synth, L.eval, L.eval_real, L.real)):
        stages.make_data(out, progress=progress, **data)
    stages.make_pseudo_labels(out, progress=progress)  # resumable: finished labels are skipped


class Lab:
    """Lab runs under OUT/lab: train (cached by settings), score and predict. Methods are named
    ``MEAN_LAYOUT``, ``FULL`` or a run's slug. One model job at a time (a lock), so a widget's
    trainer thread and the notebook can share it."""

    def __init__(self, out: str | os.PathLike = "outputs", max_images: int | None = None, n_show: int = 3,
                 device: str = "cpu"):
        L = stages.layout(out)
        missing = [str(p) for p in (L.synth, L.eval, L.real, L.pseudo) if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} missing: run notebooks 00_data and 02_teacher_pseudo_labels, "
                                    f"or fiffdepth.lab.prepare_inputs({str(out)!r})")
        self.out, self.max_images, self.n_show, self.device = Path(out), max_images, n_show, device
        self.root = stages.link_inputs(self.out / "lab", self.out)
        self.L = stages.layout(self.root)
        self.full_dir = full_method_dir(out)
        link = self.L.runs / FULL
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != self.full_dir.resolve():
            link.unlink()  # 03_train has finished since: compare with its run
        if not link.exists():
            link.symlink_to(self.full_dir.resolve(), target_is_directory=True)
        self._lock = threading.RLock()
        self._images = None
        self._preds: dict[str, tuple[list, list | None]] = {}

    # -- runs --------------------------------------------------------------------------------
    def run_dir(self, settings: LabSettings) -> Path:
        return self.L.runs / settings.slug

    def is_trained(self, settings: LabSettings) -> bool:
        return (self.run_dir(settings) / "summary.json").is_file()

    def runs(self) -> list[LabSettings]:
        """The finished lab runs, oldest first."""
        done = [p.parent for p in self.L.runs.glob(f"*/{SETTINGS_FILE}") if (p.parent / "summary.json").is_file()]
        return [LabSettings(**json.loads((d / SETTINGS_FILE).read_text()))
                for d in sorted(done, key=lambda d: (d / "summary.json").stat().st_mtime)]

    def train(self, settings: LabSettings, on_log=None) -> dict:
        """Fine-tune from the generator prior with these settings; a finished run with the same
        settings is returned as it is. ``on_log(record)``: each losses.jsonl record (every step)."""
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        s = settings.canonical()
        # OUT's data by their own absolute paths, as make reproduce names them: the latent cache's
        # key holds the paths, so a run finds the caches 03_train built
        data = stages.stage_config(self.out.resolve()).data
        inputs = {"data.synthetic": data.synthetic, "data.real": data.real, "data.pseudo_labels": data.pseudo_labels}
        with self._lock:
            summary = stages.train_variant(self.root, s.slug, steps=s.steps, overrides={**s.overrides(), **inputs},
                                           progress=False, on_log=on_log)
            write_json(self.run_dir(s) / SETTINGS_FILE, asdict(s))
        return summary

    # -- comparison --------------------------------------------------------------------------
    def methods(self) -> list[str]:
        return [MEAN_LAYOUT, FULL, *[s.slug for s in self.runs()]]

    def label(self, method: str) -> str:
        if method == FULL:
            from .weights import WEIGHTS_DIR

            steps = (stages._read_json(self.full_dir / "summary.json") or {}).get("steps", "?")
            where = "shipped weights/fiffdepth" if self.full_dir == WEIGHTS_DIR / FULL else str(self.full_dir)
            return f"FiffDepth, full method ({where}, {steps} steps)"
        for s in self.runs():
            if s.slug == method:
                return s.label
        return stages.label_of(method)

    def compare(self, highlight: str | None = None) -> dict:
        """Scores ×100 of the mean layout, the full method and every finished lab run on the held-out
        scenes of both domains (``stages.evaluate_methods``; scores are cached per model).
        Returns ``{"rows": {label: metrics}, "columns", "markdown", "html"}``."""
        methods = self.methods()
        with self._lock:
            res = stages.evaluate_methods(self.root, methods[1:], max_images=self.max_images, device=self.device,
                                          name=None, progress=False)
        names = {stages.label_of(m): m for m in methods}
        rows = {self.label(names[k]): v for k, v in res["rows"].items()}
        new = self.label(highlight) if highlight else None
        return {"rows": rows, "columns": res["columns"], "markdown": stages._methods_table(rows, res["columns"]),
                "html": comparison_html(rows, res["columns"], new)}

    def images(self) -> list:
        """The explorer's images: the first ``n_show`` held-out scenes of each domain, (H, W, 3) in [0, 1]."""
        if self._images is None:
            from .data.base import usable_items
            from .data.synthetic import SyntheticDepthDataset

            sets = [SyntheticDepthDataset(p) for p in (self.L.eval, self.L.eval_real) if p.is_dir()]
            self._images = [it["image"] for ds in sets for it in usable_items(ds, self.n_show)]
        return [im.permute(1, 2, 0).numpy() for im in self._images]

    def predictions(self, method: str) -> tuple[list, list | None]:
        """(d0 maps, d₋₁ maps or None for the mean layout) on ``images()``, computed once per method."""
        if method not in self._preds:
            self.images()
            with self._lock:
                if method == MEAN_LAYOUT:
                    from .evaluate import predict_depths

                    self._preds[method] = (predict_depths(stages.predictor_for(self.root, method), self._images), None)
                else:
                    from .pipeline import FiffDepthPipeline

                    from .pipeline import depth_maps

                    out = FiffDepthPipeline.from_pretrained(self.L.runs / method, device=self.device)(
                        self._images, return_extended=True)
                    self._preds[method] = (list(depth_maps(out.prediction)), list(depth_maps(out.prediction_extended)))
        return self._preds[method]


def comparison_html(rows: dict, columns: list, highlight: str | None = None) -> str:
    """``rows``/``columns`` of ``stages.evaluate_methods`` as an HTML table; the ``highlight`` row bold."""
    cell = "padding:2px 6px;border-bottom:1px solid #ddd"
    head = "".join(f'<th style="{cell};text-align:right">{html.escape(h)}</th>' for _, h, _ in columns)
    body = []
    for label, r in rows.items():
        style = ' class="new" style="font-weight:bold;background:#fff3c4"' if label == highlight else ""
        cells = "".join(f'<td style="{cell};text-align:right">{stages._cell(r.get(k), d)}</td>' for k, _, d in columns)
        body.append(f'<tr{style}><td style="{cell}">{html.escape(label)}</td>{cells}</tr>')
    return (f'<table class="fiffdepth-lab-table" style="border-collapse:collapse;font-size:12px">'
            f'<thead><tr><th style="{cell};text-align:left">Method</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _png(fig) -> bytes:
    return plots.figure_png(fig)


def _knob(W, description: str, value: float, hi: float):
    """(number box, slider over [0, hi]): moving the slider sets the box; typing in the box moves
    the slider as far as its range goes, and the box keeps what was typed."""
    box = W.FloatText(value=value, description=description, style={"description_width": "110px"},
                      layout=W.Layout(width="200px"))
    slider = W.FloatSlider(value=min(max(value, 0.0), hi), min=0.0, max=hi, step=0.05, readout=False,
                           layout=W.Layout(width="180px"))
    from_box = []

    def box_moved(change):
        from_box.append(True)
        try:
            slider.value = min(max(change.new, 0.0), hi)
        finally:
            from_box.pop()

    def slider_moved(change):
        if not from_box:
            box.value = round(change.new, 4)

    box.observe(box_moved, names="value")
    slider.observe(slider_moved, names="value")
    return box, slider


class LabWidget:
    """The lab as ipywidgets: controls and a Train button; a trainer thread with a live progress bar
    and loss curves per term; the comparison table, the split-view explorer and the d0 / d₋₁ maps of
    the selected run. Display it as a cell's last expression."""

    def __init__(self, lab: Lab, settings: LabSettings | None = None, redraw_every: float = 3.0):
        import ipywidgets as W

        self.lab, self.redraw_every = lab, redraw_every
        s = settings or LabSettings()
        wide = {"style": {"description_width": "110px"}, "layout": W.Layout(width="380px")}
        # Each weight is a number box (what trains, any value: a bad one is refused with a message)
        # driven by a slider over the useful range.
        self.sliders = {}
        self.controls = {}
        for name, text, hi in (("gamma", "γ (Eq. 2)", 1.0), ("lambda_mae", "λ_MAE", 2.0), ("lambda_gm", "λ_GM", 2.0),
                               ("lambda_k", "λ_k", 1.0)):
            self.controls[name], self.sliders[name] = _knob(W, text, getattr(s, name), hi)
        self.controls.update({
            "trajectory": W.Checkbox(value=s.trajectory, description="trajectory term L_k (Eq. 3)", indent=False),
            "trajectory_target": W.Dropdown(options=[("blend b0 (Eq. 2)", "blend"), ("image latent (γ = 1)", "image")],
                                            value=s.trajectory_target, description="L_k target", **wide),
            "teacher_supervision": W.Dropdown(options=[("d₋₁ (Eq. 4)", "d_minus1"), ("d0", "d0"), ("none", "none")],
                                              value=s.teacher_supervision, description="teacher at", **wide),
            "steps": W.IntText(value=s.steps, description="steps", **wide),
            "seed": W.IntText(value=s.seed, description="seed", **wide),
        })
        self.train_button = W.Button(description="Train", button_style="primary", icon="play",
                                     tooltip="fine-tune from the shipped generator prior with these settings")
        self.message = W.HTML()
        self.progress = W.IntProgress(value=0, min=0, max=max(1, s.steps), description="idle",
                                      layout=W.Layout(width="440px"))
        self.status = W.HTML()
        self.losses = W.Image(format="png", layout=W.Layout(display="none", max_width="780px"))
        self.table = W.HTML("<i>scoring the mean layout and the full method…</i>")
        self.image = W.IntSlider(0, 0, max(0, 2 * lab.n_show - 1), description="image")
        self.left = W.Dropdown(description="left", layout=W.Layout(width="420px"))
        self.right = W.Dropdown(description="right", layout=W.Layout(width="420px"))
        self.cmap = W.Dropdown(options=["Spectral", "viridis", "magma", "gray"], value="Spectral", description="colormap")
        self.split = W.FloatSlider(0.5, min=0.0, max=1.0, step=0.02, description="split")
        self.view = W.Image(format="png", layout=W.Layout(display="none"))
        self.run = W.Dropdown(description="run", layout=W.Layout(width="420px"))
        self.maps = W.Image(format="png", layout=W.Layout(display="none"))
        self.train_button.on_click(self.train)
        for c in (self.controls["trajectory"], self.controls["trajectory_target"]):
            c.observe(self._enable, names="value")
        for c in (self.image, self.left, self.right, self.cmap, self.split):
            c.observe(lambda _: self._draw_explorer(), names="value")
        for c in (self.image, self.run, self.cmap):
            c.observe(lambda _: self._draw_maps(), names="value")
        self._enable()
        if s.problems():  # starting values from the notebook's parameters
            self._say("These starting values cannot train: " + "; ".join(s.problems()), "error")
        rows = [W.HBox([c, self.sliders[k]]) if k in self.sliders else c for k, c in self.controls.items()]
        box = W.VBox([W.HTML("<b>Settings</b> (Eq. 7; defaults = the paper's)"), *rows, self.train_button, self.message],
                     layout=W.Layout(min_width="400px"))
        live = W.VBox([W.HTML("<b>Training</b>"), self.progress, self.status, self.losses])
        explorer = W.VBox([W.HTML("<b>Explorer</b>: left | right of the split"), self.image, self.left, self.right,
                           self.cmap, self.split, self.view])
        maps = W.VBox([W.HTML("<b>d0 and d₋₁</b> of the selected run, same image"), self.run, self.maps])
        self.widget = W.VBox([W.HBox([box, live]),
                              W.HTML("<b>Comparison</b>: held-out scenes of both embedded domains, ×100"), self.table,
                              W.HBox([explorer, maps])])
        self.widget.add_class("fiffdepth-lab")
        self._training: LabSettings | None = None
        self._rows: list[dict] = []
        self._next_draw = 0.0
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name="fiffdepth-lab").start()
        self._jobs.put(self._refresh)  # score the baselines and earlier runs without blocking the cell

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- controls ---------------------------------------------------------------------------
    def settings(self) -> LabSettings:
        return LabSettings(**{k: c.value for k, c in self.controls.items()})

    def _enable(self, _=None):
        """γ, λ_k and the target only matter with L_k on (γ only with the blend target)."""
        traj = self.controls["trajectory"].value
        off = {"lambda_k": not traj, "trajectory_target": not traj,
               "gamma": not traj or self.controls["trajectory_target"].value == "image"}
        for name, disabled in off.items():
            self.controls[name].disabled = disabled
            if name in self.sliders:
                self.sliders[name].disabled = disabled

    def _say(self, text: str, kind: str = "ok"):
        colour = {"ok": "#1a7f37", "warn": "#9a6700", "error": "#cf222e"}[kind]
        self.message.value = f'<span class="lab-message lab-{kind}" style="color:{colour}">{html.escape(text)}</span>'

    # -- training ---------------------------------------------------------------------------
    def train(self, _button=None) -> bool:
        """The Train button: refuse bad values or a second run while one trains; else queue this one."""
        s = self.settings()
        problems = s.problems()
        if problems:
            self._say("Refused: " + "; ".join(problems), "error")
            return False
        s = s.canonical()
        if self._training is not None:
            self._say(f"Busy training ({self._training.label}); press Train again when it has finished.", "warn")
            return False
        self._training = s
        self._say(("Cached: " if self.lab.is_trained(s) else "Queued: ") + s.label, "ok")
        self._jobs.put(lambda: self._train_job(s))
        return True

    def _train_job(self, s: LabSettings):
        cached = self.lab.is_trained(s)
        self._rows, self._next_draw = [], 0.0
        self.progress.max, self.progress.value = s.steps, 0
        self.progress.description, self.progress.bar_style = "training", ""
        self.status.value = "cached run: no training" if cached else "latent caches and model (first run: longer)…"
        t0 = time.time()
        try:
            summary = self.lab.train(s, on_log=self._on_log)
        finally:
            self._training = None
        trained = time.time() - t0
        self.progress.value, self.progress.description, self.progress.bar_style = s.steps, "scoring", "info"
        if cached:
            self._rows = plots.read_losses(self.lab.run_dir(s))
        self._draw_losses()
        self.status.value = "scoring on the held-out scenes…"
        self._refresh(new=s.slug)
        self.progress.description, self.progress.bar_style = "done", "success"
        loss = (summary.get("final") or {}).get("loss", float("nan"))
        loop = summary.get("seconds") or 0.0
        what = ("cached, not retrained" if cached else
                f"{s.steps} steps in {loop:.0f} s + {trained - loop:.0f} s model and latent caches")
        self.status.value = f"{what}; final loss {loss:.4f}; ready in {time.time() - t0:.0f} s"
        self._say(f"Done: {s.label} ({what}).", "ok")

    def _on_log(self, record: dict):
        self._rows.append(record)
        step = int(record.get("step", 0))
        self.progress.value = step
        if "loss" in record:
            self.status.value = f"step {step} / {self.progress.max} · loss {record['loss']:.4f}"
        if time.time() > self._next_draw:
            self._draw_losses()

    def _draw_losses(self):
        """The loss per term; drawing runs in the trainer's thread, so the next one waits ten
        times as long as this one took (at most a tenth of the time goes to the plot)."""
        terms = [t for t in ("loss", *LOSS_TERMS, "heldout_d0_mae") if any(r.get(t) for r in self._rows)]
        if not terms:
            return
        t0 = time.time()
        with _FIGURES:
            self.losses.value = _png(plots.plot_terms(self._rows, terms))
        self.losses.layout.display = None
        self._next_draw = time.time() + max(self.redraw_every, 10 * (time.time() - t0))

    def _work(self):
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception as err:  # shown in the widget: the thread must live on
                self._training = None
                self.progress.bar_style, self.progress.description = "danger", "failed"
                self._say(f"{type(err).__name__}: {err}", "error")
                self.status.value = f"<pre style='font-size:10px'>{html.escape(traceback.format_exc()[-1500:])}</pre>"
            finally:
                self._jobs.task_done()

    def wait(self, timeout: float = 600.0) -> bool:
        """Block until every queued job (training, scoring) has finished; False on timeout."""
        end = time.time() + timeout
        while self._jobs.unfinished_tasks and time.time() < end:
            time.sleep(0.1)
        return not self._jobs.unfinished_tasks

    # -- comparison -------------------------------------------------------------------------
    def _refresh(self, new: str | None = None):
        table = self.lab.compare(highlight=new)
        methods = self.lab.methods()
        for m in methods:
            self.lab.predictions(m)
        self.image.max = len(self.lab.images()) - 1
        options = [(self.lab.label(m), m) for m in methods]
        self._quiet = True
        try:
            left, right, run = self.left.value, self.right.value, self.run.value
            self.left.options, self.right.options = options, options
            self.run.options = [o for o in options if o[1] != MEAN_LAYOUT]
            self.left.value = left if left in methods and not new else FULL
            self.right.value = new or (right if right in methods else methods[-1])
            self.run.value = new or (run if run in methods else methods[-1])
        finally:
            self._quiet = False
        self.table.value = table["html"]
        self._draw_explorer()
        self._draw_maps()

    _quiet = False

    def _draw_explorer(self):
        if self._quiet or self.left.value is None or self.right.value is None:
            return
        from .explorer import split_figure

        i, a, b = self.image.value, self.left.value, self.right.value
        images = self.lab.images()
        with _FIGURES:
            fig = split_figure(images[i], self.lab.predictions(a)[0][i], self.lab.predictions(b)[0][i],
                               "left | right", self.cmap.value, self.split.value)
            self.view.value = _png(fig)
        self.view.layout.display = None

    def _draw_maps(self):
        if self._quiet or self.run.value is None:
            return
        i, m = self.image.value, self.run.value
        d0, dm1 = self.lab.predictions(m)
        with _FIGURES:
            fig = plots.comparison_grid([self.lab.images()[i]], {"d0 (Eq. 1)": [d0[i]], "d₋₁ (Eq. 4)": [dm1[i]]},
                                        cmap=self.cmap.value, cell=2.2)
            self.maps.value = _png(fig)
        self.maps.layout.display = None
