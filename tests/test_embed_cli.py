"""vit-embed: input order, skipped images reported with exit 1, both frameworks agree, top-k."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import vit_torch
from vit_cli.embed import expand_images
from vit_cli.embed import main as embed_main
from vit_common.config import ViTConfig
from vit_common.preprocessing import preprocess_array

CFG = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                image_size=32, patch_size=8, num_labels=4,
                extra={"id2label": {0: "cat", 1: "dog", 2: "bird", 3: "fish"}})


@pytest.fixture()
def workspace(tmp_path) -> Path:
    torch.manual_seed(0)
    vit_torch.save_pretrained(vit_torch.ViTForImageClassification(CFG).eval(), tmp_path / "model")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i, name in enumerate(["b.png", "a.jpg", "c.png"]):
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), np.uint8)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(rng.integers(0, 256, (40, 40), np.uint8)).save(tmp_path / "gray.png")
    return tmp_path


def test_expand_images_keeps_order(workspace) -> None:
    paths, missing = expand_images([str(workspace / "gray.png"), str(workspace / "imgs"),
                                    str(workspace / "imgs" / "*.png"), str(workspace / "nope.png")])
    names = [Path(p).name for p in paths]
    assert names == ["gray.png", "a.jpg", "b.png", "c.png", "b.png", "c.png"]
    assert missing == [(str(workspace / "nope.png"), "no such file or directory")]


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_embeddings_match_the_model(workspace, capsys, framework: str) -> None:
    out = workspace / f"{framework}.npy"
    code = embed_main([str(workspace / "gray.png"), str(workspace / "imgs"), "--weights",
                       str(workspace / "model"), "-o", str(out), "--framework", framework,
                       "--batch-size", "2", "--top-k", "2", "--quiet"])
    assert code == 0
    emb = np.load(out)
    report = json.loads(out.with_suffix(".json").read_text())
    assert [Path(p).name for p in report["paths"]] == ["gray.png", "a.jpg", "b.png", "c.png"]
    assert emb.shape == (4, 32) and emb.dtype == np.float32 and report["skipped"] == []
    model = vit_torch.from_pretrained(workspace / "model")
    x = np.stack([preprocess_array(p, CFG) for p in report["paths"]]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        want_cls = model.vit(torch.from_numpy(x.copy())).numpy()
        want_logits = model(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(emb, want_cls, atol=1e-5, rtol=0)
    top = report["top_k"][0]["labels"]
    assert [t["label"] for t in top] == [CFG.extra["id2label"][i] for i in np.argsort(-want_logits[0])[:2]]
    assert "gray.png\t" in capsys.readouterr().out


def test_unreadable_images_are_reported_and_skipped(workspace, capsys) -> None:
    out = workspace / "e.npy"
    code = embed_main([str(workspace / "broken.png"), str(workspace / "imgs" / "a.jpg"),
                       str(workspace / "imgs" / "notes.txt"), str(workspace / "missing.png"),
                       "--weights", str(workspace / "model"), "-o", str(out), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    for name in ("broken.png", "notes.txt", "missing.png"):
        assert f"skipping {workspace / name}" in err or f"skipping {workspace / 'imgs' / name}" in err
    report = json.loads(out.with_suffix(".json").read_text())
    assert [Path(p).name for p in report["paths"]] == ["a.jpg"] and np.load(out).shape == (1, 32)
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == ["broken.png", "missing.png", "notes.txt"]


def test_outputs_not_overwritten_and_bad_weights(workspace, capsys) -> None:
    out = workspace / "x.npy"
    out.write_bytes(b"keep")
    args = [str(workspace / "gray.png"), "--weights", str(workspace / "model"), "-o", str(out), "--quiet"]
    assert embed_main(args) == 3 and out.read_bytes() == b"keep"
    assert embed_main(args + ["--force"]) == 0 and np.load(out).shape == (1, 32)
    assert embed_main([str(workspace / "gray.png"), "--weights", str(workspace / "nope"), "-o",
                       str(workspace / "y.npy")]) == 2
    assert "nope" in capsys.readouterr().err and not (workspace / "y.npy").exists()


def test_console_script(workspace) -> None:
    script = Path(sys.executable).parent / "vit-embed"
    out = subprocess.run([str(script), str(workspace / "imgs"), "--weights", str(workspace / "model"),
                          "-o", str(workspace / "s.npy"), "--dtype", "bfloat16"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "3/3 [" in out.stderr and np.load(workspace / "s.npy").shape == (3, 32)


# --- every family: the pooled embedding its source defines, its head's scores, its preprocessing

_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=28,
           patch_size=14)
_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48)
FAMILIES = {
    "dinov2-registers": lambda: transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**_KW, num_register_tokens=2)),
    "dinov2-classifier": lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**_KW, num_labels=3)),
    "clip-classifier": lambda: transformers.CLIPForImageClassification(
        transformers.CLIPConfig(vision_config=_KW, text_config=_TEXT, num_labels=3)),
    "siglip": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**_KW)),
    "deit-teacher": lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**_KW, num_labels=3)),
}
PRESETS = {"dinov2-registers": "dinov2", "dinov2-classifier": "dinov2", "clip-classifier": "clip",
           "siglip": "siglip", "deit-teacher": "deit"}


@pytest.mark.parametrize("framework", ["flax", "torch"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_embeds_and_classifies_as_its_source(workspace, family: str, framework: str) -> None:
    """An HF directory of each family (no preprocessor_config.json: the family's preset): the rows
    are the source's pooled output (pooler_output; (CLS + DIST) / 2 for DeiT) and the top-k come
    from the source's own logits (DeiT's two heads averaged, DINOv2's [CLS; patch mean] head)."""
    torch.manual_seed(0)
    hf = FAMILIES[family]().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(workspace / family)
    out = workspace / f"{family}-{framework}.npy"
    assert embed_main([str(workspace / "imgs"), "--weights", str(workspace / family), "-o", str(out),
                       "--framework", framework, "--top-k", "3", "--quiet"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    x = torch.from_numpy(np.stack([preprocess_array(p, image_size=28, preset=PRESETS[family])
                                   for p in report["paths"]]).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        if hasattr(hf, "classifier") or hasattr(hf, "cls_classifier"):
            logits = hf(pixel_values=x).logits.numpy()
            backbone = getattr(hf, "vision_model", None) or getattr(hf, "deit", None) or getattr(hf, "dinov2")
            hidden = backbone(pixel_values=x)
        else:
            logits, hidden = None, hf(pixel_values=x)
    pooled = (hidden.pooler_output if not family.startswith("deit")
              else (hidden.last_hidden_state[:, 0] + hidden.last_hidden_state[:, 1]) / 2).numpy()
    np.testing.assert_allclose(np.load(out), pooled, atol=2e-5, rtol=0)
    assert report["normalisation"]["from"] == f"family preset {PRESETS[family]!r}"
    if logits is not None:
        got = [[t["index"] for t in row["labels"]] for row in report["top_k"]]
        assert got == np.argsort(-logits, axis=1, kind="stable")[:, :3].tolist()
        scores = np.array([[t["score"] for t in row["labels"]] for row in report["top_k"]])
        want = np.sort(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), axis=1)[:, ::-1]
        np.testing.assert_allclose(scores, want, atol=1e-5)
