"""The major public-cloud regions, with coordinates and jurisdictions.

A topology may name any of these without repeating coordinates (``eu-west-1: {}``), or
override and extend them. Coordinates are those of the region's metro area; the
jurisdiction is the legal area a residency fence keeps data in (``eu`` covers the EU
and EEA regions).
"""

from __future__ import annotations

from registry.model import Region

_REGIONS: dict[str, tuple[float, float, str]] = {
    # AWS
    "us-east-1": (38.13, -78.45, "us"),
    "us-east-2": (39.96, -83.00, "us"),
    "us-west-1": (37.35, -121.96, "us"),
    "us-west-2": (45.84, -119.70, "us"),
    "ca-central-1": (45.50, -73.57, "ca"),
    "sa-east-1": (-23.55, -46.63, "br"),
    "eu-west-1": (53.35, -6.26, "eu"),
    "eu-west-2": (51.51, -0.13, "uk"),
    "eu-west-3": (48.86, 2.35, "eu"),
    "eu-central-1": (50.11, 8.68, "eu"),
    "eu-north-1": (59.33, 18.07, "eu"),
    "eu-south-1": (45.46, 9.19, "eu"),
    "me-central-1": (25.20, 55.27, "ae"),
    "af-south-1": (-33.92, 18.42, "za"),
    "ap-south-1": (19.08, 72.88, "in"),
    "ap-southeast-1": (1.35, 103.82, "sg"),
    "ap-southeast-2": (-33.87, 151.21, "au"),
    "ap-northeast-1": (35.68, 139.69, "jp"),
    "ap-northeast-2": (37.57, 126.98, "kr"),
    "ap-east-1": (22.32, 114.17, "hk"),
    # Google Cloud
    "us-central1": (41.26, -95.86, "us"),
    "us-east4": (39.04, -77.49, "us"),
    "europe-west1": (50.45, 3.82, "eu"),
    "europe-west3": (50.11, 8.68, "eu"),
    "europe-west4": (53.44, 6.84, "eu"),
    "asia-south1": (19.08, 72.88, "in"),
    "asia-northeast1": (35.68, 139.69, "jp"),
    # Azure
    "eastus": (37.37, -79.82, "us"),
    "westeurope": (52.37, 4.90, "eu"),
    "northeurope": (53.35, -6.26, "eu"),
    "centralindia": (18.52, 73.86, "in"),
    "southeastasia": (1.35, 103.82, "sg"),
}


def known(name: str) -> Region | None:
    found = _REGIONS.get(name)
    if found is None:
        return None
    latitude, longitude, jurisdiction = found
    return Region(name=name, latitude=latitude, longitude=longitude, jurisdiction=jurisdiction)


def names() -> list[str]:
    return sorted(_REGIONS)
