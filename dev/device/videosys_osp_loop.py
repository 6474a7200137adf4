"""The open-sora-plan-1.2 loop workload in the original PAB code (VideoSys 4cce477 + PyTorch), so that
`pab bench --workload open-sora-plan-1.2` can be compared with it on the same GPU in the same session.

    python3 dev/device/videosys_osp_loop.py VIDEOSYS_DIR [--steps 100] [--no-pab]

VideoSys's own OpenSoraT2V at LanguageBind/Open-Sora-Plan-v1.2.0/29x480p's architecture (32 layers
of 24 heads of 96, random weights, bf16), driven as OpenSoraPlanPipeline.generate drives it: 29
frames of 480x640 (8 latent frames of 60x80), the CFG pair [negative, prompt] of 512 mT5 tokens
with their masks, the all-ones latent mask generate passes, EulerAncestralDiscreteScheduler's
steps, guidance 7.5; PAB off, and on with OpenSoraPlanV120PABConfig's defaults. Time from the
first step to the last after one warm-up forward (without PAB, so its counters start fresh),
synchronised each step (as `pab bench`); peak memory of the loop. Prints one JSON line. Not part
of the product or the tests.
"""
import argparse
import json
import os
import sys
import time
import types

import diffusers.models  # noqa: F401  (before the stubs: diffusers probes for imageio)
import torch
from diffusers.schedulers import EulerAncestralDiscreteScheduler

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("videosys")
p.add_argument("--steps", type=int, default=100)
p.add_argument("--no-pab", action="store_true")
args = p.parse_args()

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from videosys_import import use_videosys  # noqa: E402

use_videosys(args.videosys)

from videosys.core.pab import pab_mgr  # noqa: E402
from videosys.models.transformers.open_sora_plan_v120_transformer_3d import OpenSoraT2V  # noqa: E402

dtype, device = torch.bfloat16, "cuda"
torch.manual_seed(0)
model = OpenSoraT2V(num_attention_heads=24, attention_head_dim=96, in_channels=4, out_channels=8, num_layers=32,
                    cross_attention_dim=2304, attention_bias=True, sample_size=[60, 80], sample_size_t=8,
                    patch_size=2, patch_size_t=1, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                    caption_channels=4096, use_rope=True).to(device, dtype).eval()
for m in model.modules():
    if hasattr(m, "parallel_manager"):
        m.parallel_manager = types.SimpleNamespace(sp_size=1, cp_size=1, dp_size=1)

scheduler = EulerAncestralDiscreteScheduler()
scheduler.set_timesteps(args.steps, device=device)
timesteps = scheduler.timesteps
z = torch.randn(1, 4, 8, 60, 80, device=device, dtype=dtype) * scheduler.init_noise_sigma
text = torch.randn(2, 1, 512, 4096, device=device, dtype=dtype)  # [negative, prompt], b 1 l d
text_mask = torch.zeros(2, 1, 512, device=device, dtype=torch.int64)
text_mask[0, :, :1] = 1  # the empty negative prompt: </s>
text_mask[1, :, :40] = 1
added = {"resolution": None, "aspect_ratio": None}


def forward(latents, t):
    x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    out = model(x, all_timesteps=timesteps, encoder_hidden_states=text, timestep=t[None].expand(2),
                added_cond_kwargs=added, enable_temporal_attentions=True, attention_mask=torch.ones_like(x)[:, 0],
                encoder_attention_mask=text_mask, return_dict=False)[0]
    uncond, cond = out.chunk(2)
    return (uncond + 7.5 * (cond - uncond)).chunk(2, dim=1)[0]


def v120_pab():
    """OpenSoraPlanV120PABConfig()'s values (its module imports the media stack, which the GPU machine lacks)."""
    return pab_mgr.PABConfig(spatial_broadcast=True, spatial_threshold=[100, 850], spatial_range=2,
                             cross_broadcast=True, cross_threshold=[100, 850], cross_range=6)


seconds = []
with torch.no_grad():
    forward(z, timesteps[0])  # warm-up, PAB off: no counter moves
    torch.cuda.synchronize()
    if not args.no_pab:
        pab_mgr.set_pab_manager(v120_pab())
        pab_mgr.update_steps(args.steps)
    torch.cuda.reset_peak_memory_stats()
    latents = z.clone()
    t0 = time.perf_counter()
    for t in timesteps:
        ts = time.perf_counter()
        latents = scheduler.step(forward(latents, t), t, latents).prev_sample
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - ts)
    total = time.perf_counter() - t0
print(json.dumps({"workload": "open-sora-plan-1.2", "implementation": "VideoSys 4cce477 + PyTorch " + torch.__version__,
                  "pab": not args.no_pab, "steps": args.steps, "total_s": total, "per_step_s": seconds,
                  "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "gpu": torch.cuda.get_device_name()}))
