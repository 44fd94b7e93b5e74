"""The framework-neutral core of preprocess_image: load, resize (optionally resize-shorter-side and
centre-crop), scale to [0, 1], normalize.

Both frameworks' `preprocess_image` call `preprocess_array` and only change the layout and the
array type, so they give identical numbers. The steps and their rounding are those of HF's
`ViTImageProcessor` PIL backend (and of torchvision / timm transforms on PIL images): PIL resizes
the 8-bit image, then `/ 255` and `(x - mean) / std` in float32.

Loading rules: paths, bytes, PIL images and numpy arrays (HWC / HW uint8, or float in [0, 1]).
EXIF orientation is applied. Colour: alpha is dropped, as PIL's convert("RGB") does and as HF and
timm do (LA -> L, RGBA -> RGB, P -> via RGBA -> RGB); CMYK is converted by PIL; 16-bit grayscale
(I;16) is scaled by 1/65535 and kept in float. Images over `MAX_PIXELS` are refused before their
pixels are decoded.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np
from PIL import Image, ImageOps

import vit_common.families as families
from vit_common.config import ViTConfig

# the statistics constants (HF's image_utils and timm's names) and each family's presets live with
# the families; the pipelines are built from them below
IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD = families.base.IMAGENET_DEFAULT_MEAN, families.base.IMAGENET_DEFAULT_STD
IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD = families.base.IMAGENET_STANDARD_MEAN, families.base.IMAGENET_STANDARD_STD
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = families.base.OPENAI_CLIP_MEAN, families.base.OPENAI_CLIP_STD
MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS)
# crop_pct resizes the whole image before cropping; past this many pixels (a 1 x 100000 image would
# need 256 x 25,600,000) the crop is resampled straight from its region of the source instead:
# the same filter at the same scale, memory bounded by the output
MAX_RESIZE_PIXELS = 16 * 2**20
MIN_CROP_PCT = 0.05  # timm and HF use 0.875-1.0; a tiny one would ask for an astronomically large resize

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
Resample = Literal["bilinear", "bicubic"]
CropMode = Literal["center", "squash"]
CropRounding = Literal["round", "floor"]
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's weights expect their pixels."""

    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    resample: Resample = "bilinear"
    # None: resize straight to the model's size (HF). A fraction: resize to size / crop_pct, then
    # centre-crop to the size (timm's eval transform, crop_pct 0.875 / 0.9)
    crop_pct: float | None = None
    # how the crop_pct resize is made (timm's names): "center" keeps the aspect ratio, the shorter
    # side to size / crop_pct (torchvision Resize(int), HF's {"shortest_edge"}); "squash" resizes
    # both sides to size / crop_pct (HF DeiT's 256 x 256 before its 224 crop)
    crop_mode: CropMode = "center"
    # the centring offset of an odd margin: torchvision / timm round half to even, HF's processors
    # floor ((margin) // 2): one pixel apart on a 427 x 640 photo cropped to 224
    crop_rounding: CropRounding = "round"
    # an 8-bit image resized as floats, never rounded back to 8 bits (HF's torchvision-only
    # processors, DINOv3's): one 8-bit level (0.017 after ImageNet's std) from the 8-bit resize
    resize_in_float: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.resize_in_float, bool):
            raise ValueError(f"resize_in_float must be true or false, got {self.resize_in_float!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {tuple(_RESAMPLE)}, got {self.resample!r}")
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be 'center' or 'squash', got {self.crop_mode!r}")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(f"crop_rounding must be 'round' or 'floor', got {self.crop_rounding!r}")
        if self.crop_pct is not None and not (_is_number(self.crop_pct)
                                              and MIN_CROP_PCT <= self.crop_pct <= 1):
            raise ValueError(f"crop_pct must be a number in [{MIN_CROP_PCT}, 1], got {self.crop_pct!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (not isinstance(values, (tuple, list)) or len(values) not in (1, 3)
                    or not all(_is_number(v) for v in values)):
                raise ValueError(f"{name} must be 1 or 3 finite numbers, got {values!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {tuple(self.std)}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def from_hf(cls, data: Mapping[str, Any]) -> Preprocessing:
        """From an HF preprocessor_config.json dict (resample 2 = bilinear, 3 = bicubic). Keys it
        leaves out take the defaults of its `image_processor_type` (ViTImageProcessor's when
        unnamed); a centre crop (CLIP, DINOv2's Bit, DeiT) becomes crop_pct = crop / resize with
        HF's rounding. A "crop_pct" key (timm's convention, as to_hf writes it) wins."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        kind = str(data.get("image_processor_type") or "ViTImageProcessor")
        kind = kind.removesuffix("Fast").removesuffix("Pil")
        known = families.PROCESSORS.get(kind, families.PROCESSORS["ViTImageProcessor"])
        given = {**known, **{k: v for k, v in data.items() if v is not None}}
        code = given["resample"]
        resample = {2: "bilinear", 3: "bicubic"}.get(code) if isinstance(code, int) else None
        if resample is None:
            raise ValueError(f"resample {code!r} is not bilinear (2) or bicubic (3)")
        mean, std = given["image_mean"], given["image_std"]
        if _is_number(mean):
            mean = [mean]
        if _is_number(std):
            std = [std]
        crop: dict[str, Any] = {}
        if "crop_pct" in data:
            crop = {"crop_pct": data["crop_pct"], "crop_mode": data.get("crop_mode", "center")}
        elif given.get("do_center_crop") and given.get("do_resize", True):
            crop = _hf_crop(given.get("size"), given.get("crop_size"))
        return cls(mean=mean, std=std, resample=resample, resize_in_float=given.get("resize_in_float", False),
                   **crop)  # type: ignore[arg-type]

    @classmethod
    def from_hf_file(cls, path: str | os.PathLike) -> Preprocessing:
        """From an HF preprocessor_config.json file; every problem is a ValueError naming it."""
        from vit_common.fileio import read_json

        path = os.fspath(path)
        try:
            return cls.from_hf(read_json(path, "preprocessor config"))
        except ValueError as e:
            message = str(e)
            raise ValueError(message if message.startswith(path) else f"{path}: {message}") from None

    def to_hf(self, config: ViTConfig) -> dict[str, Any]:
        """As an HF preprocessor_config.json: a processor that does the same (ViTImageProcessor
        for a straight resize, SiglipImageProcessor for SigLIP, CLIPImageProcessor or DINOv2's
        BitImageProcessor for a shorter-side resize + crop, DeiTImageProcessor for a squash + crop).
        A timm crop (rounded centring) also keeps its crop_pct key, which wins when we read it."""
        h, w = config.image_hw
        family = families.hf_model_of(config)
        data: dict[str, Any] = {
            "do_resize": True, "do_rescale": True, "do_normalize": True, "rescale_factor": 1 / 255,
            "image_mean": list(self.mean), "image_std": list(self.std),
            "resample": {"bilinear": 2, "bicubic": 3}[self.resample]}
        if self.resize_in_float:  # our key, read back as it is (HF's processors ignore it)
            data["resize_in_float"] = True
        if self.crop_pct is None:
            data.update(image_processor_type=family.resize_processor, size={"height": h, "width": w})
            return data
        rh, rw = _crop_resize(h, w, self.crop_pct)
        data.update(do_center_crop=True, crop_size={"height": h, "width": w})
        if self.crop_mode == "squash":
            data.update(image_processor_type="DeiTImageProcessor", size={"height": rh, "width": rw})
        else:
            data.update(image_processor_type=family.crop_processor, size={"shortest_edge": min(rh, rw)})
        if self.crop_rounding == "round":
            data.update(crop_pct=self.crop_pct, crop_mode=self.crop_mode)
        return data


def _hf_size(value: Any, what: str) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):  # old configs: one number
        value = {"shortest_edge": value} if what == "size" else {"height": value, "width": value}
    if not isinstance(value, Mapping) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
        raise ValueError(f"{what} must be a JSON object of positive integers, got {value!r}")
    return dict(value)


def _hf_crop(size: Any, crop_size: Any) -> dict[str, Any]:
    """HF's resize-then-centre-crop as crop_pct / crop_mode, exactly: floor(crop / crop_pct) gives
    back HF's resize."""
    size, crop = _hf_size(size, "size"), _hf_size(crop_size, "crop_size")
    if set(crop) != {"height", "width"}:
        raise ValueError(f"crop_size must have height and width, got {crop}")
    ch, cw = crop["height"], crop["width"]
    if set(size) == {"shortest_edge"}:
        mode, rh, rw = "center", size["shortest_edge"], size["shortest_edge"]
    elif set(size) == {"height", "width"}:
        mode, rh, rw = "squash", size["height"], size["width"]
    else:
        raise ValueError(f"a centre crop after a resize to {size} is not supported (expected "
                         f"shortest_edge, or height and width)")
    pct = _crop_pct_for(ch, rh)
    if _crop_resize(ch, cw, pct) != (rh, rw) or pct > 1:
        raise ValueError(f"resizing to {size} then cropping {crop} keeps a different fraction of "
                         f"each side; only one crop fraction is supported")
    return {"crop_pct": pct, "crop_mode": mode, "crop_rounding": "floor"}


def _crop_pct_for(crop: int, resize: int) -> float:
    """The largest fraction with floor(crop / fraction) == resize."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    return pct


def _crop_resize(height: int, width: int, crop_pct: float) -> tuple[int, int]:
    return math.floor(height / crop_pct), math.floor(width / crop_pct)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Preprocessing presets (model size presets are vit_common.config.MODEL_PRESETS): whole pipelines
# (statistics, resampling, crop), each family's HF processor as its released checkpoints configure it
PIPELINES: dict[str, Preprocessing] = {name: Preprocessing(**fields) for name, fields in families.PRESETS.items()}


def preprocessing_for(config: ViTConfig | None) -> Preprocessing:
    """A checkpoint's own preprocessing, carried in config.extra["preprocessing"] by from_pretrained
    (read from preprocessor_config.json, or the source's convention); else its family's preset
    ("imagenet" for classic ViT)."""
    carried = (config.extra.get("preprocessing") if config is not None else None)
    if isinstance(carried, Preprocessing):
        return carried
    if isinstance(carried, Mapping):
        return Preprocessing(**carried)
    return PIPELINES[family_preset(config) if config is not None else families.DEFAULT_PRESET]


def family_preset(config: ViTConfig) -> str:
    """The PIPELINES preset of a config's family: its HF model_type's when it was read from one,
    else that of the family its switches mark (DIST token: DeiT; LayerScale: DINOv2; a norm before
    the encoder: CLIP; MAP pooling without [CLS]: SigLIP), else "imagenet" (classic ViT)."""
    return families.preset_name(config)


# ---------------------------------------------------------------------------------------------
# loading


def _open(image: str | os.PathLike | bytes, max_pixels: int) -> Image.Image:
    """Decode an image file (regular files only: a FIFO or device is refused by type, never read)
    after checking its pixel count from the header. Any decoder failure is a ValueError."""
    from vit_common.fileio import open_regular

    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(image)), "image bytes", max_pixels)
    name = os.fspath(image)
    if not os.path.lexists(name):
        raise FileNotFoundError(f"image file not found: {name}")
    with open_regular(name, "image file") as fh:
        return _decode(fh, name, max_pixels)


def _decode(fh: Any, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():  # our own limit below says it better than PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            f = Image.open(fh)  # header only
    except Image.DecompressionBombError as e:
        raise ValueError(f"cannot read image {name}: {e}") from None
    except Exception as e:  # PIL raises many types for files it cannot identify
        raise ValueError(f"cannot read image {name}: {_reason(e)}") from None
    with f:
        width, height = f.size
        if width < 1 or height < 1:
            raise ValueError(f"{name}: the image is {width}x{height} pixels")
        if width * height > max_pixels:
            raise ValueError(f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit "
                             f"of {max_pixels:,} (a decompression bomb, or pass max_pixels=)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                f.load()
                return ImageOps.exif_transpose(f)  # the camera's orientation; also copies the pixels
        except Exception as e:  # truncated data, broken EXIF, unsupported codecs, ...
            raise ValueError(f"cannot read image {name}: truncated or corrupt ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_image(image: ImageInput, num_channels: int = 3, *,
               max_pixels: int = MAX_PIXELS) -> Image.Image | np.ndarray:
    """An image as a PIL image of `num_channels` channels (8-bit), or as a float32 (H, W, C) array
    in [0, 1] for inputs with more than 8 bits (float arrays, 16-bit grayscale)."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        pil = _open(image, max_pixels)
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        return _from_array(image, num_channels)
    else:
        raise TypeError(f"expected a path, bytes, a PIL.Image.Image or a numpy array, "
                        f"got {type(image).__name__}")
    try:
        return _convert(pil, num_channels)
    except ValueError:
        raise
    except Exception as e:  # exotic modes PIL cannot convert
        raise ValueError(f"cannot convert a {pil.mode} image to {num_channels} channel(s): "
                         f"{_reason(e)}") from None


def _convert(pil: Image.Image, num_channels: int) -> Image.Image | np.ndarray:
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):  # more than 8 bits of gray: keep them
        gray = np.asarray(pil, dtype=np.float32) / (65535.0 if pil.mode.startswith("I;16") else
                                                    max(float(np.asarray(pil).max()), 1.0))
        return _channels(gray[..., None], num_channels)
    if num_channels == 3:
        if pil.mode == "P":
            pil = pil.convert("RGBA")  # palette transparency becomes alpha, then dropped below
        return pil if pil.mode == "RGB" else pil.convert("RGB")
    if num_channels == 1:
        return pil if pil.mode == "L" else pil.convert("L")
    raise ValueError(f"preprocessing supports 1 or 3 channels, the config has {num_channels}")


def _from_array(image: np.ndarray, num_channels: int) -> Image.Image | np.ndarray:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or "
                         f"(H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return load_image(Image.fromarray(image), num_channels)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"expected a float image with values in [0, 1], got range "
                             f"[{np.nanmin(image):.3g}, {np.nanmax(image):.3g}]")
        rgb = image[..., :3] if image.ndim == 3 else image[..., None]  # alpha dropped
        return _channels(rgb.astype(np.float32), num_channels)
    raise ValueError(f"expected a uint8 image (0..255) or a float image in [0, 1], got dtype "
                     f"{image.dtype}")


def _channels(x: np.ndarray, num_channels: int) -> np.ndarray:
    if x.shape[-1] == num_channels:
        return x
    if num_channels == 3:  # gray -> RGB
        return np.repeat(x, 3, axis=-1)
    if num_channels == 1:  # ITU-R 601-2 luma, PIL's convert("L") weights
        return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    raise ValueError(f"preprocessing supports 1 or 3 channels, the config has {num_channels}")


# ---------------------------------------------------------------------------------------------
# resizing and normalising


def preprocess_array(image: ImageInput, config: ViTConfig | None = None, *,
                     image_size: int | Sequence[int] | None = None,
                     preset: str | None = None, resample: Resample | None = None,
                     crop_pct: float | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image -> float32 (H, W, C), no batch dimension.

    Settings: `preset` (a PIPELINES name: one of the families' presets, vit_common.families.PRESETS)
    else the config's carried preprocessing else its family's preset; then
    `resample`, `crop_pct`, `mean`, `std` override single fields.
    """
    if preset is not None and preset not in PIPELINES:
        raise ValueError(f"preset must be one of {tuple(PIPELINES)}, got {preset!r}")
    settings = PIPELINES[preset] if preset is not None else preprocessing_for(config)
    overrides = {k: v for k, v in (("resample", resample), ("crop_pct", crop_pct),
                                   ("mean", mean), ("std", std)) if v is not None}
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    config = config or ViTConfig()
    if image_size is None:
        height, width = config.image_hw
    elif isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = image_size
    channels = config.num_channels
    mean_a, std_a = _stats(settings.mean, channels, "mean"), _stats(settings.std, channels, "std")
    img = load_image(image, channels, max_pixels=max_pixels)
    pixels = _resize(img, height, width, settings)  # float32 (H, W, C) in [0, 1]
    return ((pixels - mean_a) / std_a).astype(np.float32)


def _resize(img: Image.Image | np.ndarray, height: int, width: int, s: Preprocessing) -> np.ndarray:
    """Resize (and crop) with PIL; 8-bit images stay 8-bit until the end, as in HF and timm, unless
    the settings resize them as floats."""
    if s.resize_in_float and isinstance(img, Image.Image):
        img = np.asarray(img, np.float32).reshape(img.height, img.width, -1) / np.float32(255.0)
    if isinstance(img, np.ndarray):  # float data: each channel as a PIL "F" image
        planes = [Image.fromarray(np.ascontiguousarray(img[..., c])) for c in range(img.shape[-1])]
        planes = [_resize_one(p, height, width, s) for p in planes]
        return np.stack([np.asarray(p, np.float32) for p in planes], axis=-1)
    out = np.asarray(_resize_one(img, height, width, s), dtype=np.float32)
    return out.reshape(height, width, -1) / np.float32(255.0)


def _resize_one(img: Image.Image, height: int, width: int, s: Preprocessing) -> Image.Image:
    method = _RESAMPLE[s.resample]
    if s.crop_pct is None:
        return img if img.size == (width, height) else img.resize((width, height), resample=method)
    # timm's eval transform: resize to floor(size / crop_pct) (keeping the aspect ratio, or both
    # sides for "squash"), then a centre crop of the target size
    w0, h0 = img.size
    if s.crop_mode == "squash":
        th, tw = _crop_resize(height, width, s.crop_pct)
        new = (tw, th)
    elif height == width:  # torchvision Resize(int): the short side exact, the long one truncated
        scale = math.floor(height / s.crop_pct)
        new = (scale, int(scale * h0 / w0)) if w0 <= h0 else (int(scale * w0 / h0), scale)
    else:  # timm ResizeKeepRatio for a non-square target
        th, tw = _crop_resize(height, width, s.crop_pct)
        ratio = min(h0 / th, w0 / tw)
        new = (round(w0 / ratio), round(h0 / ratio))
    if s.crop_rounding == "floor":  # HF's processors
        left, top = (new[0] - width) // 2, (new[1] - height) // 2
    else:  # torchvision's center_crop
        left, top = int(round((new[0] - width) / 2.0)), int(round((new[1] - height) / 2.0))
    if new[0] >= width and new[1] >= height and new[0] * new[1] > MAX_RESIZE_PIXELS:
        sx, sy = w0 / new[0], h0 / new[1]  # the crop's region of the source, same filter scale
        box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        return img.resize((width, height), resample=method, box=box)
    img = img if img.size == new else img.resize(new, resample=method)
    return img.crop((left, top, left + width, top + height))


def _stats(values: Sequence[float], channels: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, channels)
    if arr.shape[0] != channels:
        raise ValueError(f"{name} needs {channels} values (one per channel), got {tuple(values)}")
    return arr


def preprocess_batch(images: ImageInput | Sequence[ImageInput], config: ViTConfig | None = None,
                     **kwargs: Any) -> np.ndarray:
    """One image or a list of them -> float32 (N, H, W, C)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("expected at least one image, got an empty list")
        return np.stack([preprocess_array(im, config, **kwargs) for im in images])
    return preprocess_array(images, config, **kwargs)[None]


def demo_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A generated RGB test picture (gradients, a disc and noise): uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([x, y, 0.5 * (1 - x) + 0.5 * disc], axis=-1) * 200
    rgb += rng.normal(0, 20, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# SigLIP 2 NaFlex: every image at its own aspect ratio, as patches

MAX_NAFLEX_PATCHES = 65_536


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """The (height, width) in pixels Siglip2ImageProcessor resizes an image to: the largest scale
    (found by bisection to 1e-5, as HF does) whose sides, each rounded up to whole patches (at
    least one), make at most `max_num_patches` patches."""
    def side(scale: float, size: int) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    lo, hi = 1e-6, 100.0
    while hi - lo >= 1e-5:
        mid = (lo + hi) / 2
        if (side(mid, height) / patch_size) * (side(mid, width) / patch_size) <= max_num_patches:
            lo = mid
        else:
            hi = mid
    return side(lo, height), side(lo, width)


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """(H, W, C) with H, W multiples of p -> (H/p * W/p, p*p*C): patches row-major over the image,
    each flattened in (row, column, channel) order (SigLIP 2 NaFlex's layout)."""
    h, w, c = pixels.shape
    p = patch_size
    grid = pixels.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4)
    return grid.reshape((h // p) * (w // p), p * p * c)


def naflex_batch(images: ImageInput | Sequence[ImageInput], config: ViTConfig | None = None, *,
                 max_num_patches: int = 256, patch_size: int | None = None, preset: str | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resample: Resample | None = None, max_pixels: int = MAX_PIXELS) -> dict[str, np.ndarray]:
    """Images -> the NaFlex inputs of Siglip2ImageProcessor: each image resized (its aspect ratio
    kept, `naflex_size`), normalised, cut into patches and zero-padded to `max_num_patches` rows.
    Returns {"pixel_values": float32 (B, N, p*p*C), "pixel_attention_mask": int32 (B, N),
    "spatial_shapes": int64 (B, 2)}, the twins' NaFlex arguments."""
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if not images:
        raise ValueError("expected at least one image, got an empty list")
    if not (isinstance(max_num_patches, int) and not isinstance(max_num_patches, bool)
            and 1 <= max_num_patches <= MAX_NAFLEX_PATCHES):
        raise ValueError(f"max_num_patches must be an int in [1, {MAX_NAFLEX_PATCHES:,}], got {max_num_patches!r}")
    config = config or ViTConfig(position_embedding_resampling="bilinear_antialias")
    p = patch_size or config.patch_size
    settings = PIPELINES[preset] if preset is not None else preprocessing_for(config)
    overrides = {k: v for k, v in (("resample", resample), ("mean", mean), ("std", std)) if v is not None}
    settings = dataclasses.replace(settings, crop_pct=None, **overrides)
    channels = config.num_channels
    mean_a, std_a = _stats(settings.mean, channels, "mean"), _stats(settings.std, channels, "std")
    values = np.zeros((len(images), max_num_patches, p * p * channels), np.float32)
    mask = np.zeros((len(images), max_num_patches), np.int32)
    shapes = np.zeros((len(images), 2), np.int64)
    for i, image in enumerate(images):
        img = load_image(image, channels, max_pixels=max_pixels)
        w0, h0 = img.size if isinstance(img, Image.Image) else img.shape[1::-1]
        height, width = naflex_size(h0, w0, p, max_num_patches)
        pixels = (_resize(img, height, width, settings) - mean_a) / std_a
        patches = patchify(pixels.astype(np.float32), p)
        values[i, :len(patches)] = patches
        mask[i, :len(patches)] = 1
        shapes[i] = (height // p, width // p)
    return {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": shapes}
