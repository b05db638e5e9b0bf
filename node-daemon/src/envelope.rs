//! The seed 002 response envelope `{"code", "msg", "data"}` (§一, every §二 answer). Built only
//! here; handlers return data or an [`crate::error::ApiError`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The seed's success message.
pub const SUCCESS_MSG: &str = "成功";

/// The envelope.
#[derive(Debug, Serialize)]
pub struct Envelope {
    /// Seed return code, 0 on success.
    pub code: i32,
    /// "成功" or what went wrong.
    pub msg: String,
    /// The endpoint's data; `{}` on failure.
    pub data: Value,
}

/// A 200 answer with code 0.
pub fn success(data: Value) -> Response {
    (
        StatusCode::OK,
        Json(Envelope {
            code: 0,
            msg: SUCCESS_MSG.to_owned(),
            data,
        }),
    )
        .into_response()
}

/// A failure answer.
pub fn failure(status: StatusCode, code: i32, msg: &str) -> Response {
    (
        status,
        Json(Envelope {
            code,
            msg: msg.to_owned(),
            data: Value::Object(Default::default()),
        }),
    )
        .into_response()
}

/// A task's answer: its status, code and message, with data also on failure (ServiceHandler's
/// per-unit results).
pub fn outcome(status: StatusCode, code: i32, msg: &str, data: Value) -> Response {
    (
        status,
        Json(Envelope {
            code,
            msg: msg.to_owned(),
            data,
        }),
    )
        .into_response()
}
