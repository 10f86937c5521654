//! Money on Plaid's wire.
//!
//! Plaid sends amounts as JSON numbers (`23631.9805`). We never do arithmetic on a float: a
//! number is read through its shortest round-trip text into a [`Decimal`], and written back
//! the same way, so any amount of up to 15 significant digits crosses the wire exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};
use std::str::FromStr;

/// `#[serde(with = "amount")]` for a required amount.
pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let n = f64::from_str(&value.normalize().to_string()).map_err(serde::ser::Error::custom)?;
    s.serialize_f64(n)
}

/// Reads a JSON number (or a numeric string) without float arithmetic.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    <Decimal as Deserialize>::deserialize(d)
}

/// `#[serde(with = "amount::option")]` for a nullable amount.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<Decimal>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Serialize};
    use std::str::FromStr;

    #[derive(Serialize, Deserialize)]
    struct A {
        #[serde(with = "super")]
        v: Decimal,
        #[serde(with = "super::option", default)]
        o: Option<Decimal>,
    }

    #[test]
    fn amounts_round_trip_exactly_through_json_numbers() {
        for text in ["23631.9805", "0.01", "-1203.45", "65262", "1000000000.99", "0.000001"] {
            let json = format!("{{\"v\":{text},\"o\":null}}");
            let a: A = serde_json::from_str(&json).unwrap();
            assert_eq!(a.v, Decimal::from_str(text).unwrap());
            let back = serde_json::to_string(&a).unwrap();
            let again: A = serde_json::from_str(&back).unwrap();
            assert_eq!(again.v, a.v, "{text} -> {back}");
            assert!(again.o.is_none());
        }
    }

    #[test]
    fn amounts_are_written_as_json_numbers() {
        let a = A { v: Decimal::from_str("110.50").unwrap(), o: Some(Decimal::from_str("2000").unwrap()) };
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"v":110.5,"o":2000.0}"#);
    }
}
