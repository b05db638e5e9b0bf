//! GeoIP look-ups of client addresses (GeoNode's `request.country` / `region` / `city`, which
//! it fills with GeoIP2 when `USER_ANALYTICS_ENABLED`): a database file in MaxMind DB format
//! (GeoLite2-City, GeoIP2-City or any database with the same `country.iso_code`,
//! `subdivisions[].names.en`, `city.names.en` fields), read whole at start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::events::Place;

/// A GeoIP database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {source}")]
pub struct GeoIpError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: maxminddb::MaxMindDbError,
}

/// An open GeoIP database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize, Default)]
struct Names {
    #[serde(default)]
    names: BTreeMap<String, String>,
}

impl Names {
    fn english(self) -> Option<String> {
        self.names.get("en").cloned()
    }
}

#[derive(Deserialize, Default)]
struct Country {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize, Default)]
struct CityRecord {
    #[serde(default)]
    country: Country,
    #[serde(default)]
    subdivisions: Vec<Names>,
    #[serde(default)]
    city: Names,
}

impl GeoIp {
    /// Opens the database at `path`.
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoIpError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GeoIp { reader })
    }

    /// The place of `ip`, or `None` when it is not an address or the database has nothing
    /// for it (a private address, say).
    pub fn place(&self, ip: &str) -> Option<Place> {
        let address: IpAddr = ip.trim().parse().ok()?;
        let found = self.reader.lookup(address).ok()?;
        let record: CityRecord = found.decode().ok().flatten()?;
        let place = Place {
            country: record.country.iso_code,
            region: record
                .subdivisions
                .into_iter()
                .next()
                .and_then(Names::english),
            city: record.city.english(),
        };
        (place != Place::default()).then_some(place)
    }
}
