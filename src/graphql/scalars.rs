//! Scalars: `DateTime` (RFC 3339, written in UTC with a `Z`) and `Decimal` (money, a JSON
//! string such as `"1203.45"`, never a float). Both carry `@specifiedBy`, so codegen with
//! `strictScalars` has a format to map.

use std::str::FromStr;

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

/// The `DateTime` scalar: RFC 3339, written in UTC with a `Z`. A value that does not parse
/// is refused with the format expected and the value received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

/// An instant, RFC 3339, written in UTC with a `Z` (`"2026-01-01T00:00:00Z"`).
#[Scalar(name = "DateTime", specified_by_url = "https://www.rfc-editor.org/rfc/rfc3339")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                chrono::DateTime::parse_from_rfc3339(s).map(|d| DateTime(d.with_timezone(&Utc))).map_err(|_| {
                    InputValueError::custom(format!(
                        "expected an RFC 3339 date-time such as \"2026-01-01T00:00:00Z\", got {s:?}"
                    ))
                })
            }
            other => Err(InputValueError::expected_type(other.clone())),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// The `Decimal` scalar: an exact amount of money as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub rust_decimal::Decimal);

/// An exact decimal number as a JSON string (`"1203.45"`, `"-0.5"`): money is never a float.
#[Scalar(name = "Decimal", specified_by_url = "https://speleotrove.com/decimal/daconvs.html#refnumsyn")]
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => rust_decimal::Decimal::from_str(s).map(Money).map_err(|_| {
                InputValueError::custom(format!("expected a decimal string such as \"12.34\", got {s:?}"))
            }),
            other => Err(InputValueError::expected_type(other.clone())),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}
