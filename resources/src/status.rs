//! The two small pieces every status writer shares: the server-side-apply body of a status
//! patch and the bounded messages that go into it. Used by the operator's controllers and by
//! the node-daemon's NodeTask watcher, which each own different fields of one status.

use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};

/// The server-side-apply body that sets `status` of a `K` (`apiVersion`, `kind`, `status`).
///
/// `status` may be a partial status: under server-side apply each field manager owns only the
/// fields it sends (the node-daemon sends its one `status.nodes[]` entry).
pub fn status_patch<K>(status: &impl Serialize) -> Value
where
    K: Resource<DynamicType = ()>,
{
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// `text` cut to at most `max` bytes on a character boundary, with `...` appended when cut:
/// status messages stay readable and objects stay small whatever an error says.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MonitoredService, NodeTask};

    #[test]
    fn status_patch_names_the_resource_it_applies_to() {
        let patch = status_patch::<NodeTask>(&json!({"phase": "Running"}));
        assert_eq!(
            patch,
            json!({"apiVersion": "opsplane.io/v1alpha1", "kind": "NodeTask", "status": {"phase": "Running"}})
        );
        assert_eq!(
            status_patch::<MonitoredService>(&json!({}))["kind"],
            "MonitoredService"
        );
    }

    #[test]
    fn truncate_cuts_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc...");
        // "é" is two bytes: a cut inside it backs off to the boundary before it.
        assert_eq!(truncate("aé", 2), "a...");
    }
}
