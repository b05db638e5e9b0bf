//! Documents and logs: what the Eve resource API (seed 004) keeps in the store.
//!
//! - A *collection* holds JSON documents by id, each with a *revision* from one store-wide
//!   monotonic counter (like the Kubernetes `resourceVersion`). A write names what it expects
//!   to find ([`Expect`]) and is refused when the document moved on, atomically: of two writers
//!   holding the same revision exactly one wins. Standalone objects created through the API
//!   live here (`objects/services`, `objects/tasks`), and so do the soft-delete tombstones.
//! - A *log* is an append-only sequence of JSON entries numbered from 1: the oplog, and one
//!   log of versions per document (`versions/services/<namespace>/<name>`).
//!
//! [`Documents`] is part of [`crate::Store`], so both backends implement it and the
//! conformance suite runs its cases on both.

use async_trait::async_trait;
use serde_json::Value;

use crate::Result;

/// What a document write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything (or nothing).
    Any,
    /// No document with this id.
    Absent,
    /// The document at this revision.
    Revision(u64),
}

/// A stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its id within the collection.
    pub id: String,
    /// The revision its last write got.
    pub revision: u64,
    /// The document.
    pub body: Value,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the revision it got (a delete answers the revision it removed).
    Done(u64),
    /// Refused: the document is not what the write expected; its current revision, if any.
    Conflict(Option<u64>),
}

/// A log entry with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// 1-based position in the log.
    pub seq: u64,
    /// The entry.
    pub body: Value,
}

/// Collections of revisioned documents and append-only logs.
#[async_trait]
pub trait Documents: Send + Sync {
    /// Stores `body` as `id` in `collection` if `expect` holds; the document gets the next
    /// revision of the store-wide counter.
    async fn put_document(
        &self,
        collection: &str,
        id: &str,
        body: &Value,
        expect: Expect,
    ) -> Result<Written>;

    /// Removes `id` from `collection` if `expect` holds (`Conflict(None)` when it is absent).
    async fn delete_document(&self, collection: &str, id: &str, expect: Expect) -> Result<Written>;

    /// One document.
    async fn document(&self, collection: &str, id: &str) -> Result<Option<Document>>;

    /// Every document of a collection, by id.
    async fn documents(&self, collection: &str) -> Result<Vec<Document>>;

    /// Appends `entry` to `log`; returns its sequence number (1 for the first).
    async fn append(&self, log: &str, entry: &Value) -> Result<u64>;

    /// Appends each `(log, entry)` in one atomic write (a write's version and its oplog entry
    /// land together or not at all); their sequence numbers, in order.
    async fn append_all(&self, entries: &[(String, Value)]) -> Result<Vec<u64>>;

    /// At most `limit` entries of `log` with sequence numbers greater than `after`, in order.
    async fn log(&self, log: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>>;

    /// How many entries `log` holds.
    async fn log_len(&self, log: &str) -> Result<u64>;
}

/// Whether `expect` holds for a document currently at `current`.
pub fn holds(expect: Expect, current: Option<u64>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current == Some(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_only_for_their_state() {
        assert!(holds(Expect::Any, None));
        assert!(holds(Expect::Any, Some(3)));
        assert!(holds(Expect::Absent, None));
        assert!(!holds(Expect::Absent, Some(1)));
        assert!(holds(Expect::Revision(2), Some(2)));
        assert!(!holds(Expect::Revision(2), Some(3)));
        assert!(!holds(Expect::Revision(2), None));
    }
}
