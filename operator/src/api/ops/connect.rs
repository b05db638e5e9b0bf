//! Connecting this service to the UtilMeta platform (seed 000; UtilMeta's `meta connect`,
//! `save_supervisor` and `SupervisorClient`, reference/utilmeta-ops.md §3, §4 Root, §8):
//!
//! 1. An opsplane admin calls `POST <ops_api>/connect` with `{key, to}` (the access key the
//!    platform shows, and the supervisor's URL): a *pending* supervisor record with
//!    `init_key = key` is stored ([`opsplane_store::supervisors`]), and the node's metadata is
//!    sent to `POST <to>/` ("add_node"), header `X-Access-Key: <key>`, the body a compact JWE
//!    (RSA-OAEP-256 + A256CBC-HS512) to that key.
//! 2. The platform answers with the supervisor's data, or calls back `POST <ops_api>/` (open):
//!    saved only when its `init_key` matches a pending record ([`decide_save`]: 400 without
//!    one, 404 when no pending record has it, 409 when the base URL differs or that node is
//!    already connected there). The record gets `node_id` and `public_key` (a JWK); tokens it
//!    signs are then accepted ([`super::credential`]).
//! 3. `PATCH <ops_api>/` (`service.config`) changes the caller supervisor's settings,
//!    `DELETE <ops_api>/` (`service.delete`) removes it.
//! 4. After the save, and from then on in the background ([`run_platform_calls`]): the
//!    resources (metadata, OpenAPI, tables, instances) to `POST <supervisor>/resources` when
//!    their digest changed ([`resources_changed`]; the answer's `remote_id`s are kept), and
//!    each completed hour's and UTC day's request aggregates ([`reports_due`], [`report`]) to
//!    `POST <supervisor>/report`, or several at once in batches of [`BATCH`] to
//!    `/report/batch`. Bounded timeouts; a failure is logged and tried again at the next round
//!    (only what a 2xx acknowledged advances); never on a request's path.
//!
//! Outbound calls go only to `--ops-trusted-host`s (always `utilmeta.com`), over https unless
//! `--ops-insecure-http`. The access key is never logged and never returned.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;

use opsplane_store::model::split_resource_key;
use opsplane_store::supervisors::{self, RemoteId, SupervisorRecord};
use opsplane_store::{Expect, Kind, Store, Written};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::credential::Caller;
use super::{OpsError, SPEC_VERSION, aggregate, answer, schemas};
use crate::api::AppState;

/// The host every connect may reach (UtilMeta's `trusted_hosts` always has it).
pub const PLATFORM_HOST: &str = "utilmeta.com";

/// The UtilMeta version whose ops API this one follows (sent as `utilmeta_version`).
pub const UTILMETA_VERSION: &str = "2.8.1";

/// Where and how outbound platform calls may go (`--ops-trusted-host`, `--ops-insecure-http`,
/// `--ops-platform-timeout`, `--ops-report-interval`).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Hosts (and their subdomains) calls may go to.
    pub trusted_hosts: Vec<String>,
    /// Plain http allowed.
    pub insecure: bool,
    /// Longest one call may take.
    pub timeout: Duration,
    /// How often the background round runs (resources not yet acknowledged, hours not yet
    /// reported).
    pub interval: Duration,
    /// A file whose epoch seconds are "now" for the rounds' due reports (`--ops-clock-file`,
    /// for tests); the clock otherwise.
    pub clock_file: Option<std::path::PathBuf>,
}

impl Default for Outbound {
    fn default() -> Outbound {
        Outbound {
            trusted_hosts: vec![PLATFORM_HOST.to_owned()],
            insecure: false,
            timeout: Duration::from_secs(10),
            interval: Duration::from_secs(300),
            clock_file: None,
        }
    }
}

impl Outbound {
    /// Whether calls may go to `url`: http(s), https unless insecure, a trusted host.
    pub fn check(&self, url: &str) -> Result<url::Url, OpsError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| OpsError::BadRequest(format!("invalid supervisor URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.insecure => {}
            "http" => {
                return Err(OpsError::BadRequest(
                    "the supervisor URL must be https (plain http needs --ops-insecure-http)"
                        .into(),
                ));
            }
            other => {
                return Err(OpsError::BadRequest(format!(
                    "the supervisor URL must be https, not {other}"
                )));
            }
        }
        let host = parsed.host_str().unwrap_or("").to_lowercase();
        let trusted = self.trusted_hosts.iter().any(|t| {
            let t = t.trim().to_lowercase();
            !t.is_empty() && (host == t || host.ends_with(&format!(".{t}")))
        });
        if !trusted {
            return Err(OpsError::BadRequest(format!(
                "the supervisor host {host:?} is not trusted (--ops-trusted-host)"
            )));
        }
        Ok(parsed)
    }
}

/// `url` joined with `path` (`https://x/spv` + `resources` → `https://x/spv/resources`).
pub fn join(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if path.is_empty() {
        format!("{base}/")
    } else {
        format!("{base}/{}", path.trim_start_matches('/'))
    }
}

/// A public RSA JWK as given: a JSON object, or that JSON in base64 (UtilMeta's access keys
/// come either way). Refused when it is not an RSA public key (a private one included).
pub fn public_jwk(key: &str) -> Result<String, OpsError> {
    use base64::Engine as _;
    let key = key.trim();
    let text = if key.starts_with('{') {
        key.to_owned()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                OpsError::BadRequest("the key is neither a JWK nor base64 of one".into())
            })?
    };
    let jwk: Value = serde_json::from_str(&text)
        .map_err(|_| OpsError::BadRequest("the key is not a JSON JWK".into()))?;
    if jwk["kty"] != "RSA" || !jwk["n"].is_string() || !jwk["e"].is_string() {
        return Err(OpsError::BadRequest(
            "the key must be an RSA public JWK (kty, n, e)".into(),
        ));
    }
    if jwk.get("d").is_some() {
        return Err(OpsError::BadRequest(
            "the key is a private key; give the public one".into(),
        ));
    }
    Ok(text)
}

/// `payload` as a compact JWE to the public JWK `jwk`: RSA-OAEP-256 + A256CBC-HS512 (RFC 7516,
/// RFC 7518 §4.3 and §5.2.5), as UtilMeta's `encrypt_data` (jwcrypto) makes it.
pub fn encrypt(jwk: &str, payload: &[u8]) -> Result<String, OpsError> {
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bad =
        |e: &dyn std::fmt::Display| OpsError::BadRequest(format!("the key cannot encrypt: {e}"));
    let key: Value = serde_json::from_str(jwk).map_err(|e| bad(&e))?;
    // A JWK's n and e: base64url big-endian unsigned integers (RFC 7518 §6.3.1). At most
    // 8192 bits, as `rsa::PublicKey::new` accepts.
    let component = |name: &str| {
        let bytes = key[name]
            .as_str()
            .and_then(|v| b64.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| bad(&format!("no RSA {name}")))?;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let digits = &bytes[start..];
        if digits.is_empty() || digits.len() > rsa::PublicKey::MAX_SIZE / 8 {
            return Err(bad(&format!("RSA {name} has {} bytes", digits.len())));
        }
        Ok(rsa::BoxedUint::from_be_slice_vartime(digits))
    };
    let public = rsa::PublicKey::new(component("n")?, component("e")?).map_err(|e| bad(&e))?;
    let random = |out: &mut [u8]| getrandom::fill(out).map_err(|e| bad(&e));
    // The content key: the HMAC-SHA-512 half, then the AES-256-CBC half.
    let mut cek = [0u8; 64];
    random(&mut cek)?;
    let (mac_key, enc_key) = cek.split_at(32);
    // RSA-OAEP-256: OAEP with SHA-256, and MGF1 with SHA-256 too (RFC 7518 §4.3).
    let encrypted_key = public
        .encrypt(
            &mut getrandom::SysRng,
            rsa::Oaep::<sha2::Sha256>::new(),
            &cek,
        )
        .map_err(|e| bad(&e))?;
    let mut iv = [0u8; 16];
    random(&mut iv)?;
    let ciphertext = cbc::Encryptor::<aes::Aes256>::new_from_slices(enc_key, &iv)
        .map_err(|e| bad(&e))?
        .encrypt_padded_vec::<Pkcs7>(payload);
    let header = b64.encode(json!({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512"}).to_string());
    // The tag: the first half of HMAC-SHA-512 over AAD, IV, ciphertext and AAD's bit length.
    let aad = header.as_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(mac_key).map_err(|e| bad(&e))?;
    mac.update(aad);
    mac.update(&iv);
    mac.update(&ciphertext);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let mac = mac.finalize().into_bytes();
    let tag = &mac[..32];
    Ok(format!(
        "{header}.{}.{}.{}.{}",
        b64.encode(&encrypted_key),
        b64.encode(iv),
        b64.encode(&ciphertext),
        b64.encode(tag)
    ))
}

/// The connect request (`POST <ops_api>/connect`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    /// The access key the platform gave (an RSA public JWK, or base64 of one).
    pub key: String,
    /// The supervisor's URL (`https://api.utilmeta.com/spv`).
    pub to: String,
}

/// The platform's supervisor data (`POST <ops_api>/`, UtilMeta's `SupervisorData`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SupervisorData {
    /// The node id the platform gave this service.
    pub node_id: String,
    /// The ops_api the platform reached.
    pub ops_api: String,
    /// The supervisor's ident.
    pub ident: String,
    /// The node's page in the platform's console.
    #[serde(default)]
    pub url: Option<String>,
    /// The public JWK its tokens are signed with (a JSON string).
    #[serde(default)]
    pub public_key: Option<String>,
    /// The supervisor's base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Other URLs of the supervisor.
    #[serde(default)]
    pub backup_urls: Vec<String>,
    /// The pending connect's access key.
    #[serde(default)]
    pub init_key: Option<String>,
    /// A local node.
    #[serde(default)]
    pub local: bool,
}

/// What the platform may change (`PATCH <ops_api>/`, UtilMeta's `SupervisorPatch`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SupervisorPatch {
    /// Must be the caller's node id.
    pub node_id: String,
    /// The ident.
    #[serde(default)]
    pub ident: Option<String>,
    /// The console URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The base URL (must stay a trusted host).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Other URLs.
    #[serde(default)]
    pub backup_urls: Option<Vec<String>>,
    /// Heartbeat interval, seconds.
    #[serde(default)]
    pub heartbeat_interval: Option<u64>,
    /// Disable the supervisor (its tokens are then refused).
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Settings.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Option<Value>,
    /// Alert settings.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub alert_settings: Option<Value>,
    /// Task settings.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub task_settings: Option<Value>,
    /// Aggregate settings.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub aggregate_settings: Option<Value>,
}

/// What a callback does with the records.
#[derive(Debug, PartialEq)]
pub enum Save {
    /// Write this record (at this revision).
    Write(u64, Box<SupervisorRecord>),
    /// The pending record already has its node id: answered unchanged.
    Unchanged(Box<SupervisorRecord>),
}

fn key_matches(stored: &str, given: &str) -> bool {
    stored.as_bytes().ct_eq(given.as_bytes()).into()
}

/// UtilMeta's `save_supervisor`, as a decision over the records: the pending record whose
/// `init_key` is `data.init_key`, with the platform's fields in it and `init_key` cleared.
pub fn decide_save(
    records: &[(u64, SupervisorRecord)],
    data: &SupervisorData,
) -> Result<Save, OpsError> {
    let init_key = data
        .init_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            OpsError::BadRequest("Missing init_key for supervisor to be saved".into())
        })?;
    if data.node_id.trim().is_empty() {
        return Err(OpsError::BadRequest("node_id is required".into()));
    }
    let (revision, pending) = records
        .iter()
        .find(|(_, r)| {
            !r.disabled
                && r.init_key
                    .as_deref()
                    .is_some_and(|k| key_matches(k, init_key))
        })
        .ok_or_else(|| OpsError::NotFound("Supervisor not found or disabled".into()))?;
    if let Some(base_url) = data.base_url.as_deref()
        && base_url.trim_end_matches('/') != pending.base_url.trim_end_matches('/')
    {
        return Err(OpsError::Refused {
            status: StatusCode::CONFLICT,
            message: format!("Supervisor base_url is inconsistent: {base_url}"),
        });
    }
    if pending.node_id.is_some() {
        return Ok(Save::Unchanged(Box::new(pending.clone())));
    }
    if records.iter().any(|(_, r)| {
        r.id != pending.id
            && r.node_id.as_deref() == Some(data.node_id.as_str())
            && r.base_url == pending.base_url
    }) {
        return Err(OpsError::Refused {
            status: StatusCode::CONFLICT,
            message: format!(
                "Supervisor node {} already exists at {}",
                data.node_id, pending.base_url
            ),
        });
    }
    if let Some(key) = data.public_key.as_deref() {
        public_jwk(key)
            .map_err(|_| OpsError::BadRequest("public_key must be an RSA public JWK".into()))?;
    }
    let mut saved = pending.clone();
    saved.node_id = Some(data.node_id.clone());
    saved.public_key = data.public_key.clone();
    saved.ident = Some(data.ident.clone());
    saved.url = data.url.clone();
    saved.backup_urls = data.backup_urls.clone();
    saved.local = data.local;
    if !data.ops_api.is_empty() {
        saved.ops_api = data.ops_api.clone();
    }
    saved.connected = true;
    saved.init_key = None;
    Ok(Save::Write(*revision, Box::new(saved)))
}

/// UtilMeta's answer to `POST /` and `PATCH /`: the node id with `GET /`'s fields.
fn saved_answer(state: &AppState, record: &SupervisorRecord) -> Response {
    let mut info = super::info_of(&state.ops.platform);
    info["node_id"] = json!(record.node_id);
    answer(info, 0)
}

fn store_failed(e: opsplane_store::StoreError) -> OpsError {
    OpsError::Store(e)
}

fn body_of<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, OpsError> {
    serde_json::from_slice(bytes)
        .map_err(|e| OpsError::BadRequest(format!("parse item: ['body'] failed: {e}")))
}

/// Saves a callback's data: [`decide_save`], written conditionally (a concurrent callback for
/// the same record: 409), then the resources are pushed in the background.
async fn save(state: &AppState, data: &SupervisorData) -> Result<SupervisorRecord, OpsError> {
    let store = state.recorder.store();
    let records = supervisors::list(&**store).await.map_err(store_failed)?;
    match decide_save(&records, data)? {
        Save::Unchanged(record) => Ok(*record),
        Save::Write(revision, record) => {
            match supervisors::put(&**store, &record, Expect::Revision(revision))
                .await
                .map_err(store_failed)?
            {
                Written::Done(_) => {}
                Written::Conflict(_) => {
                    return Err(OpsError::Refused {
                        status: StatusCode::CONFLICT,
                        message: "the supervisor changed meanwhile; try again".into(),
                    });
                }
            }
            tracing::info!(supervisor = %record.base_url, node_id = ?record.node_id, "ops: supervisor connected");
            let (state, id) = (state.clone(), record.id.clone());
            tokio::spawn(async move { sync_one(&state, &id).await });
            Ok(*record)
        }
    }
}

/// `POST <ops_api>/`: the platform's callback with the supervisor's data (open, as in UtilMeta;
/// only a pending connect's `init_key` makes it write anything).
#[utoipa::path(post, path = "/ops", tag = "ops",
    request_body(content = SupervisorData, description = "the supervisor's data (UtilMeta's SupervisorData)", content_type = "application/json"),
    responses((status = 200, description = "saved: the node id with the ops API's info", body = schemas::SavedAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)),
    security(()))]
pub async fn callback(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let data: SupervisorData = body_of(&body)?;
    let record = save(&state, &data).await?;
    Ok(saved_answer(&state, &record))
}

/// The stored supervisor a platform caller's token belongs to (404 `supervisor_not_found`
/// for the local node, opsplane's own credentials and the flag-configured supervisor).
async fn caller_record(
    state: &AppState,
    caller: Option<&Caller>,
) -> Result<(u64, SupervisorRecord), OpsError> {
    let not_found = || OpsError::Coded {
        status: StatusCode::NOT_FOUND,
        state: "supervisor_not_found",
        message: "Supervisor not found".into(),
    };
    let Some(Caller::Token {
        supervisor: Some(id),
        ..
    }) = caller
    else {
        return Err(not_found());
    };
    supervisors::get(&**state.recorder.store(), id)
        .await
        .map_err(store_failed)?
        .ok_or_else(not_found)
}

/// `PATCH <ops_api>/` (`service.config`): the caller supervisor's settings.
#[utoipa::path(patch, path = "/ops", tag = "ops",
    request_body(content = SupervisorPatch, description = "what changes (UtilMeta's SupervisorPatch)", content_type = "application/json"),
    responses((status = 200, description = "changed: the node id with the ops API's info", body = schemas::SavedAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let patch: SupervisorPatch = body_of(&body)?;
    let (revision, mut record) = caller_record(&state, caller.as_deref()).await?;
    if record.node_id.as_deref() != Some(patch.node_id.as_str()) {
        return Err(OpsError::BadRequest(
            "Inconsistent supervisor node_id".into(),
        ));
    }
    if let Some(base_url) = &patch.base_url {
        state.ops.platform.outbound.check(base_url)?;
        record.base_url = base_url.clone();
    }
    if let Some(v) = patch.ident {
        record.ident = Some(v);
    }
    if let Some(v) = patch.url {
        record.url = Some(v);
    }
    if let Some(v) = patch.backup_urls {
        record.backup_urls = v;
    }
    if let Some(v) = patch.heartbeat_interval {
        record.heartbeat_interval = Some(v);
    }
    if let Some(v) = patch.disabled {
        record.disabled = v;
    }
    for (slot, value) in [
        (&mut record.settings, patch.settings),
        (&mut record.alert_settings, patch.alert_settings),
        (&mut record.task_settings, patch.task_settings),
        (&mut record.aggregate_settings, patch.aggregate_settings),
    ] {
        if let Some(value) = value {
            *slot = value;
        }
    }
    match supervisors::put(
        &**state.recorder.store(),
        &record,
        Expect::Revision(revision),
    )
    .await
    .map_err(store_failed)?
    {
        Written::Done(_) => Ok(saved_answer(&state, &record)),
        Written::Conflict(_) => Err(OpsError::Refused {
            status: StatusCode::CONFLICT,
            message: "the supervisor changed meanwhile; try again".into(),
        }),
    }
}

/// `DELETE <ops_api>/` (`service.delete`): the caller supervisor is removed; answers `1`.
#[utoipa::path(delete, path = "/ops", tag = "ops",
    responses((status = 200, description = "removed: 1", body = schemas::CountAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, OpsError> {
    let (revision, record) = caller_record(&state, caller.as_deref()).await?;
    if record.init_key.is_some() {
        return Err(OpsError::Coded {
            status: StatusCode::BAD_REQUEST,
            state: "delete_failed",
            message: "the supervisor is still pending".into(),
        });
    }
    match supervisors::remove(
        &**state.recorder.store(),
        &record.id,
        Expect::Revision(revision),
    )
    .await
    .map_err(store_failed)?
    {
        Written::Done(_) => {
            tracing::info!(supervisor = %record.base_url, node_id = ?record.node_id, "ops: supervisor deleted");
            Ok(answer(1, 0))
        }
        Written::Conflict(_) => Err(OpsError::Coded {
            status: StatusCode::BAD_REQUEST,
            state: "delete_failed",
            message: "the supervisor changed meanwhile; try again".into(),
        }),
    }
}

/// The node's metadata (§8 `metadata`, also the add_node body).
pub fn metadata(state: &AppState) -> Value {
    let location = &state.ops.location;
    json!({
        "ops_api": location.ops_api,
        "name": state.ops.platform.service,
        "base_url": location.base_url,
        "title": state.ops.platform.service,
        "description": "opsplane: an operations plane for Kubernetes and Linux hosts",
        "version": env!("CARGO_PKG_VERSION"),
        "spec_version": SPEC_VERSION,
        "production": !super::platform::is_localhost(&location.ops_api),
        "language": "rust",
        "language_version": "",
        "utilmeta_version": UTILMETA_VERSION,
    })
}

fn client(outbound: &Outbound) -> Result<reqwest::Client, OpsError> {
    reqwest::Client::builder()
        .user_agent(concat!("opsplane-operator/", env!("CARGO_PKG_VERSION")))
        .timeout(outbound.timeout)
        .connect_timeout(outbound.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OpsError::BadRequest(format!("no HTTP client: {e}")))
}

/// Why an outbound call failed (logged, the next round tries again).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not sent, or no answer.
    #[error("{0}")]
    Transport(String),
    /// The supervisor answered with an error.
    #[error("the supervisor answered {status}: {body}")]
    Status {
        /// Its status.
        status: u16,
        /// Its body (cut).
        body: String,
    },
}

/// One encrypted call: `POST <url>` with the JWE of `payload` to `jwk`, and `headers`; the
/// answer's JSON (`Null` when it is not JSON).
async fn call(
    http: &reqwest::Client,
    url: &str,
    jwk: &str,
    headers: &[(&str, &str)],
    payload: &Value,
) -> Result<Value, CallError> {
    let jwe = encrypt(jwk, payload.to_string().as_bytes())
        .map_err(|e| CallError::Transport(e.to_string()))?;
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(jwe);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request
        .send()
        .await
        .map_err(|e| CallError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| CallError::Transport(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(CallError::Status {
            status,
            body: text.chars().take(200).collect(),
        });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST <ops_api>/connect` (opsplane admin; UtilMeta's `meta connect --key --to`): stores a
/// pending supervisor and sends add_node to it.
#[utoipa::path(post, path = "/ops/connect", tag = "ops",
    request_body(content = ConnectBody, description = "the platform's access key and the supervisor URL", content_type = "application/json"),
    responses((status = 200, description = "the pending (or, when the supervisor answered with its data, connected) supervisor", body = schemas::ConnectAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn connect(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let body: ConnectBody = body_of(&body)?;
    let outbound = &state.ops.platform.outbound;
    let url = outbound.check(&body.to)?;
    let key = public_jwk(&body.key)?;
    let base_url = url.as_str().trim_end_matches('/').to_owned();
    let store = state.recorder.store();
    let id = format!("{:016x}", rand::random::<u64>());
    let record = SupervisorRecord {
        id: id.clone(),
        service: state.ops.platform.service.clone(),
        base_url: base_url.clone(),
        ops_api: state.ops.location.ops_api.clone(),
        init_key: Some(key.clone()),
        created_time: jiff::Timestamp::now().as_second(),
        ..SupervisorRecord::default()
    };
    if let Written::Conflict(_) = supervisors::put(&**store, &record, Expect::Absent)
        .await
        .map_err(store_failed)?
    {
        return Err(OpsError::Refused {
            status: StatusCode::CONFLICT,
            message: "a supervisor record with this id exists; try again".into(),
        });
    }
    let http = client(outbound)?;
    let answered = call(
        &http,
        &join(&base_url, ""),
        &key,
        &[("x-access-key", &key)],
        &metadata(&state),
    )
    .await;
    let answered = match answered {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(supervisor = %base_url, error = %e, "ops: add_node failed; the pending connect is removed");
            let _ = supervisors::remove(&**store, &id, Expect::Any).await;
            return Err(OpsError::Coded {
                status: StatusCode::BAD_GATEWAY,
                state: "connect_failed",
                message: format!("the supervisor did not take the node: {e}"),
            });
        }
    };
    // The platform may answer with the supervisor's data instead of calling back.
    let result = &answered["result"];
    let mut connected = None;
    if result["node_id"].is_string() {
        let mut data: SupervisorData = serde_json::from_value(result.clone()).unwrap_or_default();
        data.init_key = Some(key);
        match save(&state, &data).await {
            Ok(saved) => connected = Some(saved),
            Err(e) => {
                tracing::warn!(supervisor = %base_url, error = %e, "ops: the supervisor's answer could not be saved")
            }
        }
    }
    let current = match connected {
        Some(r) => r,
        None => supervisors::get(&**store, &id)
            .await
            .map_err(store_failed)?
            .map(|(_, r)| r)
            .unwrap_or(record),
    };
    Ok(answer(public_view(&current), 0))
}

/// A record as an API returns it: without the access key and the public key.
pub fn public_view(record: &SupervisorRecord) -> Value {
    json!({
        "id": record.id, "base_url": record.base_url, "ops_api": record.ops_api,
        "node_id": record.node_id, "connected": record.connected,
        "pending": record.init_key.is_some(), "url": record.url,
    })
}

/// The instance this process is (§8 `instances`).
fn instances(state: &AppState) -> Value {
    let mut own = own_instance(state);
    own["address"] = json!(own_address(state));
    for (key, value) in [
        ("description", json!("")),
        ("deprecated", json!(false)),
        ("tags", json!([])),
        ("metadata", json!({})),
        (
            "server",
            json!({"hostname": &*state.hostname, "system": std::env::consts::OS,
                   "platform": {"machine": std::env::consts::ARCH}}),
        ),
    ] {
        own[key] = value;
    }
    json!([own])
}

/// What this process is as a UtilMeta instance (its backend, language and versions): the keys
/// the resources push and `/servers/instances` share.
pub fn own_instance(state: &AppState) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"), "asynchronous": true,
        "production": !super::platform::is_localhost(&state.ops.location.ops_api),
        "language": "rust", "utilmeta_version": UTILMETA_VERSION, "language_version": "",
        "backend": "axum", "backend_version": "",
    })
}

/// This process's address as an instance ident (`host:port` of `base_url`, as UtilMeta's).
pub fn own_address(state: &AppState) -> String {
    url::Url::parse(&state.ops.location.base_url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_default()
}

/// The resources push's body (§8).
pub fn resources(state: &AppState) -> Value {
    let openapi: Value = serde_json::from_str(&state.ops.platform_document).unwrap_or(Value::Null);
    json!({
        "metadata": metadata(state),
        "openapi": openapi,
        "tables": super::data::table_list(state),
        "instances": instances(state),
        "databases": [],
        "caches": [],
        "tasks": [],
    })
}

/// The resources push's digest: SHA-256 (hex) of its JSON text (serde_json writes object keys
/// sorted, so equal resources give equal digests).
pub fn resources_digest(resources: &Value) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(resources.to_string().as_bytes()))
}

/// Whether the resources must be pushed: their digest is neither the one the supervisor last
/// acknowledged nor the etag it answered (UtilMeta: "an etag equal to the local digest skips it").
pub fn resources_changed(record: &SupervisorRecord, digest: &str) -> bool {
    record.resources_digest.as_deref() != Some(digest)
        && record.resources_etag.as_deref() != Some(digest)
}

/// The platform's ids in its answer to the resources push (`result.resources[]`: `type`,
/// `ident`, `remote_id` a string or a number); entries without them are left out.
pub fn remote_ids_of(result: &Value) -> Vec<RemoteId> {
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    result["resources"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    Some(RemoteId {
                        resource_type: text(&r["type"])?,
                        ident: text(&r["ident"])?,
                        remote_id: text(&r["remote_id"])?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The key of a touched resource (`type|name` in the registry) in a report's `endpoints`: the
/// platform's `remote_id` of the endpoint whose ident is `type/name` (or just `name`), else
/// `type/name` itself.
pub fn endpoint_key(registry_name: &str, remote: &[RemoteId]) -> String {
    let (kind, name) = split_resource_key(registry_name);
    let local = format!("{kind}/{name}");
    remote
        .iter()
        .find(|r| r.resource_type == "endpoint" && (r.ident == local || r.ident == name))
        .map(|r| r.remote_id.clone())
        .unwrap_or(local)
}

fn report_time(from: i64) -> String {
    jiff::Timestamp::from_second(from)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m-%d %H:%M:%S+00:00")
                .to_string()
        })
        .unwrap_or_default()
}

/// One report UtilMeta's platform takes: an hour's (layer 0) or a UTC day's (layer 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// The hour starting at (epoch seconds).
    Hour(i64),
    /// The UTC day starting at (epoch seconds).
    Day(i64),
}

impl Due {
    /// Where it starts and how long it is (seconds).
    pub fn span(self) -> (i64, i64) {
        match self {
            Due::Hour(h) => (h, 3600),
            Due::Day(d) => (d, 86_400),
        }
    }
}

/// The registry names a round's reports read their folds' ids by: loaded once a round (the
/// due spans are past, so their labels and resources are all registered by then).
pub struct Names {
    /// Label names by id.
    pub labels: HashMap<u32, String>,
    /// Resource keys by id.
    pub resources: HashMap<u32, String>,
}

impl Names {
    /// Both from the store's registries.
    pub async fn load(store: &dyn Store) -> Result<Names, opsplane_store::StoreError> {
        Ok(Names {
            labels: aggregate::names(store, Kind::Label).await?,
            resources: aggregate::names(store, Kind::Resource).await?,
        })
    }
}

/// The report of `due` (§7; `platform-bound.POST_report_probe.json`), from the ingestion
/// endpoint's minute buckets ([`aggregate::fold`]): the service's statistics and each touched
/// resource's under `endpoints` ([`endpoint_key`]). An hour carries the full layer-0
/// statistics (the user agent distributions only for the service, as UtilMeta's), a day only
/// the percentiles, standard deviation, `uv` and `ip`.
pub async fn report(
    store: &dyn Store,
    due: Due,
    remote: &[RemoteId],
    names: &Names,
) -> Result<Value, opsplane_store::StoreError> {
    let (from, seconds) = due.span();
    let folded = aggregate::fold(store, from, from + seconds, aggregate::REPORT_METRICS).await?;
    let (labels, resources) = (&names.labels, &names.resources);
    let render = |stats: &aggregate::Stats, service: bool| match due {
        Due::Hour(_) => json!(aggregate::hourly(stats, labels, seconds, service)),
        Due::Day(_) => json!(aggregate::daily(stats, labels)),
    };
    let mut endpoints = serde_json::Map::new();
    for (id, stats) in &folded.resources {
        if let Some(name) = resources.get(id) {
            endpoints.insert(endpoint_key(name, remote), render(stats, false));
        }
    }
    let layer = match due {
        Due::Hour(_) => 0,
        Due::Day(_) => 1,
    };
    Ok(json!({
        "time": report_time(from), "layer": layer, "interval": seconds,
        "service": render(&folded.service, true),
        "endpoints": endpoints,
    }))
}

/// The hours a record has still to report at `now`: every complete hour after its last
/// reported one, at most `limit`, oldest first; a record never reported starts with the hour
/// before `now`'s.
pub fn hours_due(reported_until: Option<i64>, now: i64, limit: usize) -> Vec<i64> {
    let current = now.div_euclid(3600) * 3600;
    let first = match reported_until {
        Some(last) => last + 3600,
        None => current - 3600,
    };
    // Hours more than a day old are not sent any more (the minute buckets are gone by then).
    let first = first.max(current - 24 * 3600);
    (0..)
        .map(|i| first + i * 3600)
        .take_while(|h| *h < current)
        .take(limit)
        .collect()
}

const DAY: i64 = 86_400;

/// Every report a record has still to send at `now`, oldest first: the hours of
/// [`hours_due`], each UTC day right after its last hour (23:00) when that day's daily report
/// is not acknowledged yet, and before them the days whose last hour was acknowledged but
/// whose daily report was not (a batch split between the two; only once a first daily report
/// was acknowledged, so a new record starts with the first day it reports the end of).
pub fn reports_due(
    reported_until: Option<i64>,
    daily_until: Option<i64>,
    now: i64,
    limit: usize,
) -> Vec<Due> {
    let mut due = Vec::new();
    if let (Some(hour), Some(day)) = (reported_until, daily_until) {
        // Days whose minute buckets are still kept (two days).
        let oldest = (now.div_euclid(DAY) - 2) * DAY;
        let mut next = (day + DAY).max(oldest);
        while next + DAY - 3600 <= hour {
            due.push(Due::Day(next));
            next += DAY;
        }
    }
    for hour in hours_due(reported_until, now, limit) {
        due.push(Due::Hour(hour));
        let end = hour + 3600;
        if end.rem_euclid(DAY) == 0 && daily_until.is_none_or(|d| d < end - DAY) {
            due.push(Due::Day(end - DAY));
        }
    }
    due
}

/// Most reports one `POST <supervisor>/report/batch` carries (UtilMeta's).
pub const BATCH: usize = 50;

/// One call of a round's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportCall<'a> {
    /// The one due report, to `POST <supervisor>/report`.
    Single(&'a Due),
    /// Several, as a JSON list to `POST <supervisor>/report/batch`.
    Batch(&'a [Due]),
}

impl ReportCall<'_> {
    /// The supervisor's path it goes to.
    pub fn path(&self) -> &'static str {
        match self {
            ReportCall::Single(_) => "report",
            ReportCall::Batch(_) => "report/batch",
        }
    }

    /// The reports it carries.
    pub fn dues(&self) -> &[Due] {
        match self {
            ReportCall::Single(d) => std::slice::from_ref(*d),
            ReportCall::Batch(d) => d,
        }
    }
}

/// The calls that send `due`: one report alone to `report`, more in batches of at most
/// [`BATCH`] to `report/batch` (UtilMeta's rule), oldest first.
pub fn sends(due: &[Due]) -> Vec<ReportCall<'_>> {
    match due {
        [] => Vec::new(),
        [one] => vec![ReportCall::Single(one)],
        _ => due.chunks(BATCH).map(ReportCall::Batch).collect(),
    }
}

/// One round at a time in this process: the push right after a save and the background round
/// would otherwise both see the same hour as due and send it twice.
static SYNCING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// "Now" for the rounds: `--ops-clock-file`'s epoch seconds when given (tests), else the clock.
fn round_now(outbound: &Outbound) -> i64 {
    outbound
        .clock_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_second())
}

/// One round for the record `id`: the resources when their digest changed since the last
/// acknowledged push, then the due reports (one to `/report`, more in batches to
/// `/report/batch`).
async fn sync_one(state: &AppState, id: &str) {
    let _one_at_a_time = SYNCING.lock().await;
    let store = state.recorder.store();
    let Ok(Some((_, record))) = supervisors::get(&**store, id).await else {
        return;
    };
    let outbound = state.ops.platform.outbound.clone();
    let (Some(node_id), Some(key), true, false, false) = (
        record.node_id.clone(),
        record.public_key.clone(),
        record.connected,
        record.disabled,
        record.local,
    ) else {
        return;
    };
    if let Err(e) = outbound.check(&record.base_url) {
        tracing::warn!(supervisor = %record.base_url, error = %e, "ops: not calling an untrusted supervisor");
        return;
    }
    let Ok(http) = client(&outbound) else {
        return;
    };
    let headers = [
        ("x-node-id", node_id.as_str()),
        ("x-node-key", key.as_str()),
    ];
    let mut remote = record.remote_ids.clone();
    let payload = resources(state);
    let digest = resources_digest(&payload);
    if resources_changed(&record, &digest) {
        let url = join(&record.base_url, "resources");
        match call(&http, &url, &key, &headers, &payload).await {
            Ok(answered) => {
                let result = &answered["result"];
                let etag = result["resources_etag"].as_str().map(str::to_owned);
                let console = result["url"].as_str().map(str::to_owned);
                let ids = remote_ids_of(result);
                if result["resources"].is_array() {
                    remote = ids.clone();
                }
                update(store, id, |r| {
                    r.resources_etag = Some(etag.clone().unwrap_or_else(|| "sent".into()));
                    r.resources_digest = Some(digest.clone());
                    if result["resources"].is_array() {
                        r.remote_ids = ids.clone();
                    }
                    if console.is_some() {
                        r.url = console.clone();
                    }
                })
                .await;
                tracing::info!(supervisor = %record.base_url, remote_ids = remote.len(), "ops: resources sent");
            }
            // Not modified: the platform has these resources.
            Err(CallError::Status { status: 304, .. }) => {
                update(store, id, |r| r.resources_digest = Some(digest.clone())).await;
            }
            Err(e) => {
                tracing::warn!(supervisor = %record.base_url, error = %e, "ops: sending the resources failed; tried again next round");
                return;
            }
        }
    }
    let now = round_now(&outbound);
    let due = reports_due(record.reported_until, record.daily_reported_until, now, 24);
    if due.is_empty() {
        return;
    }
    let names = match Names::load(&**store).await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "ops: the aggregate could not be read");
            return;
        }
    };
    let mut reports = Vec::with_capacity(due.len());
    for d in &due {
        match report(&**store, *d, &remote, &names).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                tracing::warn!(error = %e, "ops: the aggregate could not be read");
                return;
            }
        }
    }
    let mut offset = 0;
    for send in sends(&due) {
        let dues = send.dues();
        let bodies = &reports[offset..offset + dues.len()];
        offset += dues.len();
        let body = match send {
            ReportCall::Single(_) => bodies[0].clone(),
            ReportCall::Batch(_) => Value::Array(bodies.to_vec()),
        };
        let url = join(&record.base_url, send.path());
        let sent = call(&http, &url, &key, &headers, &body).await;
        if let Err(e) = sent {
            tracing::warn!(supervisor = %record.base_url, error = %e, reports = dues.len(), "ops: the report failed; tried again next round");
            return;
        }
        // The newest hour and day the platform took.
        let (mut hour, mut day) = (None, None);
        for due in dues {
            match due {
                Due::Hour(h) => hour = hour.max(Some(*h)),
                Due::Day(d) => day = day.max(Some(*d)),
            }
        }
        update(store, id, |r| {
            if hour.is_some() {
                r.reported_until = r.reported_until.max(hour);
            }
            if day.is_some() {
                r.daily_reported_until = r.daily_reported_until.max(day);
            }
        })
        .await;
    }
}

/// Applies `change` to the record `id` (conditionally; a few attempts, then left to the next
/// round).
async fn update(store: &Arc<dyn Store>, id: &str, change: impl Fn(&mut SupervisorRecord)) {
    for _ in 0..4 {
        let Ok(Some((revision, mut record))) = supervisors::get(&**store, id).await else {
            return;
        };
        change(&mut record);
        if let Ok(Written::Done(_)) =
            supervisors::put(&**store, &record, Expect::Revision(revision)).await
        {
            return;
        }
    }
}

/// Most expired token records one round removes.
pub const PRUNE_PER_ROUND: usize = 1_000;

/// The ops API's background rounds: every `--ops-report-interval`, expired token records are
/// pruned (at most [`PRUNE_PER_ROUND`]) and each connected supervisor gets what it has not
/// acknowledged yet. Runs until the process ends.
pub async fn run_platform_calls(state: AppState) {
    let interval = state
        .ops
        .platform
        .outbound
        .interval
        .max(Duration::from_millis(200));
    let book = super::tokens::TokenBook::new(state.recorder.store().clone());
    loop {
        tokio::time::sleep(interval).await;
        match book
            .prune(jiff::Timestamp::now().as_second(), PRUNE_PER_ROUND)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "ops: expired token records pruned"),
            Err(e) => tracing::warn!(error = %e, "ops: pruning token records failed"),
        }
        let Ok(records) = supervisors::list(&**state.recorder.store()).await else {
            continue;
        };
        for (_, record) in records {
            if record.connected && !record.disabled {
                sync_one(&state, &record.id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, key: Option<&str>, node: Option<&str>) -> SupervisorRecord {
        SupervisorRecord {
            id: id.into(),
            base_url: "https://api.utilmeta.com/spv".into(),
            init_key: key.map(str::to_owned),
            node_id: node.map(str::to_owned),
            ..SupervisorRecord::default()
        }
    }

    fn data(key: Option<&str>) -> SupervisorData {
        SupervisorData {
            node_id: "n1".into(),
            ops_api: "https://x/ops".into(),
            ident: "spv".into(),
            init_key: key.map(str::to_owned),
            ..SupervisorData::default()
        }
    }

    fn status(e: OpsError) -> u16 {
        use axum::response::IntoResponse;
        e.into_response().status().as_u16()
    }

    #[test]
    fn a_callback_is_saved_only_into_the_pending_record_of_its_init_key() {
        let records = vec![
            (3, record("a", Some("K1"), None)),
            (4, record("b", None, Some("n9"))),
        ];
        assert_eq!(status(decide_save(&records, &data(None)).unwrap_err()), 400);
        assert_eq!(
            status(decide_save(&records, &data(Some(""))).unwrap_err()),
            400
        );
        assert_eq!(
            status(decide_save(&records, &data(Some("K2"))).unwrap_err()),
            404
        );
        let Save::Write(rev, saved) = decide_save(&records, &data(Some("K1"))).unwrap() else {
            panic!("not written")
        };
        assert_eq!(rev, 3);
        assert_eq!(saved.node_id.as_deref(), Some("n1"));
        assert!(saved.connected && saved.init_key.is_none());
        let mut other = data(Some("K1"));
        other.base_url = Some("https://elsewhere.utilmeta.com/spv".into());
        assert_eq!(status(decide_save(&records, &other).unwrap_err()), 409);
        let mut taken = data(Some("K1"));
        taken.node_id = "n9".into();
        assert_eq!(status(decide_save(&records, &taken).unwrap_err()), 409);
        let mut disabled = records.clone();
        disabled[0].1.disabled = true;
        assert_eq!(
            status(decide_save(&disabled, &data(Some("K1"))).unwrap_err()),
            404
        );
        let mut bad_key = data(Some("K1"));
        bad_key.public_key = Some("not a jwk".into());
        assert_eq!(status(decide_save(&records, &bad_key).unwrap_err()), 400);
    }

    #[test]
    fn outbound_calls_go_only_to_trusted_hosts_over_https_unless_insecure() {
        let mut o = Outbound {
            trusted_hosts: vec!["utilmeta.com".into(), "127.0.0.1".into()],
            ..Outbound::default()
        };
        assert!(o.check("https://api.utilmeta.com/spv").is_ok());
        assert!(o.check("https://utilmeta.com/spv").is_ok());
        assert!(o.check("https://evilutilmeta.com/spv").is_err());
        assert!(o.check("https://utilmeta.com.evil.org/").is_err());
        assert!(o.check("http://127.0.0.1:9/spv").is_err());
        assert!(o.check("ftp://127.0.0.1/").is_err());
        assert!(o.check("not a url").is_err());
        o.insecure = true;
        assert!(o.check("http://127.0.0.1:9/spv").is_ok());
    }

    #[test]
    fn hours_due_follow_the_last_reported_hour_and_stop_before_the_current_one() {
        // 20 minutes into an hour (1_800_000_000 is a whole hour).
        let now = 1_800_000_000 + 1200;
        let current = now - 1200;
        assert_eq!(hours_due(None, now, 24), vec![current - 3600]);
        assert_eq!(hours_due(Some(current - 3600), now, 24), Vec::<i64>::new());
        assert_eq!(
            hours_due(Some(current - 4 * 3600), now, 2),
            vec![current - 3 * 3600, current - 2 * 3600]
        );
        assert_eq!(hours_due(Some(0), now, 100).len(), 24, "a day at most");
    }

    #[test]
    fn a_day_is_due_right_after_its_last_hour_and_split_batches_catch_it_up() {
        let midnight = 1_800_000_000 / DAY * DAY;
        // 00:20: the last hour of yesterday, then yesterday.
        let now = midnight + 1200;
        assert_eq!(
            reports_due(Some(midnight - 2 * 3600), None, now, 24),
            vec![Due::Hour(midnight - 3600), Due::Day(midnight - DAY)]
        );
        // Already sent: only the hour.
        assert_eq!(
            reports_due(Some(midnight - 2 * 3600), Some(midnight - DAY), now, 24),
            vec![Due::Hour(midnight - 3600)]
        );
        // The hour was acknowledged, the day not (another batch): the day first.
        assert_eq!(
            reports_due(
                Some(midnight - 3600),
                Some(midnight - 2 * DAY),
                now + 3600,
                24
            ),
            vec![Due::Day(midnight - DAY), Due::Hour(midnight)]
        );
        // Mid-day: no day.
        assert_eq!(
            reports_due(
                Some(midnight + 3600),
                Some(midnight - DAY),
                now + 3 * 3600,
                24
            ),
            vec![Due::Hour(midnight + 2 * 3600)]
        );
        assert_eq!(Due::Day(midnight).span(), (midnight, DAY));
    }

    #[test]
    fn one_report_goes_alone_and_more_in_batches_of_fifty() {
        let hours: Vec<Due> = (0..120).map(|h| Due::Hour(h * 3600)).collect();
        assert!(sends(&[]).is_empty());
        assert_eq!(sends(&hours[..1]), vec![ReportCall::Single(&hours[0])]);
        assert_eq!(sends(&hours[..1])[0].path(), "report");
        assert_eq!(sends(&hours[..2]), vec![ReportCall::Batch(&hours[..2])]);
        let batches = sends(&hours);
        let sizes: Vec<(&str, usize)> =
            batches.iter().map(|c| (c.path(), c.dues().len())).collect();
        assert_eq!(
            sizes,
            [
                ("report/batch", 50),
                ("report/batch", 50),
                ("report/batch", 20)
            ]
        );
        assert_eq!(batches[2].dues()[0], Due::Hour(100 * 3600), "oldest first");
    }

    #[test]
    fn the_platforms_resources_answer_gives_remote_ids_and_endpoint_keys() {
        let answer = json!({"url": "x", "resources_etag": "e", "resources": [
            {"remote_id": 17, "type": "server", "ident": "node-a", "route": "server/node-a"},
            {"remote_id": "ep-1", "type": "endpoint", "ident": "url//cart"},
            {"remote_id": "ep-2", "type": "endpoint", "ident": "roads"},
            {"type": "endpoint", "ident": "no-id"},
        ]});
        let ids = remote_ids_of(&answer);
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0].remote_id, "17");
        assert_eq!(endpoint_key("url|/cart", &ids), "ep-1");
        assert_eq!(endpoint_key("layer|roads", &ids), "ep-2");
        assert_eq!(endpoint_key("url|/other", &ids), "url//other");
        assert!(remote_ids_of(&json!({})).is_empty());
    }

    #[test]
    fn resources_are_pushed_again_only_when_their_digest_changes() {
        let payload = json!({"b": [1, 2], "a": {"y": 1, "x": 2}});
        let digest = resources_digest(&payload);
        assert_eq!(digest.len(), 64);
        assert_eq!(
            digest,
            resources_digest(&json!({"a": {"x": 2, "y": 1}, "b": [1, 2]}))
        );
        let mut r = SupervisorRecord::default();
        assert!(resources_changed(&r, &digest), "never pushed");
        r.resources_digest = Some(digest.clone());
        assert!(!resources_changed(&r, &digest));
        assert!(resources_changed(&r, &resources_digest(&json!({"b": []}))));
        let etag_only = SupervisorRecord {
            resources_etag: Some(digest.clone()),
            ..SupervisorRecord::default()
        };
        assert!(
            !resources_changed(&etag_only, &digest),
            "the platform's etag is our digest"
        );
    }

    /// An RSA key pair from the `openssl` CLI: the `rsa` private key and its public JWK.
    fn jwk_pair() -> (rsa::PrivateKey, String) {
        use base64::Engine as _;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let (private, _) = super::super::platform::tests::key_pair();
        let private = rsa::PrivateKey::from_pkcs8_pem(std::str::from_utf8(&private).unwrap())
            .expect("a PKCS#8 PEM key");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({"kty": "RSA", "n": b64.encode(private.n_bytes()),
                         "e": b64.encode(private.e_bytes())});
        (private, jwk.to_string())
    }

    /// The compact JWE `jwe` opened with `private` by the receiving side's steps (RFC 7516
    /// §5.2, RFC 7518 §5.2.2.2): the key unwrapped, the tag checked, then the AES decryption.
    fn open(private: &rsa::PrivateKey, jwe: &str) -> Result<Vec<u8>, String> {
        use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = jwe.split('.').collect();
        assert_eq!(parts.len(), 5, "a compact JWE has five parts");
        let part = |i: usize| b64.decode(parts[i]).unwrap();
        let cek = private
            .oaep_decrypt_with_rng::<sha2::Sha256, _>(&mut getrandom::SysRng, &part(1))
            .map_err(|e| format!("unwrap: {e}"))?;
        assert_eq!(cek.len(), 64);
        let (iv, ciphertext) = (part(2), part(3));
        let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(&cek[..32]).unwrap();
        mac.update(parts[0].as_bytes());
        mac.update(&iv);
        mac.update(&ciphertext);
        mac.update(&(parts[0].len() as u64 * 8).to_be_bytes());
        mac.verify_truncated_left(&part(4))
            .map_err(|_| "the tag is wrong".to_owned())?;
        assert_eq!(part(4).len(), 32, "the A256CBC-HS512 tag is 32 bytes");
        cbc::Decryptor::<aes::Aes256>::new_from_slices(&cek[32..], &iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(&ciphertext)
            .map_err(|e| format!("padding: {e}"))
    }

    #[test]
    fn a_jwe_opens_with_the_private_key_and_its_tag_guards_every_part() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (private, jwk) = jwk_pair();
        // Empty, one block less a byte, exactly one block (a whole padding block follows), longer.
        for payload in [
            &b""[..],
            &[7u8; 15],
            &[8u8; 16],
            br#"{"node":"n1","x":[1,2,3]}"#,
        ] {
            let jwe = encrypt(&jwk, payload).unwrap();
            let parts: Vec<&str> = jwe.split('.').collect();
            let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(
                header,
                json!({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512"})
            );
            assert_eq!(
                b64.decode(parts[1]).unwrap().len(),
                256,
                "a 2048-bit key's block"
            );
            assert_eq!(b64.decode(parts[2]).unwrap().len(), 16);
            assert_eq!(
                b64.decode(parts[3]).unwrap().len(),
                (payload.len() / 16 + 1) * 16
            );
            assert_eq!(open(&private, &jwe).unwrap(), payload);
            // MGF1 is SHA-256 as RSA-OAEP-256 says, not SHA-1 (RSA-OAEP's).
            let sha1_mgf = rsa::Oaep::<sha2::Sha256, sha1::Sha1>::new_with_mgf_hash();
            assert!(
                private
                    .decrypt(sha1_mgf, &b64.decode(parts[1]).unwrap())
                    .is_err()
            );
            // A changed header, IV or ciphertext fails the tag.
            for i in [0, 2, 3] {
                let mut bytes = b64.decode(parts[i]).unwrap();
                bytes[0] ^= 1;
                let mut changed = parts.clone();
                let text = b64.encode(&bytes);
                changed[i] = &text;
                assert_eq!(
                    open(&private, &changed.join(".")).unwrap_err(),
                    "the tag is wrong",
                    "part {i}"
                );
            }
        }
        // A fresh key and IV each time.
        let (a, b) = (encrypt(&jwk, b"x").unwrap(), encrypt(&jwk, b"x").unwrap());
        assert_ne!(a.split('.').nth(1), b.split('.').nth(1));
        assert_ne!(a.split('.').nth(2), b.split('.').nth(2));
        // Another key cannot open it.
        let (other, _) = jwk_pair();
        assert!(open(&other, &a).unwrap_err().starts_with("unwrap"));
    }

    #[test]
    fn a_jwk_with_a_bad_n_or_e_is_a_clear_error() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (private, jwk) = jwk_pair();
        let good: Value = serde_json::from_str(&jwk).unwrap();
        let mut n = b64.decode(good["n"].as_str().unwrap()).unwrap();
        // With a leading zero byte, n is the same number.
        let mut padded = good.clone();
        padded["n"] = json!(b64.encode([&[0u8][..], &n].concat()));
        let jwe = encrypt(&padded.to_string(), b"p").unwrap();
        assert_eq!(open(&private, &jwe).unwrap(), b"p");
        let even = {
            *n.last_mut().unwrap() &= 0xfe;
            b64.encode(&n)
        };
        let cases = [
            ("n", json!(null)),
            ("n", json!(12)),
            ("n", json!("")),
            ("n", json!("AAAA")),
            ("n", json!("%%%")),
            ("n", json!("AQAB")),
            ("n", json!(even)),
            ("n", json!(b64.encode(vec![0xff; 1025]))),
            ("e", json!(null)),
            ("e", json!("")),
            ("e", json!("AA")),
            ("e", json!("AQ")),
            ("e", json!("Ag")),
            ("e", json!(b64.encode([0xff; 300]))),
        ];
        for (name, value) in cases {
            let mut key = good.clone();
            key[name] = value.clone();
            let Err(OpsError::BadRequest(message)) = encrypt(&key.to_string(), b"p") else {
                panic!("{name} = {value}: not a 400");
            };
            assert!(
                message.starts_with("the key cannot encrypt: "),
                "{name} = {value}: {message}"
            );
        }
        assert!(matches!(
            encrypt("not json", b"p"),
            Err(OpsError::BadRequest(_))
        ));
    }

    #[test]
    fn access_keys_are_public_rsa_jwks_given_as_json_or_base64() {
        use base64::Engine as _;
        let jwk = r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#;
        assert_eq!(public_jwk(jwk).unwrap(), jwk);
        let b64 = base64::engine::general_purpose::STANDARD.encode(jwk);
        assert_eq!(public_jwk(&b64).unwrap(), jwk);
        assert!(public_jwk(r#"{"kty":"EC","n":"a","e":"b"}"#).is_err());
        assert!(public_jwk(r#"{"kty":"RSA","n":"a","e":"b","d":"c"}"#).is_err());
        assert!(public_jwk("%%%").is_err());
        assert_eq!(join("https://x/spv/", ""), "https://x/spv/");
        assert_eq!(
            join("https://x/spv", "resources"),
            "https://x/spv/resources"
        );
    }
}
