//! Transaction page cursors: opaque to clients, a position in the page order (the transaction's
//! date, then its id, both descending).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

const VERSION: &str = "t1";

pub fn encode(date: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}|{}|{id}", date.timestamp_micros()))
}

/// The position a cursor names; `None` for anything this server did not issue.
pub fn decode(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    if cursor.len() > 256 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    if parts.next()? != VERSION {
        return None;
    }
    let micros: i64 = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    if id.is_empty() || id.len() > 64 || id.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-')) {
        return None;
    }
    Some((DateTime::from_timestamp_micros(micros)?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let at = DateTime::from_timestamp_micros(1_767_225_600_000_000).unwrap();
        let c = encode(at, "0b7f3c1e-9c1d-4b7a-8d2e-1f2a3b4c5d6e");
        assert_eq!(decode(&c), Some((at, "0b7f3c1e-9c1d-4b7a-8d2e-1f2a3b4c5d6e".to_string())));
        for bad in [
            "",
            "x",
            &URL_SAFE_NO_PAD.encode("t2|1|a"),
            &URL_SAFE_NO_PAD.encode("t1|x|a"),
            &URL_SAFE_NO_PAD.encode("t1|1|a'--"),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
