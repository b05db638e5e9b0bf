//! The seed 002 return-code table (§一.2) as the node API's error type: each error knows its
//! seed `code` and its HTTP status in one place, and renders through [`crate::envelope`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Which seed "failed to get ... information" code a failing probe maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 40001 获取CPU信息失败.
    Cpu,
    /// 40101 获取内存信息失败.
    Memory,
    /// 40201 获取存储信息失败.
    Storage,
    /// 40301 获取网络信息失败.
    Network,
    /// 40401 获取机器硬件信息失败.
    Hardware,
    /// 40501 获取系统服务信息失败.
    Services,
    /// 40502 获取虚拟机信息失败.
    Vms,
}

impl Failure {
    /// The seed return code.
    pub fn code(self) -> i32 {
        match self {
            Self::Cpu => 40001,
            Self::Memory => 40101,
            Self::Storage => 40201,
            Self::Network => 40301,
            Self::Hardware => 40401,
            Self::Services => 40501,
            Self::Vms => 40502,
        }
    }

    /// The seed's message for the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::Cpu => "获取CPU信息失败",
            Self::Memory => "获取内存信息失败",
            Self::Storage => "获取存储信息失败",
            Self::Network => "获取网络信息失败",
            Self::Hardware => "获取机器硬件信息失败",
            Self::Services => "获取系统服务信息失败",
            Self::Vms => "获取虚拟机信息失败",
        }
    }
}

/// An error answered by the node API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 10001: missing or wrong bearer token.
    #[error("登录失败: {0}")]
    Unauthorized(&'static str),
    /// 30006: a request parameter is missing or invalid.
    #[error("无效的设备参数值: {0}")]
    InvalidParameter(String),
    /// 30006: no such endpoint.
    #[error("无效的设备参数值: unknown endpoint {0}")]
    UnknownEndpoint(String),
    /// 30006: the endpoint exists but only answers POST.
    #[error("无效的设备参数值: method {0} not allowed, use POST")]
    MethodNotAllowed(String),
    /// 400xx-405xx: a probe failed to read the host.
    #[error("{}: {detail}", failure.message())]
    Probe {
        /// The failing probe's family.
        failure: Failure,
        /// What went wrong.
        detail: String,
    },
    /// 30004: an operation this daemon does not support (or not yet).
    #[error("不支持的设备操作: {0}")]
    Unsupported(String),
    /// 99999: the daemon cannot answer yet or hit an internal problem.
    #[error("系统异常，请稍后重试: {0}")]
    System(String),
}

impl ApiError {
    /// The seed return code.
    pub fn code(&self) -> i32 {
        match self {
            Self::Unauthorized(_) => 10001,
            Self::InvalidParameter(_) | Self::UnknownEndpoint(_) | Self::MethodNotAllowed(_) => {
                30006
            }
            Self::Probe { failure, .. } => failure.code(),
            Self::Unsupported(_) => 30004,
            Self::System(_) => 99999,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::UnknownEndpoint(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Probe { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::System(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::envelope::failure(self.status(), self.code(), &self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_knows_its_seed_code_and_status() {
        let cases = [
            (ApiError::Unauthorized("x"), 10001, 401),
            (ApiError::InvalidParameter("x".into()), 30006, 400),
            (ApiError::UnknownEndpoint("x".into()), 30006, 404),
            (ApiError::MethodNotAllowed("GET".into()), 30006, 405),
            (
                ApiError::Probe {
                    failure: Failure::Vms,
                    detail: "x".into(),
                },
                40502,
                500,
            ),
            (ApiError::System("x".into()), 99999, 503),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert_eq!(error.status().as_u16(), status, "{error}");
        }
        let codes: Vec<i32> = [
            Failure::Cpu,
            Failure::Memory,
            Failure::Storage,
            Failure::Network,
            Failure::Hardware,
            Failure::Services,
            Failure::Vms,
        ]
        .iter()
        .map(|f| f.code())
        .collect();
        assert_eq!(codes, [40001, 40101, 40201, 40301, 40401, 40501, 40502]);
    }
}
