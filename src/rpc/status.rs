//! Errors across the wire. The identity service answers a failure with a gRPC status whose
//! `details` are an `ErrorDetail`: the stable code and the exact message a client sees, Plaid's
//! error, the retry delay. An internal error's detail is logged where it happened and crosses
//! as the generic message. A status without an `ErrorDetail` is the transport's (or the
//! service-token check's), and the gateway tells it apart.

use prost::Message;
use tonic::{Code, Status};

use super::pb;
use crate::error::{AppError, PlaidDetail, code};

/// The gRPC code for each of ours (what another team's client would branch on).
fn grpc_code(app_code: &str) -> Code {
    match app_code {
        code::UNAUTHENTICATED => Code::Unauthenticated,
        code::FORBIDDEN => Code::PermissionDenied,
        code::BAD_USER_INPUT => Code::InvalidArgument,
        code::NOT_FOUND => Code::NotFound,
        code::CONFLICT => Code::Aborted,
        code::RATE_LIMITED => Code::ResourceExhausted,
        code::PLAID_ERROR | code::LINK_RESTART_REQUIRED => Code::FailedPrecondition,
        code::UPSTREAM_UNAVAILABLE => Code::Unavailable,
        code::NOT_CONFIGURED => Code::Unimplemented,
        _ => Code::Internal,
    }
}

/// The status for an error of the identity service; an internal one is logged here, with the
/// detail that does not cross.
pub fn to_status(e: AppError) -> Status {
    let (code, detail) = detail(e);
    Status::with_details(code, detail.message.clone(), detail.encode_to_vec().into())
}

/// What crosses the wire of an error of the identity service, and its gRPC code; an internal
/// one is logged here, with the detail that does not cross.
pub fn detail(e: AppError) -> (Code, pb::ErrorDetail) {
    if let AppError::Internal(inner) = &e {
        tracing::error!(error = %format!("{inner:#}"), "internal error");
    }
    let app_code = e.code();
    let (message, plaid, retry_after_seconds) = e.public_parts();
    let detail = pb::ErrorDetail {
        code: app_code.to_string(),
        message,
        plaid: plaid.map(|p| pb::PlaidError {
            error_type: p.error_type.clone(),
            error_code: p.error_code.clone(),
            display_message: p.display_message.clone(),
            request_id: p.request_id.clone(),
        }),
        retry_after_seconds,
    };
    (grpc_code(app_code), detail)
}

/// The error an `ErrorDetail` describes, as the client of the gateway will see it.
pub fn from_detail(d: pb::ErrorDetail) -> AppError {
    let plaid = d.plaid.map(|p| PlaidDetail {
        error_type: p.error_type,
        error_code: p.error_code,
        display_message: p.display_message,
        request_id: p.request_id,
    });
    match d.code.as_str() {
        code::INTERNAL_SERVER_ERROR => {
            AppError::internal(anyhow::anyhow!("the identity service failed (its log has the detail)"))
        }
        c => AppError::from_code(c, d.message, plaid, d.retry_after_seconds),
    }
}

/// What a status the gateway received means.
#[derive(Debug)]
pub enum Failure {
    /// The service's answer: the error to give the client.
    Answer(AppError),
    /// The call did not reach a working service (refused, reset, TLS failure, no route): it may
    /// be tried on another endpoint (a read may be sent twice; the service tolerates that).
    Connection(Status),
    /// The service refused this gateway's credentials (service token or certificate).
    Refused(Status),
    /// The deadline passed, or anything else the transport reports.
    Other(Status),
}

pub fn from_status(s: Status) -> Failure {
    if !s.details().is_empty()
        && let Ok(d) = pb::ErrorDetail::decode(s.details())
    {
        return Failure::Answer(from_detail(d));
    }
    match s.code() {
        // Unknown without a detail is what a broken connection or a failed TLS handshake gives.
        Code::Unavailable | Code::Unknown => Failure::Connection(s),
        Code::Unauthenticated | Code::PermissionDenied => Failure::Refused(s),
        _ => Failure::Other(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::INTERNAL_MESSAGE;

    fn round_trip(e: AppError) -> AppError {
        match from_status(to_status(e)) {
            Failure::Answer(e) => e,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn what_a_client_sees_crosses_unchanged() {
        let msg = crate::identity::NO_ACTIVE_CONNECTION;
        let e = round_trip(AppError::NotFound(msg.into()));
        assert_eq!((e.code(), e.to_string().as_str()), (code::NOT_FOUND, msg));

        let detail = PlaidDetail {
            error_type: "ITEM_ERROR".into(),
            error_code: "ITEM_LOGIN_REQUIRED".into(),
            display_message: Some("Log in again.".into()),
            request_id: Some("req-1".into()),
        };
        match round_trip(AppError::Plaid { message: "Plaid says no.".into(), detail: detail.clone() }) {
            AppError::Plaid { message, detail: d } => assert_eq!((message.as_str(), d), ("Plaid says no.", detail)),
            other => panic!("{other:?}"),
        }
        match round_trip(AppError::RateLimited { message: "Slow down.".into(), retry_after_seconds: 42 }) {
            AppError::RateLimited { message, retry_after_seconds } => {
                assert_eq!((message.as_str(), retry_after_seconds), ("Slow down.", 42))
            }
            other => panic!("{other:?}"),
        }
        for e in [
            AppError::BadInput("b".into()),
            AppError::Conflict("c".into()),
            AppError::Upstream("u".into()),
            AppError::NotConfigured("n".into()),
            AppError::LinkRestart("l".into()),
            AppError::EventsExpired("e".into()),
            AppError::Forbidden("f".into()),
        ] {
            let (c, m) = (e.code(), e.to_string());
            let back = round_trip(e);
            assert_eq!((back.code(), back.to_string()), (c, m));
        }
    }

    #[test]
    fn internal_detail_stays_behind() {
        let status = to_status(AppError::internal(anyhow::anyhow!("password=hunter2 in the pool")));
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert!(!String::from_utf8_lossy(status.details()).contains("hunter2"));
        let back = round_trip(AppError::internal(anyhow::anyhow!("secret detail")));
        assert_eq!(back.code(), code::INTERNAL_SERVER_ERROR);
        assert!(!format!("{back:#}").contains("secret detail"));
    }

    #[test]
    fn transport_failures_are_not_answers() {
        assert!(matches!(from_status(Status::unavailable("tcp connect error")), Failure::Connection(_)));
        assert!(matches!(from_status(Status::unauthenticated("service token")), Failure::Refused(_)));
        assert!(matches!(from_status(Status::deadline_exceeded("late")), Failure::Other(_)));
        // An Unavailable that the service meant (Plaid is down) is an answer, not a dead endpoint.
        assert!(matches!(from_status(to_status(AppError::Upstream("Plaid".into()))), Failure::Answer(_)));
    }
}
