"""Marigold-style baseline: widened UNet keeps the generator's response; train → save → load → predict."""

import numpy as np
import torch

from fiffdepth.config import get_config
from fiffdepth.marigold import load_marigold, train_marigold, widen_unet
from fiffdepth.model import FiffDepthModel


def test_widened_unet_keeps_pretrained_response(tiny_cfg):
    model = FiffDepthModel.from_config(tiny_cfg.model).eval()
    wide = widen_unet(model.unet).eval()
    assert wide.config.in_channels == 8
    x = torch.randn(1, 4, 16, 16)
    emb = model.empty_text_embedding
    with torch.no_grad():
        a = model.unet(x, 500, encoder_hidden_states=emb).sample
        b = wide(torch.cat([x, x], 1), 500, encoder_hidden_states=emb).sample
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_train_save_load_predict(train_data, tmp_path):
    cfg = get_config("tiny", {"data.synthetic": [f"embedded:{train_data / 'synth'}"], "data.resolution": 64,
                              "model.pretrained": "", "train.heldout": 8, "train.batch_size": 4})
    summary = train_marigold(cfg, tmp_path / "mg", steps=2, cache_root=tmp_path / "cache", inference_steps=2,
                             progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert summary["mixed_precision"] == cfg.train.mixed_precision == "no"  # through the Accelerator (issue 16)
    pipe = load_marigold(tmp_path / "mg")
    img = torch.rand(1, 3, 64, 64)
    run = lambda: pipe(img, num_inference_steps=2, ensemble_size=1, processing_resolution=64,  # noqa: E731
                       generator=torch.Generator().manual_seed(0), output_type="np").prediction
    a, b = run(), run()
    assert a.shape[1:3] == (64, 64) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
