//! Log set-up of both binaries: human-readable lines (coloured only when stderr is a terminal,
//! so a file or a pipe never gets ANSI codes) or one JSON object per line for log collectors.

use std::io::IsTerminal;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event; coloured on a terminal only.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, spans).
    Json,
}

/// Installs the global subscriber writing to stderr. `filter` is an `EnvFilter` directive
/// (`info`, `opsplane_operator=debug,info`); an invalid one falls back to `info`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
