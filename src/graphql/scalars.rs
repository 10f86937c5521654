//! Scalars: `DateTime` (RFC 3339, written in UTC with a `Z`). `Decimal` is async-graphql's.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

/// The `DateTime` scalar: RFC 3339, written in UTC with a `Z`. A value that does not parse
/// is refused with the format expected and the value received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

#[Scalar(name = "DateTime")]
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
