"""Scene specifications: the tile size, the capture and scene dataclasses, and the six
demo scenes (`DEMO_SCENES`) that `python -m core demo-scenes` renders."""

from __future__ import annotations

from dataclasses import dataclass

SIZE = 1024


@dataclass(frozen=True)
class Capture:
    """One (made-up) satellite capture: the label metadata plus the look of the image.

    `gains` multiply R, G, B; `gamma` is applied before the gains; `haze` in [0, 1]
    blends towards a pale blue-grey.
    """

    date: str  # ISO 8601, milliseconds, UTC ("Z")
    sensor: str
    catalog_id: str
    off_nadir_angle: float  # degrees
    sun_azimuth: float  # degrees clockwise from north
    sun_elevation: float  # degrees
    target_azimuth: float  # degrees
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    haze: float = 0.0


@dataclass(frozen=True)
class DemoSceneSpec:
    """One synthetic scene: where it goes, how its town looks, and its two captures.

    `style` picks the town layout (riverside, wui, suburb, dense, rural, coastal);
    `lon`/`lat` is the WGS84 position of the tile's top-left corner; `gsd` is metres per
    pixel and sets both the size of things drawn and the lon/lat scale of the labels.
    """

    disaster: str
    disaster_type: str
    number: int
    split: str
    style: str
    seed: int
    lon: float
    lat: float
    gsd: float
    pre: Capture
    post: Capture

    @property
    def tile_id(self) -> str:
        """The 8-digit id of the tile, e.g. `00000001`."""
        return f"{self.number:08d}"

    @property
    def scene_id(self) -> str:
        """`{disaster}_{id}`, as the rest of the app names scenes."""
        return f"{self.disaster}_{self.tile_id}"

    def stem(self, phase: str) -> str:
        """File stem of one phase: `{disaster}_{id}_{pre|post}_disaster`."""
        return f"{self.scene_id}_{phase}_disaster"


DEMO_SCENES: tuple[DemoSceneSpec, ...] = (
    DemoSceneSpec(
        "demo-flood", "flooding", 1, "train", "riverside", 1101, -95.8712, 41.2968, 1.24,
        pre=Capture("2018-10-14T17:02:41.000Z", "WORLDVIEW02", "1030010087A4C200", 14.2,
                    166.3, 38.9, 201.7, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2019-03-21T16:48:09.000Z", "GEOEYE01", "105001001452E700", 21.6,
                     154.8, 46.2, 118.4, (1.04, 1.0, 0.94), 0.96, 0.05),
    ),
    DemoSceneSpec(
        "demo-wildfire", "fire", 2, "train", "wui", 2202, -121.6247, 39.7731, 1.22,
        pre=Capture("2018-06-02T18:55:12.000Z", "WORLDVIEW03_VNIR", "10400100401B7F00", 11.8,
                    139.4, 69.8, 232.0, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-11-25T19:03:57.000Z", "WORLDVIEW02", "1030010089D0A500", 17.3,
                     164.1, 30.9, 76.5, (1.03, 0.99, 0.95), 1.04, 0.03),
    ),
    DemoSceneSpec(
        "demo-hurricane", "wind", 3, "train", "suburb", 3303, -85.4166, 29.9587, 1.21,
        pre=Capture("2018-04-30T16:21:35.000Z", "WORLDVIEW02", "10300100791E4A00", 9.6,
                    126.7, 66.1, 164.3, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-10-13T16:37:20.000Z", "WORLDVIEW03_VNIR", "104001004218C900", 19.9,
                     160.2, 50.4, 284.6, (0.97, 1.0, 1.05), 1.02, 0.06),
    ),
    DemoSceneSpec(
        "demo-earthquake", "earthquake", 4, "train", "dense", 4404, -99.1893, 18.6214, 1.2,
        pre=Capture("2017-02-09T17:14:03.000Z", "GEOEYE01", "10500100092F6B00", 16.4,
                    148.9, 50.7, 32.1, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2017-09-23T16:58:46.000Z", "WORLDVIEW02", "1030010070C44E00", 12.7,
                     121.6, 66.8, 211.9, (1.05, 1.02, 0.96), 0.97, 0.04),
    ),
    DemoSceneSpec(
        "demo-volcano", "volcano", 5, "test", "rural", 5505, -154.9061, 19.4719, 1.26,
        pre=Capture("2018-02-28T21:12:54.000Z", "WORLDVIEW02", "103001007B8F1300", 15.1,
                    143.2, 55.9, 127.3, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-06-11T21:05:30.000Z", "WORLDVIEW03_VNIR", "10400100413A2200", 24.3,
                     63.8, 78.4, 250.6, (0.98, 0.98, 1.02), 1.0, 0.08),
    ),
    DemoSceneSpec(
        "demo-tsunami", "tsunami", 6, "test", "coastal", 6606, 119.8463, -0.8802, 1.23,
        pre=Capture("2017-08-17T02:47:18.000Z", "WORLDVIEW02", "103001006F2E8D00", 13.3,
                    57.4, 66.3, 307.8, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-10-02T02:39:44.000Z", "WORLDVIEW03_VNIR", "104001004210FD00", 22.8,
                     83.1, 70.2, 145.2, (1.03, 1.0, 0.95), 0.98, 0.05),
    ),
)
