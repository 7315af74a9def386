"""Build a latent cache of a few hundred embedded scenes three ways and print the time and a hash
of the shards: one encoder on the process's threads (the code before ``75aa5c9``), two one-thread
lanes (``pool.one_thread_lanes``, what ``cache.build_latent_cache`` does now on a CPU with 2+
threads), and one thread. Same hash = same bytes.

    python benchmarks/cache_lanes.py OUT   # OUT: a make reproduce output folder (OUT/data/synth)
"""

import argparse
import contextlib
import hashlib
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fiffdepth import cache, pool, stages
from fiffdepth.data.base import usable_items
from fiffdepth.train import _augment, _load_model, _synthetic_dataset


def build(cfg, vae, n_scenes: int, threads: int, one_encoder: bool) -> tuple[float, str]:
    d = _synthetic_dataset(cfg.data.synthetic[0])

    def items():
        for k, item in enumerate(itertools.islice(usable_items(d, num_workers=0), n_scenes)):
            for v in range(2):
                yield _augment(item, cfg.data.resolution, 0, k, v)

    @contextlib.contextmanager
    def inline(device):  # the lanes' fallback: every batch in the caller, on its threads
        with pool.one_thread_lanes(torch.device("meta")) as p:
            yield p

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    root = Path(tempfile.mkdtemp(prefix="cache_lanes_"))
    try:
        with contextlib.ExitStack() as stack:
            if one_encoder:
                orig = cache.one_thread_lanes
                cache.one_thread_lanes = inline
                stack.callback(setattr, cache, "one_thread_lanes", orig)
            t0 = time.perf_counter()
            cache.build_latent_cache(root, "k", items, 2 * n_scenes, vae, progress=False)
            seconds = time.perf_counter() - t0
        h = hashlib.sha256()
        for f in sorted((root / "k").glob("*.safetensors")):
            h.update(f.read_bytes())
        return seconds, h.hexdigest()[:16]
    finally:
        shutil.rmtree(root, ignore_errors=True)
        torch.set_num_threads(before)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="a make reproduce output folder")
    p.add_argument("--scenes", type=int, default=160)
    args = p.parse_args()
    cfg = stages.stage_config(args.out, "tiny", None, "fiffdepth", 250)
    vae = _load_model(cfg).vae
    for name, threads, one in (("one encoder, 2 threads", 2, True), ("two one-thread lanes", 2, False),
                               ("one thread", 1, False)):
        seconds, digest = build(cfg, vae, args.scenes, threads, one)
        print(f"{name:>24}: {seconds:6.1f} s  shards sha256 {digest}")


if __name__ == "__main__":
    main()
