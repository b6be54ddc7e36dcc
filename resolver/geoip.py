"""Reading a MaxMind-format (mmdb) GeoIP database: the I/O half of GeoIP location.

Only coordinates are used: the client is placed in the configured region nearest to
where the database puts its address (see :class:`resolver.geo.Locator`), so any city
database works — MaxMind's GeoLite2/GeoIP2 City, or one of your own built with
``mmdb-writer``. The prefix the database answered for becomes the ECS scope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb

from registry.errors import ConfigError


class GeoIP:
    def __init__(self, path: Path) -> None:
        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"GLOBALDNS_GEOIP_DATABASE: cannot open {path}: {exc}") from exc

    def lookup(self, address: str) -> tuple[float, float, int] | None:
        """(latitude, longitude, prefix length) for ``address``, or None."""
        try:
            record, prefix = self.reader.get_with_prefix_len(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None
        location: Any = record.get("location") if isinstance(record, dict) else None
        if not isinstance(location, dict):
            return None
        latitude, longitude = location.get("latitude"), location.get("longitude")
        if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
            return None
        return float(latitude), float(longitude), int(prefix)

    def close(self) -> None:
        self.reader.close()
