//! Client-side validation of MonitoredService specs, mirroring the CRD schema's patterns and CEL
//! rules, for standalone mode where no API server checks manifests. The e2e suite applies the
//! same bad objects to a real API server, so both sides are held to the same cases.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::MonitoredServiceSpec;
use crate::duration::parse_duration;

/// A field that failed validation, named by its path (`spec.checkInterval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field from the object's root.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn check_duration(
    field: &str,
    text: &str,
    min: Duration,
    max: Option<Duration>,
    errors: &mut Vec<FieldError>,
) -> Option<Duration> {
    match parse_duration(text) {
        Err(e) => {
            errors.push(err(field, e.to_string()));
            None
        }
        Ok(d) if d < min => {
            errors.push(err(
                field,
                format!("must be at least {}ms, got {text:?}", min.as_millis()),
            ));
            None
        }
        Ok(d) if max.is_some_and(|m| d > m) => {
            errors.push(err(field, format!("must be at most 24h, got {text:?}")));
            None
        }
        Ok(d) => Some(d),
    }
}

fn valid_url(url: &str, schemes: &[&str]) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    schemes.contains(&scheme)
        && !rest.is_empty()
        && !rest.starts_with(['/', '?', '#'])
        && !url.chars().any(char::is_whitespace)
}

/// Whether a `tcp://` url names a host and a port 1-65535 (`tcp://db:5432`, `tcp://[::1]:80`,
/// a trailing `/` allowed), as the CRD's rule on `spec.url` holds it.
fn tcp_url_has_port(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("tcp://") else {
        return true;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let port_ok = !port.is_empty()
        && !port.starts_with('0')
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    host_ok && port_ok
}

/// Whether `name` is a port name (an IANA service name): 1-15 lowercase letters, digits and
/// single inner hyphens, with at least one letter.
fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.bytes().any(|b| b.is_ascii_lowercase())
}

/// Checks a spec as the CRD schema would; returns every problem found, not only the first.
pub fn monitored_service_spec(spec: &MonitoredServiceSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let interval = check_duration(
        "spec.checkInterval",
        &spec.check_interval,
        Duration::from_secs(1),
        Some(Duration::from_secs(24 * 3600)),
        &mut errors,
    );
    // Only a written timeout is held to the interval: the default (the smaller of 5 s and the
    // interval, `MonitoredServiceSpec::timing`) fits any valid interval.
    let timeout = spec.timeout.as_deref().and_then(|text| {
        check_duration(
            "spec.timeout",
            text,
            Duration::from_millis(1),
            None,
            &mut errors,
        )
    });
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        errors.push(err(
            "spec.timeout",
            "must not be longer than spec.checkInterval",
        ));
    }
    match (&spec.url, &spec.service_ref) {
        (Some(_), Some(_)) | (None, None) => errors.push(err(
            "spec",
            "exactly one of spec.url or spec.serviceRef must be set",
        )),
        _ => {}
    }
    if let Some(url) = &spec.url {
        if !valid_url(url, &["http", "https", "tcp"]) {
            errors.push(err(
                "spec.url",
                format!("{url:?} is not an absolute http://, https:// or tcp:// address"),
            ));
        } else if !tcp_url_has_port(url) {
            errors.push(err(
                "spec.url",
                "a tcp:// url needs a host and a port 1-65535, like tcp://db.example:5432",
            ));
        } else if url.starts_with("tcp://") && spec.http.is_some() {
            errors.push(err(
                "spec.url",
                "is a tcp:// address, which cannot take spec.http; use an http(s):// url or tcp: {}",
            ));
        } else if !url.starts_with("tcp://") && spec.tcp.is_some() {
            errors.push(err(
                "spec.url",
                "spec.tcp needs spec.url of the form tcp://host:port",
            ));
        }
    }
    if spec.http.is_some() && spec.tcp.is_some() {
        errors.push(err(
            "spec",
            "spec.http and spec.tcp are mutually exclusive: a service is checked by HTTP or by TCP connect",
        ));
    }
    if let Some(http) = &spec.http
        && let Some(bad) = http
            .expected_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
    {
        errors.push(err(
            "spec.http.expectedStatus",
            format!("{bad} is not an HTTP status code (100-599)"),
        ));
    }
    if let Some(base) = &spec.base_url
        && !valid_url(base, &["http", "https"])
    {
        errors.push(err(
            "spec.baseUrl",
            format!("{base:?} is not an absolute http(s) URL"),
        ));
    }
    if let Some(r) = &spec.service_ref {
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 63
            && r.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !r.name.starts_with('-')
            && !r.name.ends_with('-');
        if !name_ok {
            errors.push(err(
                "spec.serviceRef.name",
                format!("{:?} is not a Service name", r.name),
            ));
        }
        let port_ok = match &r.port {
            IntOrString::Int(p) => (1..=65535).contains(p),
            IntOrString::String(name) => valid_port_name(name),
        };
        if !port_ok {
            errors.push(err(
                "spec.serviceRef.port",
                "serviceRef.port must be a port number 1-65535 or a port name such as http",
            ));
        }
        if let Some(p) = &r.path
            && !p.starts_with('/')
        {
            errors.push(err("spec.serviceRef.path", "must start with /"));
        }
    }
    for (field, value) in [
        ("spec.type", &spec.service_type),
        ("spec.environment", &spec.environment),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > 63) {
            errors.push(err(field, "must be at most 63 characters"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks a NodeTask spec as the CRD's CEL rules would (same messages and field paths), for
/// NodeTasks created through the API in standalone mode; returns every problem found.
pub fn node_task_spec(spec: &crate::NodeTaskSpec) -> Result<(), Vec<FieldError>> {
    use crate::TaskCommand::*;
    use crate::TaskHandler;
    let mut errors = Vec::new();
    if spec.node_names.is_empty() && spec.node_selector.is_none() {
        errors.push(err(
            "spec",
            "a NodeTask needs targets: set spec.nodeNames and/or spec.nodeSelector",
        ));
    }
    if !spec.handler.commands().contains(&spec.command) {
        errors.push(err(
            "spec.command",
            "spec.command is not a command of spec.handler (CrontabHandler: setup_shutdown|delete_shutdown|select_shutdown|modify_shutdown; OsHandler: shutdown|reboot; ServiceHandler: start|stop|restart|enable|disable; TimerHandler: update|pause|resume; FileHandler: delete_file; NetworkHandler: add_ip|update_ip|delete_ip|exchange_ip)",
        ));
    }
    let data = spec.data.clone().unwrap_or_default();
    let need = |ok: bool, message: &str, errors: &mut Vec<FieldError>| {
        if !ok {
            errors.push(err("spec.data", message));
        }
    };
    let c = spec.command;
    need(
        !matches!(c, SetupShutdown | ModifyShutdown)
            || (data.task_name.is_some()
                && data.exec_hour.is_some()
                && data.exec_minute.is_some()
                && data.exec_weekly.is_some()),
        "setup_shutdown and modify_shutdown need spec.data.task_name, exec_hour, exec_minute and exec_weekly",
        &mut errors,
    );
    need(
        !matches!(c, DeleteShutdown | SelectShutdown) || data.task_name.is_some(),
        "delete_shutdown and select_shutdown need spec.data.task_name",
        &mut errors,
    );
    need(
        spec.handler != TaskHandler::ServiceHandler
            || data.service.as_ref().is_some_and(|s| !s.is_empty()),
        "ServiceHandler commands need spec.data.service: a list of one or more systemd units",
        &mut errors,
    );
    need(
        !(spec.handler == TaskHandler::TimerHandler && c == Update)
            || (data.addr.is_some() && data.node_uuid.is_some()),
        "TimerHandler update needs spec.data.addr and spec.data.node_uuid",
        &mut errors,
    );
    need(
        c != DeleteFile || data.file_name.is_some(),
        "delete_file needs spec.data.file_name, an absolute path",
        &mut errors,
    );
    need(
        !matches!(c, AddIp | UpdateIp)
            || (data.name.is_some() && data.ip.is_some() && data.netmask.is_some()),
        "add_ip and update_ip need spec.data.name (like eth0:0), ip and netmask",
        &mut errors,
    );
    need(
        c != DeleteIp || data.name.is_some(),
        "delete_ip needs spec.data.name (like eth0:0)",
        &mut errors,
    );
    need(
        c != ExchangeIp || (data.name1.is_some() && data.name2.is_some()),
        "exchange_ip needs spec.data.name1 and spec.data.name2",
        &mut errors,
    );
    if let Some(file) = &data.file_name
        && !file.starts_with('/')
    {
        errors.push(err("spec.data.file_name", "must be an absolute path"));
    }
    for (field, value, message) in [
        ("spec.data.ip", &data.ip, "ip must be an IP address"),
        (
            "spec.data.netmask",
            &data.netmask,
            "netmask must be written as an address, like 255.255.255.0",
        ),
    ] {
        if let Some(v) = value
            && v.parse::<std::net::IpAddr>().is_err()
        {
            errors.push(err(field, message));
        }
    }
    if let Some(m) = spec.max_unavailable
        && !(1..=1000).contains(&m)
    {
        errors.push(err(
            "spec.maxUnavailable",
            format!("should be between 1 and 1000, got {m}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> MonitoredServiceSpec {
        serde_json::from_value(v).unwrap()
    }

    fn fields(v: serde_json::Value) -> Vec<String> {
        match monitored_service_spec(&spec(v)) {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn accepts_the_spec_example() {
        assert_eq!(
            fields(serde_json::json!({
                "type": "geonode", "environment": "production", "checkInterval": "30s",
                "timeout": "5s", "url": "https://geonode.example.org/health",
                "http": {"method": "GET", "expectedStatus": [200], "bodyContains": "ok"},
                "baseUrl": "https://geonode.example.org/api", "route": "ops"
            })),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_short_interval_without_a_timeout_is_valid() {
        for interval in ["1s", "2s", "4s", "5s"] {
            assert_eq!(
                fields(serde_json::json!({"url": "http://a/", "checkInterval": interval})),
                Vec::<String>::new(),
                "checkInterval {interval} without timeout"
            );
        }
        assert_eq!(
            fields(serde_json::json!({"url": "http://a/", "checkInterval": "2s", "timeout": "2s"})),
            Vec::<String>::new(),
            "a written timeout equal to the interval"
        );
    }

    #[test]
    fn a_written_timeout_longer_than_the_interval_is_refused() {
        let errors = monitored_service_spec(&spec(
            serde_json::json!({"url": "http://a/", "checkInterval": "2s", "timeout": "5s"}),
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [FieldError {
                field: "spec.timeout".into(),
                message: "must not be longer than spec.checkInterval".into()
            }]
        );
    }

    #[test]
    fn accepts_tcp_urls_with_a_port_and_service_ports_by_number_or_name() {
        for spec in [
            serde_json::json!({"url": "tcp://db.example:5432", "tcp": {}}),
            serde_json::json!({"url": "tcp://10.0.0.1:1/"}),
            serde_json::json!({"url": "tcp://[::1]:65535"}),
            serde_json::json!({"serviceRef": {"name": "web", "port": 1}}),
            serde_json::json!({"serviceRef": {"name": "web", "port": 65535}}),
            serde_json::json!({"serviceRef": {"name": "web", "port": "http"}}),
            serde_json::json!({"serviceRef": {"name": "web", "port": "metrics-2"}}),
        ] {
            assert_eq!(fields(spec.clone()), Vec::<String>::new(), "{spec}");
        }
    }

    #[test]
    fn names_the_field_of_each_mistake() {
        let cases = [
            (
                serde_json::json!({"url": "http://a/", "checkInterval": "500ms"}),
                "spec.checkInterval",
            ),
            (
                serde_json::json!({"url": "http://a/", "checkInterval": "often"}),
                "spec.checkInterval",
            ),
            (
                serde_json::json!({"url": "http://a/", "checkInterval": "2s", "timeout": "5s"}),
                "spec.timeout",
            ),
            (
                serde_json::json!({"url": "http://a/", "timeout": "0ms"}),
                "spec.timeout",
            ),
            (serde_json::json!({}), "spec"),
            (
                serde_json::json!({"url": "http://a/", "serviceRef": {"name": "a", "port": 80}}),
                "spec",
            ),
            (serde_json::json!({"url": "ftp://a/"}), "spec.url"),
            (
                serde_json::json!({"url": "tcp://a:1", "http": {}}),
                "spec.url",
            ),
            (
                serde_json::json!({"url": "http://a/", "tcp": {}}),
                "spec.url",
            ),
            (
                serde_json::json!({"url": "http://a/", "http": {"expectedStatus": [700]}}),
                "spec.http.expectedStatus",
            ),
            (
                serde_json::json!({"serviceRef": {"name": "Bad_Name", "port": "http"}}),
                "spec.serviceRef.name",
            ),
            (
                serde_json::json!({"url": "http://a/", "baseUrl": "not a url"}),
                "spec.baseUrl",
            ),
            (serde_json::json!({"url": "tcp://db"}), "spec.url"),
            (serde_json::json!({"url": "tcp://db:70000"}), "spec.url"),
            (serde_json::json!({"url": "tcp://db:0"}), "spec.url"),
            (
                serde_json::json!({"serviceRef": {"name": "web", "port": 0}}),
                "spec.serviceRef.port",
            ),
            (
                serde_json::json!({"serviceRef": {"name": "web", "port": 70000}}),
                "spec.serviceRef.port",
            ),
            (
                serde_json::json!({"serviceRef": {"name": "web", "port": "Not_A_Port"}}),
                "spec.serviceRef.port",
            ),
            (
                serde_json::json!({"serviceRef": {"name": "web", "port": "8080"}}),
                "spec.serviceRef.port",
            ),
        ];
        for (value, field) in cases {
            let got = fields(value.clone());
            assert!(
                got.iter().any(|f| f == field),
                "{value} should fail on {field}, got {got:?}"
            );
        }
    }
}
