//! [`Doc`]: an Eve item shared between requests, which keeps its own JSON text.
//!
//! The cluster backend renders each cached object as an item once per version and hands the
//! same `Doc` to every collection GET until the object changes; the first page that contains
//! it writes its JSON text once, and every later page copies that text instead of serialising
//! the item again (a page of 100 is then 100 copies, not 100 serialisations).

use std::borrow::Borrow;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// An item and, once asked for, its JSON text. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Doc(Arc<Inner>);

struct Inner {
    value: Value,
    json: OnceLock<Box<RawValue>>,
}

impl Doc {
    /// The item `value`; its text is made on first use.
    pub fn new(value: Value) -> Doc {
        Doc(Arc::new(Inner {
            value,
            json: OnceLock::new(),
        }))
    }

    /// The item's JSON text, made once (the same bytes `serde_json::to_string` writes).
    pub fn json(&self) -> &RawValue {
        self.0.json.get_or_init(|| {
            // A `Value` always serialises; `null` only to keep this total.
            serde_json::value::to_raw_value(&self.0.value)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
        })
    }
}

impl From<Value> for Doc {
    fn from(value: Value) -> Doc {
        Doc::new(value)
    }
}

impl Deref for Doc {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0.value
    }
}

impl Borrow<Value> for Doc {
    fn borrow(&self) -> &Value {
        &self.0.value
    }
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.value.fmt(f)
    }
}

/// Written as its kept JSON text.
impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_doc_writes_the_same_json_as_its_value_and_makes_it_once() {
        let value = json!({"_id": "ns/a", "spec": {"url": "http://x/\"q\"", "n": [1, 2.5, null]}, "ü": "ß"});
        let doc = Doc::new(value.clone());
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        // Inside a larger document (a page), it reads back as the value.
        let page =
            serde_json::to_vec(&json!({"_items": [serde_json::to_value(&doc).unwrap()]})).unwrap();
        let back: Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(back["_items"][0], value);
        let borrowed: Vec<&Doc> = vec![&doc, &doc];
        let text = serde_json::to_string(&borrowed).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!([value, value])
        );
        let first = doc.json() as *const RawValue;
        let copy = doc.clone();
        assert_eq!(
            copy.json() as *const RawValue,
            first,
            "the text is made once"
        );
        assert_eq!(copy["spec"]["n"][1], 2.5);
    }
}
