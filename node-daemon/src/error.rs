//! The seed 002 return-code table (§一.2) as the node API's error types: each error knows its
//! seed `code` and its HTTP status in one place, and renders through [`crate::envelope`].
//! [`ApiError`] is the query endpoints' error, [`TaskError`] the task runner's
//! ([`crate::task`]), whose [`OutcomeKind`] tells the HTTP status and a NodeTask watcher's phase.
//!
//! | code | meaning (seed) | used for |
//! |---|---|---|
//! | 0 | 成功 | success; for OsHandler: accepted, the power command follows the answer |
//! | 10001 | 登录失败 | bearer token missing/wrong; verify_password: wrong password, locked account |
//! | 10002 | 用户名错误 | verify_password: no such user |
//! | 30003 | 网络设备不存在 | IP tasks: the NIC does not exist |
//! | 30004 | 不支持的设备操作 | unknown handler/command; a command this node's configuration refuses |
//! | 30005 | 网络设备名称过长 | IP tasks: NIC name or label longer than 15 bytes (IFNAMSIZ) |
//! | 30006 | 无效的设备参数值 | malformed body, bad or missing parameter, unknown endpoint |
//! | 40001–40502 | 获取…信息失败 | a probe failed |
//! | 99999 | 系统异常，请稍后重试 | no reading yet; a task that ran and failed; too many password attempts |

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

/// What kind of ending a task had: the HTTP layer maps it to a status, a NodeTask watcher to a
/// phase, without parsing codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Done (code 0). For OsHandler: accepted, the power command runs right after the answer.
    Succeeded,
    /// The body or a value in it is invalid (30006) or a name too long (30005): nothing ran.
    Invalid,
    /// Unknown handler or command (30004): nothing ran.
    Unsupported,
    /// Known, but not allowed by this node's configuration (30004): nothing ran.
    Refused,
    /// The network device does not exist (30003): nothing ran.
    NotFound,
    /// verify_password ran and the password or user is wrong (10001 / 10002).
    Denied,
    /// Too many attempts from this client (99999): nothing ran.
    RateLimited,
    /// The task ran and failed (99999); changes were rolled back where the task says so.
    Failed,
}

/// An error of a node task (seed 002 §三, §五, §二.12–15), with its seed return code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// 30006 无效的设备参数值: a missing or invalid parameter; nothing was changed.
    #[error("无效的设备参数值: {0}")]
    Invalid(String),
    /// 30005 网络设备名称过长: an interface name or label longer than 15 bytes (IFNAMSIZ).
    #[error("网络设备名称过长: {0}")]
    NameTooLong(String),
    /// 30004 不支持的设备操作: unknown handler or command.
    #[error("不支持的设备操作: {0}")]
    Unsupported(String),
    /// 30004 不支持的设备操作: refused because this node's configuration does not allow it.
    #[error("不支持的设备操作: refused by the node-daemon configuration: {0}")]
    Refused(String),
    /// 30003 网络设备不存在: no such network device.
    #[error("网络设备不存在: {0}")]
    DeviceNotFound(String),
    /// 10001 登录失败: the password does not match (or the account has no usable password).
    #[error("登录失败: {0}")]
    LoginFailed(String),
    /// 10002 用户名错误: no such user in the shadow file.
    #[error("用户名错误: {0}")]
    UnknownUser(String),
    /// 99999: too many attempts from one client; retry later.
    #[error("系统异常，请稍后重试: {0}")]
    RateLimited(String),
    /// 99999: the task ran and failed (a command exited non-zero, the host refused a change).
    #[error("系统异常，请稍后重试: {0}")]
    Failed(String),
}

impl TaskError {
    /// The message without the seed's prefix.
    pub fn detail(&self) -> &str {
        match self {
            Self::Invalid(d)
            | Self::NameTooLong(d)
            | Self::Unsupported(d)
            | Self::Refused(d)
            | Self::DeviceNotFound(d)
            | Self::LoginFailed(d)
            | Self::UnknownUser(d)
            | Self::RateLimited(d)
            | Self::Failed(d) => d,
        }
    }

    /// The seed return code.
    pub fn code(&self) -> i32 {
        match self {
            Self::Invalid(_) => 30006,
            Self::NameTooLong(_) => 30005,
            Self::Unsupported(_) | Self::Refused(_) => 30004,
            Self::DeviceNotFound(_) => 30003,
            Self::LoginFailed(_) => 10001,
            Self::UnknownUser(_) => 10002,
            Self::RateLimited(_) | Self::Failed(_) => 99999,
        }
    }

    /// The kind of ending.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Invalid(_) | Self::NameTooLong(_) => OutcomeKind::Invalid,
            Self::Unsupported(_) => OutcomeKind::Unsupported,
            Self::Refused(_) => OutcomeKind::Refused,
            Self::DeviceNotFound(_) => OutcomeKind::NotFound,
            Self::LoginFailed(_) | Self::UnknownUser(_) => OutcomeKind::Denied,
            Self::RateLimited(_) => OutcomeKind::RateLimited,
            Self::Failed(_) => OutcomeKind::Failed,
        }
    }
}

impl OutcomeKind {
    /// The HTTP status the node API answers with. A password check that ran and said "no" is
    /// a 200 carrying 10001/10002 (401 would read as a bad bearer token).
    pub fn status(self) -> StatusCode {
        match self {
            Self::Succeeded | Self::Denied => StatusCode::OK,
            Self::Invalid => StatusCode::BAD_REQUEST,
            Self::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Self::Refused => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
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

    #[test]
    fn every_task_error_knows_its_seed_code_and_status() {
        let s = String::new;
        let cases = [
            (TaskError::Invalid(s()), 30006, 400),
            (TaskError::NameTooLong(s()), 30005, 400),
            (TaskError::Unsupported(s()), 30004, 501),
            (TaskError::Refused(s()), 30004, 403),
            (TaskError::DeviceNotFound(s()), 30003, 404),
            (TaskError::LoginFailed(s()), 10001, 200),
            (TaskError::UnknownUser(s()), 10002, 200),
            (TaskError::RateLimited(s()), 99999, 429),
            (TaskError::Failed(s()), 99999, 500),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.kind().status().as_u16(), status, "{error:?}");
        }
        assert!(
            TaskError::Refused("x".into())
                .to_string()
                .starts_with("不支持的设备操作: refused by the node-daemon configuration")
        );
    }
}
