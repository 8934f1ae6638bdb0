//! The built-in region table: codes and coordinates, for `nearest` answers.

/// A region: its code and where it is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Region {
    pub code: &'static str,
    pub latitude: f64,
    pub longitude: f64,
}

const fn r(code: &'static str, latitude: f64, longitude: f64) -> Region {
    Region {
        code,
        latitude,
        longitude,
    }
}

/// Fly's common region codes (IATA airport codes) with the airport's coordinates.
pub const REGIONS: &[Region] = &[
    r("iad", 38.9445, -77.4558),
    r("ord", 41.9786, -87.9048),
    r("lax", 33.9425, -118.4081),
    r("sjc", 37.3626, -121.9291),
    r("dfw", 32.8998, -97.0403),
    r("sea", 47.4502, -122.3088),
    r("ewr", 40.6925, -74.1687),
    r("yyz", 43.6777, -79.6248),
    r("ams", 52.3105, 4.7683),
    r("lhr", 51.4700, -0.4543),
    r("fra", 50.0379, 8.5622),
    r("cdg", 49.0097, 2.5479),
    r("mad", 40.4983, -3.5676),
    r("arn", 59.6498, 17.9238),
    r("waw", 52.1657, 20.9671),
    r("nrt", 35.7720, 140.3929),
    r("hkg", 22.3080, 113.9185),
    r("sin", 1.3644, 103.9915),
    r("syd", -33.9399, 151.1753),
    r("bom", 19.0896, 72.8656),
    r("jnb", -26.1392, 28.2460),
    r("gru", -23.4356, -46.4731),
    r("scl", -33.3930, -70.7858),
];

/// Looks a region up by code.
pub fn find(code: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.code == code)
}

impl Region {
    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &Region) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dla = la2 - la1;
        let dlo = (other.longitude - self.longitude).to_radians();
        let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_common_codes_once() {
        let mut codes: Vec<_> = REGIONS.iter().map(|r| r.code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), REGIONS.len());
        assert_eq!(codes.len(), 23);
        assert!(find("iad").is_some());
        assert!(find("xyz").is_none());
    }

    #[test]
    fn distances_are_plausible() {
        let (iad, ewr, nrt) = (
            find("iad").unwrap(),
            find("ewr").unwrap(),
            find("nrt").unwrap(),
        );
        let near = iad.distance_km(ewr);
        assert!((300.0..400.0).contains(&near), "{near}");
        assert!(iad.distance_km(nrt) > 10_000.0);
        assert_eq!(iad.distance_km(iad), 0.0);
    }
}
