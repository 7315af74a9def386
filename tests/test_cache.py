import json
import os
import subprocess
import sys

KEY_SCRIPT = """
import json, sys
from diffusers import AutoencoderKL
import torch
from fiffdepth.cache import cache_key
from fiffdepth.config import TINY_VAE
torch.manual_seed(0)
vae = AutoencoderKL(**TINY_VAE) if sys.argv[1] == "built" else AutoencoderKL.from_pretrained(sys.argv[1])
print(cache_key(vae, 128, {"synthetic": [["embedded:x", "fingerprint"]]}))
"""


def test_cache_key_is_stable_across_processes_and_equivalent_configs(tmp_path):
    """Issue 15: the latent-cache key must not change from process to process (diffusers'
    private config entries such as the set-ordered ``_use_default_values`` are not hashed), nor
    between a VAE built from config kwargs and the same VAE saved and reloaded."""
    import torch
    from diffusers import AutoencoderKL

    from fiffdepth.config import TINY_VAE

    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "vae")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="random")

    def key(source):
        r = subprocess.run([sys.executable, "-c", KEY_SCRIPT, source], capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]

    keys = {key("built"), key("built"), key(str(tmp_path / "vae")), key(str(tmp_path / "vae"))}
    assert len(keys) == 1, keys
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert "_diffusers_version" in config  # private entries are there, and ignored
