"""Several training runs (or scorings) at once on a CPU: one process per run, one thread per process.

On a small CPU, one run with two threads trains slower than two one-thread runs side by side
(measured on the project's 2-core AMD EPYC: 1.12 it/s for one run on 2 threads, 2 × 0.81 it/s
for two runs on 1 thread each; README, Measured, Runs side by side). The backward pass's sums also depend on the
thread count, so a run's bytes depend on how many threads trained it. Pinning every pooled run
to ``threads`` threads (1 by default) makes its bytes the same whatever the worker count or the
machine's core count, and lets ``workers`` runs share the cores.

``run_jobs`` is what ``fiffdepth.stages.train_variants`` and ``seed_spread`` call. The parent
builds the latent caches first (so two children never build the same cache), then follows the
children through their ``losses.jsonl`` files: one progress bar over all steps, and ``on_log``
callbacks (e.g. a notebook's live loss plot) fed as records appear. Where an accelerator is
present the runs go one after another in this process instead: a GPU run does not gain from it.
``in_processes`` is the same for any function: ``stages.evaluate_methods`` scores methods with it.
``one_thread_lanes`` does it with threads inside one process (the latent cache's encoder, the teacher's
pseudo-labels).
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Job:
    """One training run: ``stages.train_variant(out, variant, steps, preset, overrides)``."""

    out: str
    variant: str
    steps: int | None = None
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        seed = self.overrides.get("train.seed")
        return self.variant if seed is None else f"{self.variant} (seed {seed})"


def default_workers(n_jobs: int, threads: int = 1) -> int:
    """As many one-run workers as the cores this process may use hold (at least 1, at most ``n_jobs``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(n_jobs, cores // max(1, threads)))


def accelerator_present() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def _child(job: Job, threads: int) -> dict:
    """A pooled run, in its own process: ``threads`` torch threads, no progress bar."""
    import torch

    torch.set_num_threads(threads)
    from .stages import train_variant

    summary = train_variant(job.out, job.variant, steps=job.steps, preset=job.preset, overrides=job.overrides,
                            progress=False)
    return {**summary, "threads": threads}


@contextlib.contextmanager
def one_thread_lanes(device):
    """An executor whose calls run side by side, each on one torch thread. On a CPU: as many
    Python threads as torch had intra-op threads (torch releases the GIL inside its kernels),
    with torch set to one thread meanwhile. On the project's 2-core machine two one-thread
    lanes get more out of the cores than one two-thread call, as two one-thread training runs
    do (README, Measured, Runs side by side). Every call runs on one thread, so its bytes are
    the one-thread bytes whatever the machine's core count (the teacher's sums can depend on the
    thread count: make reproduce's last, 8-image batch of pseudo-labels did). Elsewhere (an
    accelerator, one thread), calls run in the caller at ``submit``."""
    import torch

    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads < 2:
        class Inline:  # the executor's interface, run at submit
            @staticmethod
            def submit(fn, *args):
                f = Future()
                try:
                    f.set_result(fn(*args))
                except BaseException as err:  # noqa: BLE001 - raised by result(), as from a thread
                    f.set_exception(err)
                return f

        yield Inline()
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lane") as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _raise_first_failure(errors: list[tuple[str, BaseException]], what: str, others_noun: str) -> None:
    """Raise the first of the pooled calls' ``(name, error)`` failures, naming the others, if any."""
    if not errors:
        return
    name, err = errors[0]
    others = f" ({len(errors) - 1} {others_noun} failed too: {', '.join(n for n, _ in errors[1:])})" if errors[1:] else ""
    raise RuntimeError(f"{what} {name!r} failed: {err}{others}") from err


def _call_child(fn: Callable, args: tuple, threads: int):
    """``fn(*args)`` in a pooled process with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


def in_processes(fn: Callable, args_list: list[tuple], workers: int | None = None, threads: int = 1,
                 names: list[str] | None = None, desc: str = "run", progress: bool = True) -> list:
    """``[fn(*args) for args in args_list]``, in ``workers`` (default ``default_workers``) spawned
    processes with ``threads`` torch threads, each process taking the next call when it is free
    (the imports, about 11 s on the project's slow CPU, are paid once per process); ``fn`` must be importable
    (a module-level function). A failed call does not stop the others; once all have ended, the
    first failure is raised, named by ``names``."""
    import multiprocessing

    from tqdm.auto import tqdm

    names = names or [str(i) for i in range(len(args_list))]
    workers = workers or default_workers(len(args_list), threads)
    results, errors = [None] * len(args_list), []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, \
            tqdm(total=len(args_list), desc=f"{desc} {len(args_list)}, {workers} at a time, {threads} thread(s) each",
                 disable=not progress) as bar:
        futures = {pool.submit(_call_child, fn, args, threads): i for i, args in enumerate(args_list)}
        for f in as_completed(futures):
            i = futures[f]
            try:
                results[i] = f.result()
            except BaseException as err:  # noqa: BLE001 - reported below, after the others end
                errors.append((names[i], err))
            bar.update(1)
    _raise_first_failure(errors, desc, "other(s)")
    return results


def _log_records(path: Path) -> list[dict]:
    """The complete records of a ``losses.jsonl`` being written (a half-written last line is skipped)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def run_jobs(jobs: list[Job], workers: int | None = None, threads: int = 1, progress: bool = True,
             on_log: dict[str, Callable[[dict], None]] | None = None, prepare: Callable[[Job], None] | None = None,
             log_path: Callable[[Job], Path] | None = None, poll_s: float = 2.0) -> dict[str, dict]:
    """Train ``jobs`` (finished ones are reused by ``train_variant`` itself); returns ``{job.name: summary}``
    in the order of ``jobs``.

    On a CPU-only machine the runs train in ``workers`` (default ``default_workers``) spawned
    processes with ``threads`` torch threads, in the order given, each process taking the next
    run when it is free (a run seeds everything it draws, so its bytes do not depend on what the
    process ran before: ``tests/test_pool.py``). ``prepare(job)`` runs
    in this process before any child starts (the latent caches). ``on_log[job.name]`` receives
    that run's ``losses.jsonl`` records as they appear (``log_path(job)`` names the file).
    With a GPU (or MPS) present, the runs train one after another in this process.
    A failed run does not stop the others; once all have ended, the first failure is raised.
    """
    from .stages import train_variant

    on_log = on_log or {}
    if accelerator_present():
        return {j.name: train_variant(j.out, j.variant, steps=j.steps, preset=j.preset, overrides=j.overrides,
                                      progress=progress, on_log=on_log.get(j.name)) for j in jobs}
    if prepare is not None:
        for j in jobs:
            prepare(j)
    import multiprocessing

    from tqdm.auto import tqdm

    workers = workers or default_workers(len(jobs), threads)
    total = sum(j.steps or 0 for j in jobs)
    bar = tqdm(total=total or None, desc=f"train {len(jobs)} run(s), {workers} at a time, {threads} thread(s) each",
               unit="step", disable=not progress)
    seen = {j.name: 0 for j in jobs}
    last_step = {j.name: 0 for j in jobs}

    def poll(done: set[str]):
        for j in jobs:
            if log_path is None or (j.name not in on_log and not progress):
                continue
            rows = _log_records(log_path(j))
            if j.name in on_log:
                for r in rows[seen[j.name]:]:
                    on_log[j.name](r)
                seen[j.name] = len(rows)
            steps = [r["step"] for r in rows if isinstance(r.get("step"), int)]
            last_step[j.name] = (j.steps or 0) if j.name in done else max(steps, default=0)
        bar.n = min(total, sum(last_step.values())) if total else 0
        bar.refresh()

    results: dict[str, dict] = {}
    errors: list[tuple[str, BaseException]] = []
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or MKL state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_child, j, threads): j for j in jobs}
        pending = set(futures)
        done_names: set[str] = set()
        while pending:
            finished, pending = wait(pending, timeout=poll_s, return_when=FIRST_COMPLETED)
            for f in finished:
                j = futures[f]
                done_names.add(j.name)
                try:
                    results[j.name] = f.result()
                except BaseException as err:  # noqa: BLE001 - reported below, after the others end
                    errors.append((j.name, err))
            poll(done_names)
    bar.close()
    _raise_first_failure(errors, "training run", "other run(s)")
    return {j.name: results[j.name] for j in jobs}
