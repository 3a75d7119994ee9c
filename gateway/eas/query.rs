//! The query string of a PAI-EAS request: reserved keys (`_name_`) and tags
//! (every other key), read into typed values or a 400 naming the key.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query as AxumQuery;
use axum::http::Uri;

use super::error::ApiError;

/// The query as a map (the last of repeated keys wins).
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn of(uri: &Uri) -> Result<Self, ApiError> {
        let AxumQuery(map) = AxumQuery::try_from_uri(uri)
            .map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
        Ok(Query(map))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.get(key)
    }

    /// `true`/`1` or `false`/`0`/empty; absent is false.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.0.get(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" || v.is_empty() => Ok(false),
            Some(v) => Err(ApiError::bad(format!(
                "{key}: true or false is required, not {v:?}"
            ))),
        }
    }

    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad(format!("{key}: a number is required, not {v:?}"))),
        }
    }

    /// Tags: every query key not reserved (reserved keys look like `_name_`).
    pub fn tags(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| !(k.starts_with('_') && k.ends_with('_')))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `_indexes_`: comma-separated indexes.
    pub fn indexes(&self) -> Result<Vec<u64>, ApiError> {
        let text = self
            .0
            .get("_indexes_")
            .ok_or_else(|| ApiError::bad("_indexes_ is required (comma-separated indexes)"))?;
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad(format!("_indexes_: {s:?} is not an index")))
            })
            .collect()
    }

    /// `key` as a Go-style duration, zero when absent.
    pub fn duration(&self, key: &str) -> Result<Duration, ApiError> {
        match self.0.get(key) {
            Some(t) => parse_duration(t).ok_or_else(|| {
                ApiError::bad(format!(
                    "{key}: a duration like 5s or 500ms is required, not {t:?}"
                ))
            }),
            None => Ok(Duration::ZERO),
        }
    }
}

/// A Go-style duration ("5s", "500ms", "1m", "1.5s"); a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn reserved_keys_are_not_tags_and_bad_values_name_their_key() {
        let q = Query::of(
            &"/x?_index_=3&_raw_=maybe&color=red&_indexes_=1,x"
                .parse()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(q.number::<u64>("_index_").unwrap(), Some(3));
        assert_eq!(q.tags().len(), 1);
        assert!(q.flag("_raw_").unwrap_err().to_string().contains("_raw_"));
        assert!(q.indexes().unwrap_err().to_string().contains("_indexes_"));
        assert!(q.number::<u32>("color").is_err());
    }
}
