//! Who is calling (authentication) and what they may do (authorisation), for every API of both
//! binaries (SPEC "Auth", seed 004 "Authentication", seed 003's `X-Polaris-Token`).
//!
//! Credentials, tried in this order on one request:
//!
//! | scheme | header | checked against |
//! |---|---|---|
//! | bearer token | `Authorization: Bearer <t>` (also `X-Polaris-Token: <t>`) | the tokens file, `OPSPLANE_TOKEN` (admin), the report token |
//! | Basic (RFC 7617) | `Authorization: Basic <base64 user:password>` | an htpasswd file of bcrypt hashes |
//! | HMAC (Eve's `HMACAuth`) | `Authorization: <user>:<hex HMAC-SHA1 of the body>` | a secrets file |
//! | Kubernetes | `Authorization: Bearer <ServiceAccount or user token>` | TokenReview, then SubjectAccessReview per request |
//!
//! Static principals carry a [`Role`]; what a Kubernetes principal may do is asked of the API
//! server for the request's [`Access`] (resource, verb, namespace) and cached briefly.

pub mod credentials;
pub mod htpasswd;

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, header};
use futures::future::BoxFuture;

pub use credentials::{Credentials, CredentialsError};

/// `X-Polaris-Token` (seed 003): a credential like a bearer token, on the maintain API.
pub const POLARIS_TOKEN: HeaderName = HeaderName::from_static("x-polaris-token");

/// What a principal may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Posts node reports and nothing else (the node-daemons' token).
    Reporter,
    /// Every read.
    Viewer,
    /// Reads, writes to MonitoredServices and non-disruptive NodeTasks, ingestion, reports.
    Operator,
    /// Everything: disruptive NodeTasks, collection DELETE, autoconfigure, maintain and ops writes.
    Admin,
}

impl Role {
    /// The role's name as configuration and messages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reporter => "reporter",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role grants `need`.
    pub fn grants(self, need: Need) -> bool {
        match need {
            Need::Public => true,
            Need::Report => self == Role::Reporter || self >= Role::Operator,
            Need::Read => self >= Role::Viewer,
            Need::Write => self >= Role::Operator,
            Need::Admin => self >= Role::Admin,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reporter" => Ok(Role::Reporter),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (viewer, operator, admin, reporter)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The least a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// Open to anyone (health, the API root's links).
    Public,
    /// A read (viewer); public when public reads are configured.
    Read,
    /// Posting node reports (reporter, operator, admin).
    Report,
    /// A write (operator).
    Write,
    /// An administrative write (admin).
    Admin,
}

impl Need {
    /// The least role that grants this need, for messages.
    pub fn role(self) -> Option<Role> {
        match self {
            Need::Public => None,
            Need::Read => Some(Role::Viewer),
            Need::Report => Some(Role::Reporter),
            Need::Write => Some(Role::Operator),
            Need::Admin => Some(Role::Admin),
        }
    }
}

/// What one request does, as RBAC would name it: a route's declared permission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// The least role.
    pub need: Need,
    /// The `opsplane.io` resource (`monitoredservices`, `nodetasks`, `metrics`, ...).
    pub resource: &'static str,
    /// The RBAC verb (`get`, `list`, `create`, `patch`, `delete`, ...).
    pub verb: &'static str,
    /// The namespace the request is about, when the resource is namespaced.
    pub namespace: Option<String>,
}

impl Access {
    /// A route's permission.
    pub const fn new(need: Need, resource: &'static str, verb: &'static str) -> Access {
        Access {
            need,
            resource,
            verb,
            namespace: None,
        }
    }

    /// The same permission about objects in `namespace`.
    pub fn in_namespace(mut self, namespace: Option<&str>) -> Access {
        self.namespace = namespace.map(str::to_owned);
        self
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A configured bearer token.
    Bearer,
    /// HTTP Basic against the users file.
    Basic,
    /// Eve's HMAC.
    Hmac,
    /// A token the Kubernetes API server accepted (TokenReview).
    Kubernetes,
    /// A credential of one API's own scheme ([`crate::guard::ApiCredential`]), named by it
    /// (`utilmeta`: the ops API's platform tokens).
    Api(&'static str),
}

/// What the principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A configured role.
    Role(Role),
    /// Whatever RBAC allows this Kubernetes user (asked per request by SubjectAccessReview).
    Kubernetes {
        /// The groups TokenReview returned.
        groups: Vec<String>,
        /// The uid TokenReview returned.
        uid: String,
    },
    /// Scopes granted by one API's own scheme ([`crate::guard::ApiCredential`]), which checked
    /// the request's permission itself; never grants anything elsewhere.
    Scopes(Vec<String>),
}

/// An authenticated caller: what the oplog and the audit log record as `u`. Never holds the
/// credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name: a token's or user's configured name, or the Kubernetes user name
    /// (`system:serviceaccount:ns:name`).
    pub name: String,
    /// How it authenticated.
    pub scheme: Scheme,
    /// What it may do.
    pub grant: Grant,
}

/// Why a request is refused by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one no scheme accepts: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known principal without the permission: 403.
    #[error("{principal} may not {verb} {resource}: this needs the {role} role")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The least role that may.
        role: &'static str,
    },
    /// The Kubernetes API could not be asked: 503, retry later.
    #[error("cannot check the credential with the Kubernetes API: {0}")]
    Unavailable(String),
}

/// What the Kubernetes API server says (TokenReview and SubjectAccessReview), behind a trait so
/// the serving crate does not depend on a cluster.
pub trait Reviewer: Send + Sync {
    /// TokenReview: the user a token belongs to, `Ok(None)` when the API server does not know it.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, String>>;
    /// SubjectAccessReview: whether `principal` may do `access`.
    fn authorize<'a>(
        &'a self,
        principal: &'a Principal,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// The credential a request presents, read from its headers (the body is needed only for HMAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'h> {
    /// No credential header.
    None,
    /// `Bearer <t>`, or `X-Polaris-Token: <t>`.
    Bearer(&'h str),
    /// `Basic` with user and password decoded.
    Basic(String, String),
    /// `<user>:<hex>` (Eve's HMAC).
    Hmac(&'h str, &'h str),
    /// A header no scheme understands.
    Malformed(&'static str),
}

/// Reads the credential of `headers`.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match headers.get(POLARIS_TOKEN).and_then(|v| v.to_str().ok()) {
            Some(t) if !t.trim().is_empty() => Presented::Bearer(t.trim()),
            Some(_) => Presented::Malformed("X-Polaris-Token is empty"),
            None => Presented::None,
        };
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed("the Authorization header is not visible ASCII");
    };
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => match rest.trim() {
            "" => Presented::Malformed("Bearer without a token"),
            token => Presented::Bearer(token),
        },
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
            use base64::Engine as _;
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return Presented::Malformed("Basic credentials are not base64");
            };
            let Ok(text) = String::from_utf8(decoded) else {
                return Presented::Malformed("Basic credentials are not UTF-8");
            };
            match text.split_once(':') {
                Some((user, password)) => Presented::Basic(user.to_owned(), password.to_owned()),
                None => Presented::Malformed("Basic credentials need user:password"),
            }
        }
        Some(_) => Presented::Malformed("unknown Authorization scheme"),
        None => match value.rsplit_once(':') {
            Some((user, mac))
                if !user.is_empty()
                    && !mac.is_empty()
                    && mac.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Presented::Hmac(user, mac)
            }
            _ => Presented::Malformed("unknown Authorization scheme"),
        },
    }
}

/// Authentication and authorisation of one binary: the credentials it accepts, the Kubernetes
/// reviewer (operator in a cluster), whether reads are public.
#[derive(Clone)]
pub struct Auth {
    credentials: Arc<Credentials>,
    reviewer: Option<Arc<dyn Reviewer>>,
    decisions: Arc<credentials::DecisionCache>,
    public_reads: bool,
}

impl Auth {
    /// `credentials`, asking `reviewer` about tokens they do not know; reads open to anyone
    /// when `public_reads`.
    pub fn new(
        credentials: Credentials,
        reviewer: Option<Arc<dyn Reviewer>>,
        public_reads: bool,
    ) -> Auth {
        Auth {
            credentials: Arc::new(credentials),
            reviewer,
            decisions: Arc::new(credentials::DecisionCache::default()),
            public_reads,
        }
    }

    /// Whether a request for `need` passes without a credential.
    pub fn is_open(&self, need: Need) -> bool {
        need == Need::Public || (need == Need::Read && self.public_reads)
    }

    /// Whether an HMAC check needs the body of this request.
    pub fn needs_body(&self, headers: &HeaderMap) -> bool {
        matches!(presented(headers), Presented::Hmac(..)) && self.credentials.has_hmac()
    }

    /// The `WWW-Authenticate` value naming the enabled schemes.
    pub fn challenge(&self) -> String {
        let mut schemes = vec!["Bearer realm=\"opsplane\"".to_owned()];
        if self.credentials.has_basic() {
            schemes.push("Basic realm=\"opsplane\", charset=\"UTF-8\"".to_owned());
        }
        schemes.join(", ")
    }

    /// Who presents `headers` (and `body`, for HMAC). `Ok(None)`: no credential at all.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<Principal>, AuthError> {
        let refused = |why: &str| Err(AuthError::Unauthenticated(why.to_owned()));
        match presented(headers) {
            Presented::None => Ok(None),
            Presented::Malformed(why) => refused(why),
            Presented::Basic(user, password) => match self.credentials.basic(&user, &password) {
                Some(p) => Ok(Some(p)),
                None => refused("wrong user name or password"),
            },
            Presented::Hmac(user, mac) => match self.credentials.hmac(user, mac, body) {
                Some(p) => Ok(Some(p)),
                None => refused("wrong HMAC signature or unknown user"),
            },
            Presented::Bearer(token) => {
                if let Some(p) = self.credentials.bearer(token) {
                    return Ok(Some(p));
                }
                let Some(reviewer) = &self.reviewer else {
                    return refused("wrong bearer token");
                };
                if let Some(p) = self.decisions.principal(token) {
                    return Ok(Some(p));
                }
                match reviewer.authenticate(token).await {
                    Ok(Some(p)) => {
                        self.decisions.remember_principal(token, &p);
                        Ok(Some(p))
                    }
                    Ok(None) => refused("wrong bearer token"),
                    Err(e) => Err(AuthError::Unavailable(e)),
                }
            }
        }
    }

    /// Whether `principal` may do `access`.
    pub async fn authorize(&self, principal: &Principal, access: &Access) -> Result<(), AuthError> {
        let forbidden = || AuthError::Forbidden {
            principal: principal.name.clone(),
            verb: access.verb,
            resource: access.resource,
            role: access.need.role().map(Role::as_str).unwrap_or("any"),
        };
        match &principal.grant {
            Grant::Role(role) if role.grants(access.need) => Ok(()),
            Grant::Role(_) | Grant::Scopes(_) => Err(forbidden()),
            Grant::Kubernetes { .. } => {
                if access.need == Need::Public {
                    return Ok(());
                }
                let Some(reviewer) = &self.reviewer else {
                    return Err(forbidden());
                };
                let allowed = match self.decisions.allowed(principal, access) {
                    Some(allowed) => allowed,
                    None => {
                        let allowed = reviewer
                            .authorize(principal, access)
                            .await
                            .map_err(AuthError::Unavailable)?;
                        self.decisions.remember_allowed(principal, access, allowed);
                        allowed
                    }
                };
                if allowed { Ok(()) } else { Err(forbidden()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn each_scheme_is_recognised_from_its_header() {
        assert_eq!(
            presented(&with(header::AUTHORIZATION, "bearer abc")),
            Presented::Bearer("abc")
        );
        assert_eq!(
            presented(&with(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")),
            Presented::Basic("user".into(), "pass".into())
        );
        assert_eq!(
            presented(&with(header::AUTHORIZATION, "alice:0a1b2c")),
            Presented::Hmac("alice", "0a1b2c")
        );
        assert_eq!(
            presented(&with(POLARIS_TOKEN, "polaris-token")),
            Presented::Bearer("polaris-token")
        );
        assert_eq!(presented(&HeaderMap::new()), Presented::None);
        for bad in ["Basic !!!", "Digest x", "alice:xyz", "Bearer ", "justtext"] {
            assert!(
                matches!(
                    presented(&with(header::AUTHORIZATION, bad)),
                    Presented::Malformed(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn roles_include_the_ones_before_them_but_reporters_only_report() {
        assert!(Role::Admin.grants(Need::Admin));
        assert!(Role::Operator.grants(Need::Write) && !Role::Operator.grants(Need::Admin));
        assert!(Role::Viewer.grants(Need::Read) && !Role::Viewer.grants(Need::Write));
        assert!(Role::Reporter.grants(Need::Report));
        assert!(!Role::Reporter.grants(Need::Read));
        assert!(!Role::Viewer.grants(Need::Report));
        assert!(Role::Operator.grants(Need::Report));
    }
}
