"""Writes a tiny GeoIP2-City-shaped MaxMind DB for operator/tests/geoip.rs with mmdb-writer
(PyPI), the way a GeoLite2-City file is laid out: country.iso_code, subdivisions[].names.en,
city.names.en. Usage: write_mmdb.py OUT.mmdb"""

import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet

writer = MMDBWriter(
    ip_version=6,
    ipv4_compatible=True,
    database_type="GeoIP2-City",
    languages=["en"],
    description={"en": "opsplane test GeoIP database"},
)
writer.insert_network(
    IPSet(["81.2.69.0/24"]),
    {
        "country": {"iso_code": "GB"},
        "subdivisions": [{"names": {"en": "England"}}],
        "city": {"names": {"en": "London"}},
    },
)
writer.insert_network(
    IPSet(["2001:218::/32"]),
    {
        "country": {"iso_code": "JP"},
        "subdivisions": [{"names": {"en": "Tokyo"}}],
        "city": {"names": {"en": "Tokyo"}},
    },
)
writer.insert_network(IPSet(["89.160.20.112/28"]), {"country": {"iso_code": "SE"}})
writer.to_db_file(sys.argv[1])
