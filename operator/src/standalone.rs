//! Standalone mode: no Kubernetes. MonitoredService manifests come from a local YAML file (the
//! same manifests as in a cluster, several documents separated by `---`), are validated as the
//! CRD schema would validate them, and are checked on their interval; the API serves them with
//! their statuses. The node agent of this host runs in the same process ([`agent`]), and the
//! NodeTasks created through the API or written in the same file run on this host ([`tasks`]):
//! a file's NodeTask is created when the file (or an edit of it) first names it, through the
//! same path as `POST /api/v1/tasks`, and then lives on as any task does (an edit of its spec or
//! its removal from the file changes nothing: tasks run once).

pub mod agent;
pub mod api_checks;
pub mod tasks;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use opsplane_resources::{MonitoredService, NodeTask, validate};
use tokio::sync::RwLock;

use crate::check::{self, Clients};
use crate::controller::monitored_service::{Checker, StatusSink, check_round};
use crate::metrics::Metrics;

/// A config file problem, located at file, line and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A document is not a valid MonitoredService.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// Dotted path of the field (`spec.checkInterval`), or `document`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// One `---`-separated document of the file, with the line it starts on (1-based).
struct Document<'a> {
    text: &'a str,
    first_line: usize,
}

fn documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push(Document {
                text: &text[start_byte..offset],
                first_line: start_line,
            });
            start_byte = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start_byte..],
        first_line: start_line,
    });
    docs.into_iter()
        .filter(|d| {
            d.text
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// The line in `doc` where the deepest written key of `field` is (`spec.http.method` tries
/// `method:`, then `http:`, then `spec:`), else the document's first line.
fn line_of(doc: &Document<'_>, field: &str) -> usize {
    for key in field.rsplit('.') {
        let key = key.split('[').next().unwrap_or(key);
        let found = doc.text.lines().position(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.starts_with(&format!("{key}:"))
        });
        if let Some(index) = found {
            return doc.first_line + index;
        }
    }
    doc.first_line
}

/// The manifests of a standalone config file.
#[derive(Debug, Default)]
pub struct Config {
    /// Its MonitoredServices (namespace `default` when none is written).
    pub services: Vec<MonitoredService>,
    /// Its NodeTasks.
    pub tasks: Vec<NodeTask>,
}

/// Deserializes one document as `T`, naming the line and field of a mistake.
fn typed<T: serde::de::DeserializeOwned>(
    file: &Path,
    doc: &Document<'_>,
) -> Result<T, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(doc.text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let line = e
            .inner()
            .location()
            .map_or_else(|| line_of(doc, &field), |l| doc.first_line + l.line() - 1);
        let message = e.inner().to_string();
        // serde_yaml appends " at line L column C"; the line is already in front.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            field,
            message,
        }
    })
}

/// Parses and validates the manifests of a standalone config file: MonitoredServices and
/// NodeTasks.
pub fn parse_config(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |line: usize, field: &str, message: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        field: field.to_string(),
        message,
    };
    let mut services: Vec<MonitoredService> = Vec::new();
    let mut tasks: Vec<NodeTask> = Vec::new();
    for doc in documents(text) {
        let value: serde_yaml::Value = serde_yaml::from_str(doc.text).map_err(|e| {
            let line = e
                .location()
                .map_or(doc.first_line, |l| doc.first_line + l.line() - 1);
            invalid(line, "document", format!("not valid YAML: {e}"))
        })?;
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if api_version != "opsplane.io/v1alpha1" || !matches!(kind, "MonitoredService" | "NodeTask")
        {
            return Err(invalid(
                line_of(&doc, "kind"),
                "kind",
                format!(
                    "expected apiVersion opsplane.io/v1alpha1 and kind MonitoredService or NodeTask, got {api_version:?} / {kind:?}"
                ),
            ));
        }
        if kind == "NodeTask" {
            let mut task: NodeTask = typed(file, &doc)?;
            let Some(name) = task.metadata.name.clone().filter(|n| !n.is_empty()) else {
                return Err(invalid(
                    line_of(&doc, "metadata"),
                    "metadata.name",
                    "is required".into(),
                ));
            };
            if let Err(errors) = validate::node_task_spec(&task.spec) {
                let first = &errors[0];
                return Err(invalid(
                    line_of(&doc, &first.field),
                    &first.field,
                    first.message.clone(),
                ));
            }
            if tasks.iter().any(|t| t.name_any() == name) {
                return Err(invalid(
                    line_of(&doc, "metadata.name"),
                    "metadata.name",
                    format!("NodeTask {name} is defined twice"),
                ));
            }
            // NodeTasks are cluster-scoped; a status written in the file is not the task's.
            task.metadata.namespace = None;
            task.status = None;
            tasks.push(task);
            continue;
        }
        let mut service: MonitoredService = typed(file, &doc)?;
        let Some(name) = service.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return Err(invalid(
                line_of(&doc, "metadata"),
                "metadata.name",
                "is required".into(),
            ));
        };
        if service.metadata.namespace.is_none() {
            service.metadata.namespace = Some("default".to_string());
        }
        if service.spec.service_ref.is_some() {
            return Err(invalid(
                line_of(&doc, "serviceRef"),
                "spec.serviceRef",
                "needs a Kubernetes cluster to discover instances; in standalone mode use spec.url"
                    .into(),
            ));
        }
        if let Err(errors) = validate::monitored_service_spec(&service.spec) {
            let first = &errors[0];
            return Err(invalid(
                line_of(&doc, &first.field),
                &first.field,
                first.message.clone(),
            ));
        }
        let namespace = service.namespace().unwrap_or_default();
        if services
            .iter()
            .any(|s| s.name_any() == name && s.namespace().unwrap_or_default() == namespace)
        {
            return Err(invalid(
                line_of(&doc, "metadata.name"),
                "metadata.name",
                format!("{namespace}/{name} is defined twice"),
            ));
        }
        service.metadata.generation = Some(1);
        service.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        service.metadata.uid = Some(format!("standalone-{namespace}-{name}"));
        services.push(service);
    }
    Ok(Config { services, tasks })
}

/// Reads and parses a standalone config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse_config(file, &text)
}

/// Checks every service on its own interval until the future is dropped; results land in
/// `services` (as status) and in the metrics.
async fn check_forever(
    services: Arc<RwLock<Vec<MonitoredService>>>,
    clients: Clients,
    metrics: Metrics,
    store: crate::recorder::Recorder,
) -> tokio::task::JoinSet<()> {
    let snapshot = services.read().await.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, service) in snapshot.into_iter().enumerate() {
        let services = services.clone();
        let clients = clients.clone();
        let metrics = metrics.clone();
        let store = store.clone();
        tasks.spawn(async move {
            let key = format!(
                "{}/{}",
                service.namespace().unwrap_or_default(),
                service.name_any()
            );
            let interval = service.spec.timing().interval;
            let Some(target) = check::url_target(&service.spec) else {
                return;
            };
            let checker = Checker {
                clients: &clients,
                metrics: &metrics,
                store: &store,
            };
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // Only this task writes this entry's status (a reload stops the tasks first).
                let previous = services
                    .read()
                    .await
                    .get(index)
                    .and_then(|entry| entry.status.clone());
                let Some(status) = check_round(
                    checker,
                    &key,
                    &service.spec,
                    std::slice::from_ref(&target),
                    previous.as_ref(),
                    service.metadata.generation,
                    StatusSink::Memory,
                )
                .await
                else {
                    continue;
                };
                if let Some(entry) = services.write().await.get_mut(index) {
                    entry.status = Some(status);
                }
            }
        });
    }
    tasks
}

/// Carries what the user did not change across a reload: an unchanged service keeps its
/// status, uid and creation time; a changed spec bumps its generation (status shows the old
/// observedGeneration until the next check).
fn merge(old: &[MonitoredService], mut new: Vec<MonitoredService>) -> Vec<MonitoredService> {
    for service in &mut new {
        let same = old
            .iter()
            .find(|o| o.name_any() == service.name_any() && o.namespace() == service.namespace());
        if let Some(previous) = same {
            service.metadata.uid = previous.metadata.uid.clone();
            service.metadata.creation_timestamp = previous.metadata.creation_timestamp.clone();
            service.status = previous.status.clone();
            let generation = previous.metadata.generation.unwrap_or(1);
            service.metadata.generation = Some(if previous.spec == service.spec {
                generation
            } else {
                generation + 1
            });
        }
    }
    new
}

/// Runs the checks and follows edits of the config file (polled every `poll`): a valid edit
/// replaces the services (checks restart with the new specs), an invalid one is logged with its
/// file, line and field, and the last good configuration stays in force.
pub async fn run(
    config: PathBuf,
    services: Arc<RwLock<Vec<MonitoredService>>>,
    clients: Clients,
    metrics: Metrics,
    store: crate::recorder::Recorder,
    poll: std::time::Duration,
    file_tasks: tokio::sync::mpsc::UnboundedSender<Vec<NodeTask>>,
) {
    let mut last_text = std::fs::read_to_string(&config).unwrap_or_default();
    loop {
        let mut tasks = check_forever(
            services.clone(),
            clients.clone(),
            metrics.clone(),
            store.clone(),
        )
        .await;
        loop {
            tokio::time::sleep(poll).await;
            let Ok(text) = std::fs::read_to_string(&config) else {
                continue;
            };
            if text == last_text {
                continue;
            }
            last_text = text.clone();
            match parse_config(&config, &text) {
                Ok(Config {
                    services: new,
                    tasks: named,
                }) => {
                    // The receiver creates those it has not created yet.
                    let _ = file_tasks.send(named);
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    let mut guard = services.write().await;
                    let merged = merge(&guard, new);
                    tracing::info!(config = %config.display(), services = merged.len(), "configuration reloaded");
                    *guard = merged;
                    metrics.config_reload(true);
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, "configuration edit refused; the last good configuration stays in force");
                    metrics.config_reload(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# two services
apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {name: web}
spec:
  url: http://127.0.0.1:8080/health
  checkInterval: 10s
---
apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {name: db, namespace: prod}
spec:
  url: tcp://127.0.0.1:5432
  tcp: {}
";

    fn error_of(text: &str) -> (usize, String, String) {
        match parse_config(Path::new("svc.yaml"), text).map(|c| c.services) {
            Err(ConfigError::Invalid {
                line,
                field,
                message,
                ..
            }) => (line, field, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn parses_several_documents_with_defaults() {
        let services = parse_config(Path::new("svc.yaml"), GOOD).unwrap().services;
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].namespace().as_deref(), Some("default"));
        assert_eq!(services[0].spec.timeout, None);
        assert_eq!(
            services[0].spec.timing().timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(services[1].namespace().as_deref(), Some("prod"));
    }

    #[test]
    fn a_short_interval_without_a_timeout_is_accepted_and_bounds_the_timeout() {
        let text = GOOD.replace("checkInterval: 10s", "checkInterval: 2s");
        let services = parse_config(Path::new("svc.yaml"), &text).unwrap().services;
        let timing = services[0].spec.timing();
        assert_eq!(timing.interval, std::time::Duration::from_secs(2));
        assert_eq!(timing.timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_written_timeout_longer_than_the_interval_is_refused() {
        let text = GOOD.replace("checkInterval: 10s", "checkInterval: 2s\n  timeout: 5s");
        let (line, field, message) = error_of(&text);
        assert_eq!((line, field.as_str()), (8, "spec.timeout"));
        assert_eq!(message, "must not be longer than spec.checkInterval");
    }

    #[test]
    fn a_wrong_type_names_line_and_field() {
        let text = GOOD.replace("checkInterval: 10s", "checkInterval: [10]");
        let (line, field, message) = error_of(&text);
        assert_eq!(line, 7);
        assert_eq!(field, "spec.checkInterval");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn a_rule_violation_names_line_and_field() {
        let text = GOOD.replace("checkInterval: 10s", "checkInterval: 100ms");
        let (line, field, message) = error_of(&text);
        assert_eq!((line, field.as_str()), (7, "spec.checkInterval"));
        assert!(message.contains("at least"), "{message}");

        let text = GOOD.replace("url: tcp://", "url: http://");
        let (line, field, _) = error_of(&text);
        assert_eq!((line, field.as_str()), (13, "spec.url"));
    }

    #[test]
    fn node_tasks_are_parsed_validated_and_kept_apart() {
        let text = format!(
            "{GOOD}---\napiVersion: opsplane.io/v1alpha1\nkind: NodeTask\nmetadata: {{name: t1}}\nspec: {{nodeNames: [h], handler: FileHandler, command: delete_file, data: {{file_name: /tmp/x}}}}\n"
        );
        let config = parse_config(Path::new("svc.yaml"), &text).unwrap();
        assert_eq!(config.tasks.len(), 1);
        assert_eq!(config.tasks[0].metadata.name.as_deref(), Some("t1"));
        assert!(!config.services.is_empty());
        let twice = format!("{text}---\n{}", text.rsplit("---\n").next().unwrap());
        let err = parse_config(Path::new("svc.yaml"), &twice).unwrap_err();
        assert!(
            err.to_string().contains("NodeTask t1 is defined twice"),
            "{err}"
        );
        let unnamed = "apiVersion: opsplane.io/v1alpha1\nkind: NodeTask\nmetadata: {}\nspec: {handler: OsHandler, command: reboot}\n";
        let err = parse_config(Path::new("svc.yaml"), unnamed).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    #[test]
    fn unknown_kind_duplicates_and_broken_yaml_are_refused() {
        let (_, field, _) = error_of(&GOOD.replace(
            "kind: MonitoredService\nmetadata: {name: db",
            "kind: Pod\nmetadata: {name: db",
        ));
        assert_eq!(field, "kind");
        let (line, field, message) =
            error_of(&GOOD.replace("{name: db, namespace: prod}", "{name: web}"));
        assert_eq!((line, field.as_str()), (11, "metadata.name"));
        assert!(message.contains("twice"));
        let (line, field, _) = error_of("apiVersion: opsplane.io/v1alpha1\nkind: a: b\n");
        assert_eq!((line, field.as_str()), (2, "document"));
        let (_, field, _) = error_of(
            "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {}\nspec: {url: 'http://a/'}\n",
        );
        assert_eq!(field, "metadata.name");
    }
}
