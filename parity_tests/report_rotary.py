"""Print the measured max |diff| of the rotary generation's families, per twin and direction:
the source's files read by both twins (pooled output and tokens against the source), and our files
read back by the source's library (its output against the source's own).

    python -m parity_tests.report_rotary

The figures behind docs/rotary.md's table; tests/test_rotary_families.py asserts the bounds (2e-5).
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import warnings

import numpy as np
import timm
import torch
import transformers

import vit_torch
from tests.test_hub_formats import _flax, _perturb, _pixels, _timm_folder, _timm_outputs, _timm_reads, _torch
from tests.test_rotary_families import EVA_CASES, _hf_dinov3
from vit_common import checkpoints


def _diff(want: dict, got: dict) -> str:
    return ", ".join(f"{np.abs(got[k] - want[k]).max():.1e}" for k in ("pooled", "tokens") if k in want)


def main() -> None:
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for gated in (False, True):
            d = tmp / f"d3{gated}"
            hf = _hf_dinov3(gated, d)
            x = _pixels(32, 48)
            with torch.no_grad():
                ref = hf(pixel_values=x)
            want = {"pooled": ref.pooler_output.numpy(), "tokens": ref.last_hidden_state.numpy()}
            ours = vit_torch.from_pretrained(d / "hf")
            with torch.no_grad():
                got = {"pooled": ours(x, interpolate_pos_encoding=True).numpy(),
                       "tokens": ours.forward_features(x, interpolate_pos_encoding=True).numpy()}
            from vit_flax import from_pretrained as fx_from

            fx, params = fx_from(d / "hf")
            bound = fx.bind({"params": params})
            xf = x.numpy().transpose(0, 2, 3, 1)
            gotf = {"pooled": np.asarray(bound(xf, interpolate_pos_encoding=True)),
                    "tokens": np.asarray(bound.forward_features(xf, interpolate_pos_encoding=True))}
            ck = checkpoints.load_checkpoint(d / "hf")
            checkpoints.save_hf(ck.state, ck.config, d / "back")
            back = transformers.DINOv3ViTModel.from_pretrained(d / "back").eval()
            with torch.no_grad():
                b = back(pixel_values=x).pooler_output.numpy()
            rows.append((f"HF DINOv3ViTModel ({'gated' if gated else 'MLP'}), 32 x 48", _diff(want, got),
                         _diff(want, gotf), f"{np.abs(b - want['pooled']).max():.1e}"))
        for name, kw in EVA_CASES.items():
            d = tmp / name
            model = _timm_folder(name, kw, d / "src")
            h, w = model.patch_embed.img_size
            x = _pixels(h, w)
            want = _timm_outputs(model, x)
            if not model.num_classes:
                want.pop("pooled")
            got, gotf = _torch(vit_torch.from_pretrained(d / "src"), x), _flax(d / "src", x)
            ck = checkpoints.load_checkpoint(d / "src")
            checkpoints.save_timm_hub(ck.state, ck.config, d / "back")
            with torch.no_grad():
                b = (_timm_reads(d / "back")(x) - model(x)).abs().max().item()
            rows.append((f"timm {name}", _diff(want, got), _diff(want, gotf), f"{b:.1e}"))
        torch.manual_seed(0)
        cfg = transformers.Aimv2VisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=28, patch_size=14)
        hf = transformers.Aimv2VisionModel(cfg).eval()
        _perturb(hf, 5)
        hf.save_pretrained(tmp / "aim")
        x = _pixels(28, 28)
        with torch.no_grad():
            ref = hf(pixel_values=x)
        want = {"pooled": ref.pooler_output.numpy(), "tokens": ref.last_hidden_state.numpy()}
        ck = checkpoints.load_checkpoint(tmp / "aim")
        checkpoints.save_hf(ck.state, ck.config, tmp / "aimback")
        with torch.no_grad():
            b = transformers.Aimv2VisionModel.from_pretrained(tmp / "aimback").eval()(pixel_values=x).pooler_output
        rows.append(("HF Aimv2VisionModel (attention-pool head)", _diff(want, _torch(vit_torch.from_pretrained(tmp / "aim"), x)),
                     _diff(want, _flax(tmp / "aim", x)), f"{np.abs(b.numpy() - want['pooled']).max():.1e}"))
    print("| source file | vit_torch (pooled, tokens) | vit_flax (pooled, tokens) | source reads ours back (pooled / output) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(json.dumps({"timm": timm.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
