"""Plain dataclasses every layer speaks. No heavy imports here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# Damage classes in the order of the xBD target masks (value 1..4).
DAMAGE_CLASSES: tuple[str, ...] = ("no-damage", "minor-damage", "major-damage", "destroyed")
UNCLASSIFIED = "un-classified"
MASK_VALUE: dict[str, int] = {name: i + 1 for i, name in enumerate(DAMAGE_CLASSES)}
# Regions scored separately: every footprint, then each damage class.
MASK_REGIONS: tuple[str, ...] = ("building",) + DAMAGE_CLASSES
DISASTER_TYPES: tuple[str, ...] = ("earthquake", "flooding", "wind", "fire", "volcano", "tsunami")
PHASES: tuple[str, ...] = ("pre", "post")


@dataclass(frozen=True)
class Scene:
    """One pre/post pair of an xBD-like dataset, found from file names alone.

    `scene_id` is `{disaster}_{id}` (plus `_part{N}` for 512 px course tiles, or
    `test_{id}` for the competition-era test set whose disaster is unknown).
    Any of the paths may be None when the file is absent.
    """

    scene_id: str
    disaster: str | None
    split: str | None
    part: int | None
    pre_image: Path | None
    post_image: Path | None
    pre_label: Path | None = None
    post_label: Path | None = None
    target: Path | None = None

    def image(self, phase: str) -> Path | None:
        """The image of `phase` ("pre" or "post"); None when that file is absent."""
        return _by_phase(phase, self.pre_image, self.post_image)

    def label(self, phase: str) -> Path | None:
        """The label JSON of `phase` ("pre" or "post"); None when that file is absent."""
        return _by_phase(phase, self.pre_label, self.post_label)


def _by_phase(phase: str, pre, post):
    if phase not in PHASES:
        raise ValueError(f"phase must be 'pre' or 'post', got {phase!r}")
    return pre if phase == "pre" else post


@dataclass(frozen=True)
class Building:
    """One building footprint: pixel polygon rings (x, y) and lon/lat rings if known."""

    uid: str
    subtype: str | None  # a DAMAGE_CLASSES value, UNCLASSIFIED, or None in pre labels
    xy: tuple[tuple[tuple[float, float], ...], ...]  # rings: exterior first, then holes
    lng_lat: tuple[tuple[tuple[float, float], ...], ...] | None = None


@dataclass(frozen=True)
class LabelMetadata:
    """The `metadata` block of an xBD label, as typed values (None when absent)."""

    sensor: str | None = None
    provider_asset_type: str | None = None
    gsd: float | None = None  # metres per pixel
    capture_date: datetime | None = None
    off_nadir_angle: float | None = None  # degrees
    pan_resolution: float | None = None  # metres per pixel
    sun_azimuth: float | None = None  # degrees
    sun_elevation: float | None = None  # degrees
    target_azimuth: float | None = None  # degrees
    disaster: str | None = None
    disaster_type: str | None = None
    catalog_id: str | None = None
    original_width: int | None = None
    original_height: int | None = None
    width: int | None = None
    height: int | None = None
    id: str | None = None
    img_name: str | None = None


@dataclass(frozen=True)
class Label:
    """A parsed label file: its metadata and building footprints."""

    path: Path
    metadata: LabelMetadata
    buildings: tuple[Building, ...] = ()

    def counts(self) -> dict[str, int]:
        """Buildings per damage class (plus `un-classified` and `total`)."""
        out = {name: 0 for name in DAMAGE_CLASSES + (UNCLASSIFIED,)}
        for b in self.buildings:
            if b.subtype in out:
                out[b.subtype] += 1
        out["total"] = len(self.buildings)
        return out


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file of a dataset; the rest of the dataset still indexes."""

    path: Path
    message: str


@dataclass(frozen=True)
class MetricSettings:
    """How scores are computed; stored with every score (see docs/metrics.md)."""

    luma: bool = False  # PSNR and SSIM on Y = 0.299R + 0.587G + 0.114B instead of RGB
    size: int | None = None  # evaluation size in px (square); None = the prediction's size

    def to_dict(self) -> dict:
        """The full, explicit settings, as stored with a score."""
        return {
            "luma": self.luma,
            "size": self.size,
            "range": "float64 in [0, 1]",
            "psnr_data_range": 1.0,
            "ssim": {
                "gaussian_weights": True,
                "sigma": 1.5,
                "use_sample_covariance": False,
                "data_range": 1.0,
                "channels": "Y" if self.luma else "RGB",
            },
            "lpips": {"net": "alex", "version": "0.1", "input_range": "[-1, 1]"},
            "resize": (f"both images resized to {self.size}x{self.size} with PIL LANCZOS" if self.size
                       else "target resized to the prediction's size with PIL LANCZOS when they differ"),
            "mse_channels": "RGB",
        }


@dataclass
class Scores:
    """Scores of one prediction against one target.

    `psnr` is `float('inf')` for identical images. `lpips` is None when LPIPS could not
    be computed, with the reason in `lpips_error`. `masked` maps each MASK_REGIONS name
    to a dict of the same metrics over that region, or None when the region has no pixels.
    """

    mse: float
    psnr: float
    ssim: float
    lpips: float | None
    settings: dict
    lpips_error: str | None = None
    masked: dict[str, dict | None] | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "target resized 1024->512"


# -- generation ---------------------------------------------------------------------------
GENERATION_MODES: tuple[str, ...] = ("img2img", "txt2img")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. The same field names serve every backbone; a backbone ignores
    nothing silently: fields it cannot use are refused with a clear message.

    `metadata` is DiffusionSat's normalised 7-value vector (see core.data.metadata); None
    means "from the scene's labels" and NO_METADATA (all zeros) means "no metadata".
    `seed` is the seed of the first image; image i uses `seed + i`.
    """

    backbone: str
    prompt: str
    negative_prompt: str = ""
    mode: str = "img2img"  # one of GENERATION_MODES
    scene_id: str | None = None
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.8  # img2img: how far from the pre-event tile (0 = unchanged, 1 = ignore it)
    size: int = 512  # output width = height, px
    seed: int = 0
    num_images: int = 1
    scheduler: str | None = None  # None = the backbone's default
    metadata: tuple[float, ...] | None = None
    control_scale: float = 1.0  # ControlNet conditioning scale
    image_guidance: float = 1.5  # InstructPix2Pix image guidance
    options: dict = field(default_factory=dict)  # backbone-specific, e.g. {"drop_t5": True}


@dataclass
class GenerationResult:
    """Images made for one request, with what is needed to reproduce each of them."""

    request: GenerationRequest
    images: list  # uint8 HxWx3 numpy arrays
    seeds: list[int]
    record: dict  # backbone, model source/revision, scheduler, resolved parameters, versions
    seconds: float = 0.0
