//! Log set-up of both binaries: human-readable lines (coloured only when stderr is a terminal,
//! so a file or a pipe never gets ANSI codes) or one JSON object per line for log collectors.
//!
//! The filter is reloadable: [`LogLevels`] changes the level of one *scope* at run time (seed
//! 003's `/maintain/v1/log/outputlevel`), at once and in memory only (a restart goes back to
//! `--log`). A scope is a named group of tracing targets, [`SCOPES`]; Polaris's scope names
//! are used where the meaning matches, plus opsplane's own:
//!
//! | scope | targets (module paths; the most specific directive wins, so `healthcheck` overrides `controller` for the MonitoredService controller) |
//! |---|---|
//! | `default` | everything no other scope names: the level without a target in `--log` |
//! | `apiserver` | the HTTP side: `opsplane_operator::api`, `opsplane_node_daemon::{api,maintain}`, `opsplane_serve::{observe,listener,maintain}`, `tower_http`, `hyper`, `hyper_util`, `axum` |
//! | `auth` | `opsplane_serve::{auth,guard,ratelimit,bearer}`, `opsplane_operator::auth` |
//! | `cache` | the controllers' watch caches: `kube_runtime::reflector`, `kube_runtime::watcher` |
//! | `config` | `opsplane_operator::{config,standalone}`, `opsplane_node_daemon::config` |
//! | `healthcheck` | the checks of MonitoredServices: `opsplane_operator::check`, `opsplane_operator::controller::monitored_service` |
//! | `naming` | instance discovery and the registries: `opsplane_operator::api::maintain`, `opsplane_store::catalog` |
//! | `store` | `opsplane_store`, `opsplane_operator::recorder`, `redis`, `redb` |
//! | `controller` | `opsplane_operator::controller`, `opsplane_operator::leader` |
//! | `tasks` | `opsplane_operator::controller::node_task`, `opsplane_node_daemon::{task,watch}` |
//! | `reports` | `opsplane_operator::api::report`, `opsplane_node_daemon::reporter` |
//! | `probes` | `opsplane_node_daemon::{probe,sampler,monitor,host,sock_diag,metrics}` |
//! | `kube` | `kube`, `kube_client`, `kube_runtime` |
//!
//! Levels are Polaris's `debug, info, warn, error, fatal, none` plus `trace`; tracing has no
//! fatal, so `fatal` logs what `error` does, and `none` turns the scope off.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event; coloured on a terminal only.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, spans).
    Json,
}

/// A named group of tracing targets whose level can be changed at run time.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// The name on the wire (`apiserver`).
    pub name: &'static str,
    /// The tracing targets it sets (module path prefixes).
    pub targets: &'static [&'static str],
}

/// The scope without targets: the level of everything no other scope names.
pub const DEFAULT_SCOPE: &str = "default";

/// Every scope, in the order they are listed (see the module documentation).
pub const SCOPES: &[Scope] = &[
    Scope {
        name: "apiserver",
        targets: &[
            "opsplane_operator::api",
            "opsplane_node_daemon::api",
            "opsplane_node_daemon::maintain",
            "opsplane_serve::observe",
            "opsplane_serve::listener",
            "opsplane_serve::maintain",
            "tower_http",
            "hyper",
            "hyper_util",
            "axum",
        ],
    },
    Scope {
        name: "auth",
        targets: &[
            "opsplane_serve::auth",
            "opsplane_serve::guard",
            "opsplane_serve::ratelimit",
            "opsplane_serve::bearer",
            "opsplane_operator::auth",
        ],
    },
    Scope {
        name: "cache",
        targets: &["kube_runtime::reflector", "kube_runtime::watcher"],
    },
    Scope {
        name: "config",
        targets: &[
            "opsplane_operator::config",
            "opsplane_operator::standalone",
            "opsplane_node_daemon::config",
        ],
    },
    Scope {
        name: DEFAULT_SCOPE,
        targets: &[],
    },
    Scope {
        name: "healthcheck",
        targets: &[
            "opsplane_operator::check",
            "opsplane_operator::controller::monitored_service",
        ],
    },
    Scope {
        name: "naming",
        targets: &[
            "opsplane_operator::api::maintain",
            "opsplane_store::catalog",
        ],
    },
    Scope {
        name: "store",
        targets: &[
            "opsplane_store",
            "opsplane_operator::recorder",
            "redis",
            "redb",
        ],
    },
    Scope {
        name: "controller",
        targets: &["opsplane_operator::controller", "opsplane_operator::leader"],
    },
    Scope {
        name: "tasks",
        targets: &[
            "opsplane_operator::controller::node_task",
            "opsplane_node_daemon::task",
            "opsplane_node_daemon::watch",
        ],
    },
    Scope {
        name: "reports",
        targets: &[
            "opsplane_operator::api::report",
            "opsplane_node_daemon::reporter",
        ],
    },
    Scope {
        name: "probes",
        targets: &[
            "opsplane_node_daemon::probe",
            "opsplane_node_daemon::sampler",
            "opsplane_node_daemon::monitor",
            "opsplane_node_daemon::host",
            "opsplane_node_daemon::sock_diag",
            "opsplane_node_daemon::metrics",
        ],
    },
    Scope {
        name: "kube",
        targets: &["kube", "kube_client", "kube_runtime"],
    },
];

/// The levels a scope can be given (Polaris's, plus `trace`).
pub const LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "error", "fatal", "none"];

/// The tracing directive of a Polaris level.
fn directive_level(level: &str) -> Option<&'static str> {
    Some(match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "fatal" => "error",
        "none" => "off",
        _ => return None,
    })
}

/// Why a level was not set; the texts are Polaris's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// No such scope (checked first, as Polaris does).
    #[error("invalid scope name")]
    Scope,
    /// Not one of [`LEVELS`] (lower case only).
    #[error("invalid log level")]
    Level,
    /// The new filter could not be installed.
    #[error("cannot reload the log filter: {0}")]
    Reload(String),
}

type Reloader = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

struct Inner {
    /// `--log` without the directives of scopes set at run time.
    base: Vec<String>,
    /// Levels set at run time, by scope.
    set: Mutex<BTreeMap<&'static str, &'static str>>,
    reload: Option<Reloader>,
}

/// The run-time log levels of a process, by scope.
#[derive(Clone)]
pub struct LogLevels {
    inner: Arc<Inner>,
}

impl LogLevels {
    /// Levels over the `--log` directive `filter`, changing nothing when set (tests, and a
    /// process whose subscriber is not [`init`]'s).
    pub fn detached(filter: &str) -> LogLevels {
        LogLevels::with(filter, None)
    }

    fn with(filter: &str, reload: Option<Reloader>) -> LogLevels {
        let base = filter
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        LogLevels {
            inner: Arc::new(Inner {
                base,
                set: Mutex::default(),
                reload,
            }),
        }
    }

    fn set_levels(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, &'static str>> {
        self.inner.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The level of everything no scope names, per `--log` (`error` when it gives none, as
    /// an empty `EnvFilter` does).
    fn base_default(&self) -> &str {
        self.inner
            .base
            .iter()
            .rev()
            .find(|d| !d.contains('=') && directive_level(d).is_some())
            .map(String::as_str)
            .unwrap_or("error")
    }

    /// Every scope with its level: the one set at run time, else the default level.
    pub fn levels(&self) -> Vec<(&'static str, String)> {
        let set = self.set_levels();
        let default = set
            .get(DEFAULT_SCOPE)
            .copied()
            .unwrap_or(self.base_default())
            .to_owned();
        SCOPES
            .iter()
            .map(|s| {
                let level = set.get(s.name).map_or(default.clone(), |l| l.to_string());
                (s.name, level)
            })
            .collect()
    }

    /// The `EnvFilter` directive string in force.
    pub fn directives(&self) -> String {
        let set = self.set_levels();
        let targets: Vec<&str> = set
            .keys()
            .filter_map(|name| SCOPES.iter().find(|s| s.name == *name))
            .flat_map(|s| s.targets.iter().copied())
            .collect();
        let mut out: Vec<String> = self
            .inner
            .base
            .iter()
            .filter(|d| {
                let target = d.split_once('=').map(|(t, _)| t.trim());
                match target {
                    // A directive for a target a scope now sets gives way to it.
                    Some(t) => !targets.contains(&t),
                    // The target-less default gives way to a `default` set at run time.
                    None => !(set.contains_key(DEFAULT_SCOPE) && directive_level(d).is_some()),
                }
            })
            .cloned()
            .collect();
        for (name, level) in set.iter() {
            let Some(scope) = SCOPES.iter().find(|s| s.name == *name) else {
                continue;
            };
            let Some(level) = directive_level(level) else {
                continue;
            };
            if scope.name == DEFAULT_SCOPE {
                out.insert(0, level.to_owned());
            }
            for target in scope.targets {
                out.push(format!("{target}={level}"));
            }
        }
        out.join(",")
    }

    /// Sets `scope` to `level` at once. The scope is checked first, then the level.
    pub fn set(&self, scope: &str, level: &str) -> Result<(), LevelError> {
        let scope = SCOPES
            .iter()
            .find(|s| s.name == scope)
            .ok_or(LevelError::Scope)?;
        let level = LEVELS
            .iter()
            .find(|l| **l == level)
            .ok_or(LevelError::Level)?;
        let previous = self.set_levels().insert(scope.name, level);
        if let Some(reload) = &self.inner.reload {
            let directives = self.directives();
            let applied = EnvFilter::try_new(&directives)
                .map_err(|e| e.to_string())
                .and_then(reload);
            if let Err(e) = applied {
                let mut set = self.set_levels();
                match previous {
                    Some(p) => set.insert(scope.name, p),
                    None => set.remove(scope.name),
                };
                return Err(LevelError::Reload(e));
            }
        }
        tracing::info!(scope = scope.name, level, "log level changed");
        Ok(())
    }
}

/// Installs the global subscriber writing to stderr and returns the handle that changes its
/// levels at run time. `filter` is an `EnvFilter` directive (`info`,
/// `opsplane_operator=debug,info`); an invalid one falls back to `info`.
pub fn init(filter: &str, format: LogFormat) -> LogLevels {
    let (env_filter, filter) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, filter),
        Err(_) => (EnvFilter::new("info"), "info"),
    };
    let (layer, handle) = reload::Layer::new(env_filter);
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init();
    if let Err(error) = installed {
        eprintln!("log set-up: {error}");
        return LogLevels::detached(filter);
    }
    LogLevels::with(
        filter,
        Some(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_have_polaris_names_and_opsplane_ones() {
        let names: Vec<&str> = SCOPES.iter().map(|s| s.name).collect();
        for name in [
            "apiserver",
            "auth",
            "cache",
            "config",
            "default",
            "healthcheck",
            "naming",
            "store",
            "controller",
            "tasks",
            "reports",
            "probes",
            "kube",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }

    #[test]
    fn unset_scopes_show_the_default_level_of_the_filter() {
        let levels = LogLevels::detached("opsplane_operator=debug,warn");
        assert!(levels.levels().iter().all(|(_, l)| l == "warn"));
        let levels = LogLevels::detached("");
        assert!(levels.levels().iter().all(|(_, l)| l == "error"));
    }

    #[test]
    fn a_scope_set_at_run_time_becomes_directives_for_its_targets() {
        let levels = LogLevels::detached("info,opsplane_store=warn");
        levels.set("store", "debug").unwrap();
        levels.set("apiserver", "none").unwrap();
        let directives = levels.directives();
        assert!(directives.starts_with("info,"), "{directives}");
        assert!(directives.contains("opsplane_store=debug"), "{directives}");
        assert!(!directives.contains("opsplane_store=warn"), "{directives}");
        assert!(directives.contains("hyper=off"), "{directives}");
        EnvFilter::try_new(&directives).unwrap();
        let shown: BTreeMap<_, _> = levels.levels().into_iter().collect();
        assert_eq!(shown["store"], "debug");
        assert_eq!(shown["apiserver"], "none");
        assert_eq!(shown["auth"], "info");
        levels.set("default", "fatal").unwrap();
        assert!(levels.directives().starts_with("error,"));
        let shown: BTreeMap<_, _> = levels.levels().into_iter().collect();
        assert_eq!(shown["auth"], "fatal");
    }

    #[test]
    fn a_bad_scope_is_refused_before_a_bad_level() {
        let levels = LogLevels::detached("info");
        assert_eq!(levels.set("nope", "INFO"), Err(LevelError::Scope));
        assert_eq!(levels.set("", "info"), Err(LevelError::Scope));
        assert_eq!(levels.set("store", "INFO"), Err(LevelError::Level));
        assert_eq!(levels.set("store", ""), Err(LevelError::Level));
        assert_eq!(LevelError::Scope.to_string(), "invalid scope name");
        assert_eq!(LevelError::Level.to_string(), "invalid log level");
    }
}
