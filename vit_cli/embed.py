"""vit-embed: images -> pooled embeddings (.npy), with top-k labels when the checkpoint classifies.

    vit-embed IMAGES... --weights CHECKPOINT -o OUT.npy [--framework flax|torch] [--batch-size 32]
              [--dtype float32|bfloat16|float16] [--attention eager|sdpa] [--top-k 5] [--force]

IMAGES are files, directories (their image files, sorted) or glob patterns, kept in the order given.
OUT.npy holds one float32 row per readable image, in that order; OUT.json beside it lists those
images, the ones skipped (with why) and the top-k labels; the two are written as a pair, both or
neither. An image that fails in any way (unreadable, corrupt, not a regular file) is reported and
skipped, never losing the others, and the exit code is then 1: never a silent drop.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vit_cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    batch_size,
    config_source,
    finite_float,
    non_negative_int,
    normalisation,
    positive_int,
    run,
)
from vit_common.datasets import IMAGE_SUFFIXES
from vit_common.fileio import atomic_write_files, check_target

EXIT_SKIPPED = EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-embed", description="Embed images with a ViT checkpoint: one pooled embedding per image (the [CLS] "
                    "token, or the family's own pooling: SigLIP's attention pool, gap; CLIP's "
                    "projected image embedding where the checkpoint has its projection).",
        epilog="exit codes: 0 every image embedded, 1 some images were unreadable (reported, skipped, "
               "the rest written), 2 bad arguments or weights, 3 OUT exists (use --force), "
               "130 interrupted (nothing written)")
    p.add_argument("images", nargs="+", help="image files, directories or glob patterns")
    p.add_argument("--weights", required=True, help="any checkpoint vit-convert reads")
    p.add_argument("-o", "--output", required=True, help="OUT.npy (OUT.json is written beside it)")
    p.add_argument("--config", type=config_source,
                   help="preset or config.json for what the weights cannot say")
    p.add_argument("--framework", choices=("flax", "torch"), default="flax")
    p.add_argument("--batch-size", type=batch_size, default=32, help="images per batch (1..1024)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="compute dtype (parameters stay float32)")
    p.add_argument("--attention", choices=("eager", "sdpa"), default="eager")
    p.add_argument("--top-k", type=non_negative_int, default=5, help="labels per image when the checkpoint "
                   "has a classifier (0: none)")
    p.add_argument("--mean", type=finite_float, nargs="+", help="normalisation mean (default: the "
                   "checkpoint's own, from preprocessor_config.json or its format, else ImageNet's)")
    p.add_argument("--std", type=finite_float, nargs="+", help="normalisation std (likewise)")
    p.add_argument("--max-num-patches", type=positive_int, default=256, metavar="N",
                   help="SigLIP 2 NaFlex checkpoints: each image is embedded at its own aspect ratio, "
                        "resized to at most N patches (Siglip2ImageProcessor's max_num_patches; default 256)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def expand_images(specs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths in the order given, [(spec, why) for specs that name nothing])."""
    paths, missing = [], []
    for spec in specs:
        if os.path.isdir(spec):
            try:
                names = os.listdir(spec)
            except OSError as e:
                missing.append((spec, f"cannot list the directory ({e.strerror or e})"))
                continue
            found = sorted(os.path.join(spec, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                missing.append((spec, "directory holds no image files"))
            paths += found
        elif os.path.lexists(spec):
            paths.append(spec)  # not necessarily a readable image: the reader says why per image
        elif glob.has_magic(spec):
            found = sorted(glob.glob(spec, recursive=True))
            files = [f for f in found if not os.path.isdir(f)]
            if not found:
                missing.append((spec, "pattern matches no file"))
            elif not files:
                missing.append((spec, f"pattern matches only directories ({len(found)}); name the "
                                      f"directories themselves, or a pattern of files"))
            paths += files
        else:
            missing.append((spec, "no such file or directory"))
    return paths, missing


def _normalisation(config: Any, mean: list[float] | None, std: list[float] | None
                   ) -> tuple[Sequence[float], Sequence[float], str]:
    """Mean/std: flags, else the checkpoint's own (preprocessor_config.json, npz convention),
    else its family's preset (ImageNet's for classic ViT)."""
    from vit_common.preprocessing import family_preset, preprocessing_for

    settings = preprocessing_for(config)
    source = ("checkpoint" if "preprocessing" in config.extra
              else f"family preset {family_preset(config)!r}")
    m, s = settings.mean, settings.std
    if mean or std:
        m, s, source = mean or m, std or s, "--mean/--std"
    return m, s, source


def _engine(framework: str, weights: str, config: Any, batch_size: int, dtype: str, attention: str) -> Any:
    """The framework's InferenceEngine over the checkpoint (the two engines take the same pixels,
    channels last, and give the same outputs)."""
    if framework == "flax":
        import vit_flax

        model, params = vit_flax.from_pretrained(weights, config)
        return vit_flax.InferenceEngine(model.config, params, batch_size=batch_size, dtype=dtype,
                                        attention_impl=attention)
    if framework == "torch":
        import vit_torch

        model = vit_torch.from_pretrained(weights, config, attention_impl=attention)
        return vit_torch.InferenceEngine(model.config, model, batch_size=batch_size, dtype=dtype)
    raise ValueError(f"framework must be 'flax' or 'torch', got {framework!r}")


def _say(text: str, stream: Any = None) -> None:
    """Print a line that may hold file names no terminal encoding can show (bytes that are not
    UTF-8): they are shown escaped, never allowed to fail the run."""
    stream = stream or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding, "replace"), file=stream)


def _batches(paths: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(paths), size):
        yield paths[i:i + size]


def main(argv: Sequence[str] | None = None) -> int:
    return run("vit-embed", _main, _parser(), argv)


def _main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import vit_common.families as families
    from vit_common.preprocessing import MAX_NAFLEX_PATCHES, naflex_batch, preprocess_array

    out_npy = args.output if args.output.endswith(".npy") else args.output + ".npy"
    out_json = out_npy[:-len(".npy")] + ".json"
    # every argument checked before any work starts
    normalisation(args.mean, "mean")
    normalisation(args.std, "std", positive=True)
    if args.max_num_patches > MAX_NAFLEX_PATCHES:
        raise ValueError(f"--max-num-patches must be at most {MAX_NAFLEX_PATCHES:,}, got {args.max_num_patches}")
    for path in (out_npy, out_json):
        check_target(path, overwrite=args.force, directory=False)
    paths, missing = expand_images(args.images)
    engine = _engine(args.framework, args.weights, args.config, args.batch_size, args.dtype, args.attention)
    mean, std, norm_source = _normalisation(engine.config, args.mean, args.std)
    config = engine.config
    if len(mean) not in (1, config.num_channels) or len(std) not in (1, config.num_channels):
        raise ValueError(f"--mean/--std need 1 or {config.num_channels} values for this model, got "
                         f"{len(mean)} and {len(std)}")
    id2label = {int(k): v for k, v in (config.extra.get("id2label") or {}).items()}
    naflex = families.timm.is_naflex(config)  # SigLIP 2 NaFlex: every image at its own shape
    skipped: list[dict[str, str]] = [{"path": p, "error": why} for p, why in missing]
    done: list[str] = []
    rows: list[np.ndarray] = []
    topk: list[list[dict[str, Any]]] = []
    with tqdm(total=len(paths), desc="vit-embed", unit="img", disable=args.quiet,
              file=sys.stderr, leave=False) as bar:
        for batch in _batches(paths, args.batch_size):
            pixels, ok = [], []
            for path in batch:
                try:
                    pixels.append(naflex_batch(path, config, max_num_patches=args.max_num_patches, mean=mean, std=std)
                                  if naflex else preprocess_array(path, config, mean=mean, std=std))
                    ok.append(path)
                except Exception as e:  # any failure of one image skips that image, never the run
                    reason = str(e) or type(e).__name__
                    skipped.append({"path": path, "error": reason})
                    _say(f"vit-embed: skipping {path}: {reason}", sys.stderr)
            if ok:
                out = engine({k: np.concatenate([p[k] for p in pixels]) for k in pixels[0]} if naflex
                             else np.stack(pixels))
                rows.append(out["pooled"])
                done += ok
                if engine.has_head and args.top_k:
                    topk += _top_k(out["logits"], args.top_k, id2label)
            bar.update(len(batch))
    for spec, why in missing:
        _say(f"vit-embed: skipping {spec}: {why}", sys.stderr)
    embeddings = np.concatenate(rows) if rows else np.zeros((0, config.pooled_size), np.float32)
    if not np.isfinite(embeddings).all():
        print("vit-embed: warning: some embeddings are not finite (NaN or infinite weights?)",
              file=sys.stderr)

    def save_npy(f: Any) -> None:
        buf = io.BytesIO()
        np.save(buf, embeddings.astype(np.float32), allow_pickle=False)
        f.write(buf.getvalue())

    report = {"weights": args.weights, "framework": args.framework, "dtype": args.dtype,
              "normalisation": {"mean": list(mean), "std": list(std), "from": norm_source},
              "embedding": _which(config), "shape": list(embeddings.shape), "paths": done, "skipped": skipped}
    if topk:
        report["top_k"] = [{"path": p, "labels": t} for p, t in zip(done, topk)]
    # names that are not UTF-8 stay escaped in the JSON (ensure_ascii), never a failed write
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_files({out_npy: save_npy, out_json: lambda f: f.write(text.encode("utf-8"))},
                       overwrite=args.force)  # both or neither, written before anything is printed
    for p, t in zip(done, topk):
        _say(p + "\t" + ", ".join(f"{e['label']} ({e['score']:.3f})" for e in t))
    _say(f"wrote {out_npy} {embeddings.shape} ({_which(config)}) and {out_json}"
         + (f"; skipped {len(skipped)} unreadable input(s)" if skipped else ""), sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _which(config: Any) -> str:
    """Which embedding vit-embed gives: the projected one where the checkpoint has a projection
    (CLIP's image embedding, what retrieval and zero-shot use), else the tower's pooled output."""
    import vit_common.families as families

    native = ", each image at its own aspect ratio (NaFlex)" if families.timm.is_naflex(config) else ""
    if config.projection_size:
        return f"projected image embedding ({config.projection_size}-d, after the visual projection{native})"
    return f"pooled tower output ({config.hidden_size}-d{native})"


def _top_k(logits: np.ndarray, k: int, id2label: dict[int, str]) -> list[list[dict[str, Any]]]:
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": id2label.get(int(i), f"LABEL_{int(i)}"), "index": int(i),
              "score": float(p[i])} for i in row] for p, row in zip(probs, order)]


if __name__ == "__main__":
    sys.exit(main())
