"""The open-sora-1.2 loop workload in the original PAB code (VideoSys 4cce477 + PyTorch), so that
`pab bench --workload open-sora-1.2` can be compared with it on the same GPU in the same session.

    python3 dev/device/videosys_loop.py VIDEOSYS_DIR [--steps 30] [--no-pab]

VideoSys's own STDiT3 (STDiT3-XL/2: hpcai-tech/OpenSora-STDiT-v3's config, random weights, bf16,
its default attention: no flash-attn) sampled by its own RFLOW.sample at OpenSoraPipeline.generate's
defaults (480p 9:16 = 480x854, 51 frames, fps 24, guidance 7, 300 caption tokens, the model's null
caption), with PAB off and with OpenSoraPABConfig's defaults. At 4cce477 STDiT3.forward drops
all_timesteps on the way to its blocks, which makes the default MLP broadcast fail; it is passed
on here, as in dev/fixtures/make_open_sora_pipeline.py. Time from the first step to the last
after one warm-up forward, synchronised each step (as `pab bench`); peak memory of the loop.
Prints one JSON line. Not part of the product or the tests.
"""
import argparse
import json
import os
import sys
import time
import types

import diffusers.models  # noqa: F401  (before the stubs: diffusers probes for imageio)
import torch

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("videosys")
p.add_argument("--steps", type=int, default=30)
p.add_argument("--no-pab", action="store_true")
args = p.parse_args()


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from videosys_import import use_videosys  # noqa: E402

use_videosys(args.videosys)

import videosys.models.transformers.open_sora_transformer_3d as stdit_module  # noqa: E402
from videosys.core.pab import pab_mgr  # noqa: E402
from videosys.models.transformers.open_sora_transformer_3d import STDiT3, STDiT3Config  # noqa: E402
from videosys.schedulers.scheduling_rflow_open_sora import RFLOW  # noqa: E402

ALL_TIMESTEPS = []
stdit_module.auto_recompute = lambda block, *a: block(*a, ALL_TIMESTEPS[0] if ALL_TIMESTEPS else None)
dtype, device = torch.bfloat16, "cuda"
torch.manual_seed(0)
model = STDiT3(STDiT3Config(depth=28, hidden_size=1152, num_heads=16, caption_channels=4096, model_max_length=300,
                            in_channels=4, pred_sigma=True, qk_norm=True)).to(device, dtype).eval()
for m in model.modules():
    if hasattr(m, "parallel_manager"):
        m.parallel_manager = types.SimpleNamespace(sp_size=1, cp_size=1)


class Timed(torch.nn.Module):
    """The model, each call timed and given all_timesteps for its blocks."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.x_embedder, self.seconds = inner, inner.x_embedder, []

    def forward(self, z, t, **kw):
        ALL_TIMESTEPS[:] = [kw["all_timesteps"]]
        t0 = time.perf_counter()
        out = self.inner(z, t, **kw)
        torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - t0)
        return out




def open_sora_pab():
    """OpenSoraPABConfig()'s values (its module imports the media stack, which the GPU machine lacks)."""
    mlp = {t: {"block": [0, 1, 2, 3, 4], "skip_count": 2} for t in (676, 788, 864)}
    return pab_mgr.PABConfig(spatial_broadcast=True, spatial_threshold=[450, 930], spatial_range=2,
                             temporal_broadcast=True, temporal_threshold=[450, 930], temporal_range=4,
                             cross_broadcast=True, cross_threshold=[450, 930], cross_range=6, mlp_broadcast=True,
                             mlp_spatial_broadcast_config=mlp, mlp_temporal_broadcast_config=dict(mlp))


if not args.no_pab:
    pab_mgr.set_pab_manager(open_sora_pab())
    pab_mgr.update_steps(args.steps)

h, w, frames = 480, 854, 51
model_args = dict(height=torch.tensor([h], device=device, dtype=dtype), width=torch.tensor([w], device=device, dtype=dtype),
                  num_frames=torch.tensor([frames], device=device, dtype=dtype),
                  ar=torch.tensor([h / w], device=device, dtype=dtype), fps=torch.tensor([24.0], device=device, dtype=dtype))
y = torch.randn(1, 1, 300, 4096, device=device, dtype=dtype)
mask = torch.ones(1, 300, dtype=torch.int64, device=device)
z = torch.randn(1, 4, 15, h // 8, w // 8, device=device, dtype=dtype)
timed = Timed(model)
scheduler = RFLOW(use_timestep_transform=True, num_sampling_steps=args.steps, cfg_scale=7.0)
y_null = model.y_embedder.y_embedding[None].repeat(1, 1, 1)[:, None].to(dtype)


def sample():
    return scheduler.sample(timed, z=z.clone(), model_args=dict(model_args, y=y, mask=mask), y_null=y_null,
                            device=device, progress=False, mask=None)


with torch.no_grad():
    one = RFLOW(use_timestep_transform=True, num_sampling_steps=1, cfg_scale=7.0)
    one.sample(timed, z=z.clone(), model_args=dict(model_args, y=y, mask=mask), y_null=y_null, device=device,
               progress=False, mask=None)  # warm-up
    torch.cuda.synchronize()
    if not args.no_pab:
        pab_mgr.set_pab_manager(open_sora_pab())  # fresh counters after the warm-up
        pab_mgr.update_steps(args.steps)
        for m in model.modules():
            for k in ["attn_count", "cross_count", "mlp_count"]:
                if hasattr(m, k):
                    setattr(m, k, 0)
    timed.seconds = []
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sample()
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
print(json.dumps({"workload": "open-sora-1.2", "implementation": "VideoSys 4cce477 + PyTorch " + torch.__version__,
                  "pab": not args.no_pab, "steps": args.steps, "total_s": total, "per_step_s": timed.seconds,
                  "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "gpu": torch.cuda.get_device_name()}))
