//! Eve's query language (seed 004 "Filtering", "Sorting", "Projections", "Embedded resource
//! serialization", "Pagination"): `where` as Mongo-style JSON or the python-like form, `sort`
//! as `a,-b` or `[("a", -1)]`, `projection`, `embedded`, `page`/`max_results` — parsed into
//! types here and evaluated over the JSON documents the API serves. Pure: no I/O.
//!
//! Every malformed parameter is a [`QueryError`] naming the parameter and what is wrong (400).

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// A malformed query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {reason}")]
pub struct QueryError {
    /// The parameter (`where`, `sort`, ...).
    pub parameter: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(parameter: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError {
        parameter,
        reason: reason.into(),
    }
}

/// A comparison of one field.
#[derive(Debug, Clone)]
pub enum Op {
    /// `$eq`, `==`.
    Eq(Value),
    /// `$ne`, `!=`.
    Ne(Value),
    /// `$gt`, `>`.
    Gt(Value),
    /// `$gte`, `>=`.
    Gte(Value),
    /// `$lt`, `<`.
    Lt(Value),
    /// `$lte`, `<=`.
    Lte(Value),
    /// `$in`, `in [...]`.
    In(Vec<Value>),
    /// `$nin`, `not in [...]`.
    Nin(Vec<Value>),
    /// `$exists`.
    Exists(bool),
    /// `$regex`.
    Regex(regex::Regex),
    /// `$not` of a field's operators.
    Not(Vec<Op>),
}

/// A parsed `where`.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every condition holds.
    And(Vec<Filter>),
    /// One condition holds.
    Or(Vec<Filter>),
    /// The condition does not hold.
    Not(Box<Filter>),
    /// A field's value passes the operator.
    Field(String, Op),
}

impl Default for Filter {
    fn default() -> Self {
        Filter::And(Vec::new())
    }
}

/// The value at a dotted `path` (`spec.http.method`) of `doc`.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut here = doc;
    for part in path.split('.') {
        here = match here {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(here)
}

/// Whether `text` may be a date of [`date_of`]: a cheap test first, since sorting compares
/// strings many times.
fn looks_like_date(text: &str) -> bool {
    let b = text.as_bytes();
    (b.len() >= 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T')
        || (b.len() >= 29 && text.ends_with(" GMT") && b[3] == b',')
}

/// A date in RFC 1123 (`Wed, 25 Feb 1987 17:00:00 GMT`, Eve's `DATE_FORMAT`) or RFC 3339 (the
/// Kubernetes timestamps), as seconds.
pub fn date_of(text: &str) -> Option<i64> {
    if !looks_like_date(text) {
        return None;
    }
    // The format is known from the first byte (a weekday or a year): one parser, not a failed
    // one first (collections read every item's `_updated` per request).
    if text.as_bytes()[0].is_ascii_digit() {
        return text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second());
    }
    httpdate::parse_http_date(text).ok().and_then(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
    })
}

/// Orders two JSON values as Mongo would within one type: numbers, strings (as dates when both
/// are dates), booleans; other pairs do not compare.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => match (date_of(x), date_of(y)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => Some(x.cmp(y)),
        },
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    a == b || compare(a, b) == Some(Ordering::Equal)
}

impl Op {
    fn matches(&self, value: Option<&Value>) -> bool {
        // Mongo: a comparison with an array field holds when it holds for one of its elements.
        let any = |f: &dyn Fn(&Value) -> bool| match value {
            Some(Value::Array(items)) => items.iter().any(f) || f(&Value::Array(items.clone())),
            Some(v) => f(v),
            None => false,
        };
        let ordered = |v: &Value, want: &Value, ok: &[Ordering]| {
            compare(v, want).is_some_and(|o| ok.contains(&o))
        };
        match self {
            Op::Eq(Value::Null) => value.is_none_or(Value::is_null),
            Op::Eq(want) => any(&|v| equal(v, want)),
            Op::Ne(want) => !Op::Eq(want.clone()).matches(value),
            Op::Gt(w) => any(&|v| ordered(v, w, &[Ordering::Greater])),
            Op::Gte(w) => any(&|v| ordered(v, w, &[Ordering::Greater, Ordering::Equal])),
            Op::Lt(w) => any(&|v| ordered(v, w, &[Ordering::Less])),
            Op::Lte(w) => any(&|v| ordered(v, w, &[Ordering::Less, Ordering::Equal])),
            Op::In(set) => set.iter().any(|w| Op::Eq(w.clone()).matches(value)),
            Op::Nin(set) => !set.iter().any(|w| Op::Eq(w.clone()).matches(value)),
            Op::Exists(want) => value.is_some() == *want,
            Op::Regex(re) => any(&|v| v.as_str().is_some_and(|s| re.is_match(s))),
            Op::Not(ops) => !ops.iter().all(|op| op.matches(value)),
        }
    }
}

impl Filter {
    /// Whether `doc` passes.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(doc)),
            Filter::Or(any) => any.iter().any(|f| f.matches(doc)),
            Filter::Not(f) => !f.matches(doc),
            Filter::Field(path, op) => op.matches(lookup(doc, path)),
        }
    }
}

/// Parses `where`: JSON when it starts with `{`, else the python-like form.
pub fn parse_where(text: &str) -> Result<Filter, QueryError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Filter::default());
    }
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            if text.contains('\'') {
                bad(
                    "where",
                    format!(
                        "not valid JSON ({e}): field names and values must be in double quotes, not single"
                    ),
                )
            } else {
                bad("where", format!("not valid JSON: {e}"))
            }
        })?;
        return mongo(&value);
    }
    python::parse(text)
}

fn mongo(value: &Value) -> Result<Filter, QueryError> {
    let Value::Object(map) = value else {
        return Err(bad("where", "a JSON where must be an object"));
    };
    let mut all = Vec::new();
    for (key, v) in map {
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = v else {
                    return Err(bad("where", format!("{key} takes a list of conditions")));
                };
                let parts = items.iter().map(mongo).collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                });
            }
            "$not" => all.push(Filter::Not(Box::new(mongo(v)?))),
            k if k.starts_with('$') => {
                return Err(bad(
                    "where",
                    format!("unknown operator {k} (use $and, $or, $not at the top level)"),
                ));
            }
            field => {
                for op in field_ops(field, v)? {
                    all.push(Filter::Field(field.to_string(), op));
                }
            }
        }
    }
    Ok(Filter::And(all))
}

fn list_of(op: &str, v: &Value) -> Result<Vec<Value>, QueryError> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(bad("where", format!("{op} takes a list"))),
    }
}

fn field_ops(field: &str, v: &Value) -> Result<Vec<Op>, QueryError> {
    let Value::Object(map) = v else {
        return Ok(vec![Op::Eq(v.clone())]);
    };
    if !map.keys().any(|k| k.starts_with('$')) {
        return Ok(vec![Op::Eq(v.clone())]);
    }
    let mut ops = Vec::new();
    for (op, arg) in map {
        ops.push(match op.as_str() {
            "$eq" => Op::Eq(arg.clone()),
            "$ne" => Op::Ne(arg.clone()),
            "$gt" => Op::Gt(arg.clone()),
            "$gte" => Op::Gte(arg.clone()),
            "$lt" => Op::Lt(arg.clone()),
            "$lte" => Op::Lte(arg.clone()),
            "$in" => Op::In(list_of(op, arg)?),
            "$nin" => Op::Nin(list_of(op, arg)?),
            "$exists" => Op::Exists(match arg {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => return Err(bad("where", "$exists takes true or false")),
            }),
            "$regex" => {
                let Value::String(pattern) = arg else {
                    return Err(bad("where", "$regex takes a string"));
                };
                Op::Regex(regex::Regex::new(pattern).map_err(|e| {
                    bad("where", format!("$regex of {field}: invalid pattern: {e}"))
                })?)
            }
            "$not" => Op::Not(field_ops(field, arg)?),
            other => {
                return Err(bad(
                    "where",
                    format!(
                        "unknown operator {other} on {field} (known: $eq $ne $gt $gte $lt $lte $in $nin $exists $regex $not)"
                    ),
                ));
            }
        });
    }
    Ok(ops)
}

/// The python-like `where` (`metadata.name == "web" and not (spec.type != "geonode")`).
mod python {
    use super::{Filter, Op, QueryError, Value, bad};

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Name(String),
        Literal(Value),
        Cmp(&'static str),
        Open,
        Close,
        OpenList,
        CloseList,
        Comma,
    }

    fn tokens(text: &str) -> Result<Vec<Token>, QueryError> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if let Some(op) = ["==", "!=", "<=", ">="].into_iter().find(|op| *op == two) {
                out.push(Token::Cmp(op));
                i += 2;
                continue;
            }
            match c {
                '<' => out.push(Token::Cmp("<")),
                '>' => out.push(Token::Cmp(">")),
                '(' => out.push(Token::Open),
                ')' => out.push(Token::Close),
                '[' => out.push(Token::OpenList),
                ']' => out.push(Token::CloseList),
                ',' => out.push(Token::Comma),
                '"' | '\'' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(bad("where", "a string is not closed")),
                            Some(&q) if q == c => break,
                            Some('\\') => {
                                i += 1;
                                match chars.get(i) {
                                    Some(e) => s.push(*e),
                                    None => return Err(bad("where", "a string is not closed")),
                                }
                            }
                            Some(ch) => s.push(*ch),
                        }
                        i += 1;
                    }
                    out.push(Token::Literal(Value::String(s)));
                }
                c if c.is_ascii_digit() || c == '-' => {
                    let start = i;
                    i += 1;
                    while i < chars.len()
                        && (chars[i].is_ascii_digit() || ".eE+-".contains(chars[i]))
                    {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    let n: Value = serde_json::from_str(&text)
                        .map_err(|_| bad("where", format!("{text:?} is not a number")))?;
                    out.push(Token::Literal(n));
                    continue;
                }
                c if c.is_alphabetic() || c == '_' || c == '$' => {
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_alphanumeric() || "_.$-".contains(chars[i]))
                    {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    out.push(match word.as_str() {
                        "True" | "true" => Token::Literal(Value::Bool(true)),
                        "False" | "false" => Token::Literal(Value::Bool(false)),
                        "None" | "null" => Token::Literal(Value::Null),
                        _ => Token::Name(word),
                    });
                    continue;
                }
                other => {
                    return Err(bad(
                        "where",
                        format!(
                            "unexpected {other:?}: a where is JSON or name == \"value\" conditions joined by and/or"
                        ),
                    ));
                }
            }
            i += 1;
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }
        fn next(&mut self) -> Option<Token> {
            let t = self.tokens.get(self.at).cloned();
            self.at += 1;
            t
        }
        fn keyword(&mut self, word: &str) -> bool {
            if self.peek() == Some(&Token::Name(word.into())) {
                self.at += 1;
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Result<Filter, QueryError> {
            let mut parts = vec![self.and()?];
            while self.keyword("or") {
                parts.push(self.and()?);
            }
            Ok(if parts.len() == 1 {
                parts.remove(0)
            } else {
                Filter::Or(parts)
            })
        }
        fn and(&mut self) -> Result<Filter, QueryError> {
            let mut parts = vec![self.not()?];
            while self.keyword("and") {
                parts.push(self.not()?);
            }
            Ok(if parts.len() == 1 {
                parts.remove(0)
            } else {
                Filter::And(parts)
            })
        }
        fn not(&mut self) -> Result<Filter, QueryError> {
            if self.keyword("not") {
                return Ok(Filter::Not(Box::new(self.not()?)));
            }
            self.atom()
        }
        fn list(&mut self) -> Result<Vec<Value>, QueryError> {
            if self.next() != Some(Token::OpenList) {
                return Err(bad("where", "in takes a list: name in [\"a\", \"b\"]"));
            }
            let mut items = Vec::new();
            loop {
                match self.next() {
                    Some(Token::CloseList) => return Ok(items),
                    Some(Token::Literal(v)) => items.push(v),
                    _ => return Err(bad("where", "a list holds literals separated by commas")),
                }
                match self.next() {
                    Some(Token::Comma) => {}
                    Some(Token::CloseList) => return Ok(items),
                    _ => return Err(bad("where", "a list holds literals separated by commas")),
                }
            }
        }
        fn atom(&mut self) -> Result<Filter, QueryError> {
            match self.next() {
                Some(Token::Open) => {
                    let inner = self.or()?;
                    if self.next() != Some(Token::Close) {
                        return Err(bad("where", "a parenthesis is not closed"));
                    }
                    Ok(inner)
                }
                Some(Token::Name(field)) => {
                    if self.keyword("in") {
                        return Ok(Filter::Field(field, Op::In(self.list()?)));
                    }
                    if self.keyword("not") {
                        if !self.keyword("in") {
                            return Err(bad("where", format!("expected `in` after {field} not")));
                        }
                        return Ok(Filter::Field(field, Op::Nin(self.list()?)));
                    }
                    let Some(Token::Cmp(cmp)) = self.next() else {
                        return Err(bad(
                            "where",
                            format!("expected a comparison (== != < <= > >=) after {field}"),
                        ));
                    };
                    let Some(Token::Literal(value)) = self.next() else {
                        return Err(bad(
                            "where",
                            format!("expected a value after {field} {cmp} (strings in quotes)"),
                        ));
                    };
                    Ok(Filter::Field(
                        field,
                        match cmp {
                            "==" => Op::Eq(value),
                            "!=" => Op::Ne(value),
                            "<" => Op::Lt(value),
                            "<=" => Op::Lte(value),
                            ">" => Op::Gt(value),
                            _ => Op::Gte(value),
                        },
                    ))
                }
                other => Err(bad(
                    "where",
                    format!("expected a field name or a parenthesis, found {other:?}"),
                )),
            }
        }
    }

    pub(super) fn parse(text: &str) -> Result<Filter, QueryError> {
        let mut parser = Parser {
            tokens: tokens(text)?,
            at: 0,
        };
        let filter = parser.or()?;
        if parser.at < parser.tokens.len() {
            return Err(bad(
                "where",
                format!(
                    "unexpected {:?} after a complete condition",
                    parser.tokens[parser.at]
                ),
            ));
        }
        Ok(filter)
    }

    /// `[("a", -1), ('b', 1)]`: Eve parses it with `ast.literal_eval`, so both quotes work.
    pub(super) fn sort_list(text: &str) -> Result<Vec<(String, i8)>, QueryError> {
        let tokens = tokens(text).map_err(|e| bad("sort", e.reason))?;
        let mut out = Vec::new();
        let mut i = 1;
        let wrong = || bad("sort", "expected [(\"field\", 1 or -1), ...]");
        if tokens.first() != Some(&Token::OpenList) {
            return Err(wrong());
        }
        loop {
            match tokens.get(i) {
                Some(Token::CloseList) if i + 1 == tokens.len() => return Ok(out),
                Some(Token::Open) => {}
                _ => return Err(wrong()),
            }
            let (
                Some(Token::Literal(Value::String(field))),
                Some(Token::Comma),
                Some(Token::Literal(dir)),
                Some(Token::Close),
            ) = (
                tokens.get(i + 1),
                tokens.get(i + 2),
                tokens.get(i + 3),
                tokens.get(i + 4),
            )
            else {
                return Err(wrong());
            };
            let dir = match dir.as_i64() {
                Some(1) => 1,
                Some(-1) => -1,
                _ => {
                    return Err(bad(
                        "sort",
                        format!("the direction of {field} must be 1 or -1"),
                    ));
                }
            };
            out.push((field.clone(), dir));
            i += 5;
            if tokens.get(i) == Some(&Token::Comma) {
                i += 1;
            }
        }
    }
}

/// A parsed `sort`: fields with 1 (ascending) or -1.
pub fn parse_sort(text: &str) -> Result<Vec<(String, i8)>, QueryError> {
    let text = text.trim();
    if text.starts_with('[') {
        return python::sort_list(text);
    }
    text.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| match f.strip_prefix('-') {
            Some(name) if !name.is_empty() => Ok((name.to_string(), -1)),
            Some(_) => Err(bad("sort", "a lone `-` is not a field")),
            None => Ok((f.to_string(), 1)),
        })
        .collect()
}

/// Sorts `docs` by `keys`; documents missing a field sort first (as in Mongo), ties keep
/// their order.
pub fn sort<T: std::borrow::Borrow<Value>>(docs: &mut [T], keys: &[(String, i8)]) {
    if docs.len() < 2 || keys.is_empty() {
        return;
    }
    // Each document's sort values are looked up once (a dotted path each), not once per
    // comparison; then the documents are put in that order.
    let order: Vec<usize> = {
        let values: Vec<Vec<Option<&Value>>> = docs
            .iter()
            .map(|d| keys.iter().map(|(f, _)| lookup(d.borrow(), f)).collect())
            .collect();
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by(|&a, &b| {
            for (i, (_, dir)) in keys.iter().enumerate() {
                let order = match (values[a][i], values[b][i]) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                };
                let order = if *dir < 0 { order.reverse() } else { order };
                if order != Ordering::Equal {
                    return order;
                }
            }
            Ordering::Equal
        });
        order
    };
    permute(docs, order);
}

/// Reorders `items` so that position i holds what was at `order[i]` (swaps along each cycle).
fn permute<T>(items: &mut [T], mut order: Vec<usize>) {
    for start in 0..items.len() {
        let mut here = start;
        while order[here] != start {
            let next = order[here];
            items.swap(here, next);
            order[here] = here;
            here = next;
        }
        order[here] = here;
    }
}

/// A parsed `projection`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Projection {
    /// Everything.
    #[default]
    All,
    /// Only these dotted fields (and the meta fields).
    Include(Vec<String>),
    /// Everything but these.
    Exclude(Vec<String>),
}

/// Parses `projection` (`{"spec.url": 1}` or `{"status": 0}`; MongoDB refuses a mix).
pub fn parse_projection(text: &str) -> Result<Projection, QueryError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad("projection", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("projection", "must be an object like {\"spec\": 1}"));
    };
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for (field, v) in map {
        match v.as_i64().or(v.as_bool().map(i64::from)) {
            Some(1) => include.push(field),
            Some(0) => exclude.push(field),
            _ => return Err(bad("projection", format!("{field} must be 1 or 0"))),
        }
    }
    match (include.is_empty(), exclude.is_empty()) {
        (true, true) => Ok(Projection::All),
        (false, true) => Ok(Projection::Include(include)),
        (true, false) => Ok(Projection::Exclude(exclude)),
        (false, false) => Err(bad(
            "projection",
            "cannot mix included (1) and excluded (0) fields",
        )),
    }
}

fn remove_path(doc: &mut Value, path: &str) {
    match path.split_once('.') {
        None => {
            if let Value::Object(map) = doc {
                map.remove(path);
            }
        }
        Some((head, rest)) => {
            if let Some(inner) = doc.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

fn copy_path(from: &Value, to: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            if let Some(v) = from.get(path) {
                to.insert(path.to_string(), v.clone());
            }
        }
        Some((head, rest)) => {
            if let Some(inner) = from.get(head).filter(|v| v.is_object()) {
                let slot = to
                    .entry(head.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(slot) = slot {
                    copy_path(inner, slot, rest);
                }
            }
        }
    }
}

impl Projection {
    /// Applies to one document; fields starting with `_` (Eve's meta fields) always stay.
    pub fn apply(&self, doc: Value) -> Value {
        match self {
            Projection::All => doc,
            Projection::Exclude(fields) => {
                let mut doc = doc;
                for f in fields.iter().filter(|f| !f.starts_with('_')) {
                    remove_path(&mut doc, f);
                }
                doc
            }
            Projection::Include(fields) => {
                let mut out = Map::new();
                if let Value::Object(map) = &doc {
                    for (k, v) in map.iter().filter(|(k, _)| k.starts_with('_')) {
                        out.insert(k.clone(), v.clone());
                    }
                }
                for f in fields {
                    copy_path(&doc, &mut out, f);
                }
                Value::Object(out)
            }
        }
    }
}

/// Parses `embedded` (`{"service": 1}`): the fields to embed.
pub fn parse_embedded(text: &str) -> Result<Vec<String>, QueryError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad("embedded", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("embedded", "must be an object like {\"service\": 1}"));
    };
    Ok(map
        .into_iter()
        .filter(|(_, v)| v.as_i64() == Some(1) || v.as_bool() == Some(true))
        .map(|(k, _)| k)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "_id": "prod/web",
            "metadata": {"name": "web", "namespace": "prod", "labels": {"tier": "front"},
                         "creationTimestamp": "2026-01-10T10:00:00Z"},
            "spec": {"checkInterval": "30s", "type": "geonode", "http": {"expectedStatus": [200, 204]}},
            "status": {"latencyMs": 12}
        })
    }

    fn passes(q: &str) -> bool {
        parse_where(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&doc())
    }

    #[test]
    fn mongo_operators_match_dotted_paths() {
        assert!(passes(r#"{"metadata.name": "web"}"#));
        assert!(!passes(r#"{"metadata.name": "db"}"#));
        assert!(passes(r#"{"status.latencyMs": {"$gt": 10, "$lte": 12}}"#));
        assert!(!passes(r#"{"status.latencyMs": {"$lt": 12}}"#));
        assert!(passes(r#"{"spec.type": {"$in": ["geonode", "x"]}}"#));
        assert!(passes(r#"{"spec.type": {"$nin": ["x"]}}"#));
        assert!(passes(r#"{"spec.type": {"$ne": "x"}}"#));
        assert!(passes(r#"{"spec.url": {"$exists": false}}"#));
        assert!(passes(r#"{"metadata.labels.tier": {"$exists": true}}"#));
        assert!(passes(r#"{"metadata.name": {"$regex": "^w"}}"#));
        assert!(
            passes(r#"{"spec.http.expectedStatus": 204}"#),
            "array element"
        );
        assert!(passes(
            r#"{"$or": [{"metadata.name": "db"}, {"metadata.namespace": "prod"}]}"#
        ));
        assert!(!passes(
            r#"{"$and": [{"metadata.name": "web"}, {"metadata.namespace": "x"}]}"#
        ));
        assert!(passes(r#"{"status.latencyMs": {"$not": {"$gt": 20}}}"#));
        assert!(!passes(r#"{"$not": {"metadata.name": "web"}}"#));
    }

    #[test]
    fn dates_compare_as_dates_in_rfc1123() {
        assert!(passes(
            r#"{"metadata.creationTimestamp": {"$gte": "Fri, 09 Jan 2026 00:00:00 GMT"}}"#
        ));
        assert!(!passes(
            r#"{"metadata.creationTimestamp": {"$gt": "Sun, 11 Jan 2026 00:00:00 GMT"}}"#
        ));
    }

    #[test]
    fn the_python_like_form_has_comparisons_logic_and_parentheses() {
        assert!(passes(r#"metadata.name=="web""#));
        assert!(passes(
            r#"metadata.name == 'web' and status.latencyMs >= 12"#
        ));
        assert!(passes(
            r#"metadata.name == "db" or (spec.type != "x" and not status.latencyMs > 20)"#
        ));
        assert!(!passes(r#"not metadata.name == "web""#));
        assert!(passes(r#"spec.type in ["geonode"]"#));
        assert!(passes(r#"spec.type not in ["a", "b"]"#));
        assert!(passes(r#"status.latencyMs < 13.5"#));
    }

    #[test]
    fn malformed_where_says_what_is_wrong() {
        let e = parse_where(r#"{'metadata.name': 'web'}"#).unwrap_err();
        assert!(e.reason.contains("double quotes"), "{e}");
        let e = parse_where(r#"{"metadata.name": {"$near": 1}}"#).unwrap_err();
        assert!(e.reason.contains("unknown operator $near"), "{e}");
        let e = parse_where(r#"{"$where": "x"}"#).unwrap_err();
        assert!(e.reason.contains("$where"), "{e}");
        assert!(parse_where(r#"{"a": "#).is_err());
        assert!(parse_where(r#"a == "x" and"#).is_err());
        assert!(parse_where(r#"(a == "x""#).is_err());
        assert!(parse_where(r#"a ~ 1"#).is_err());
        assert!(parse_where(r#"{"a": {"$regex": "("}}"#).is_err());
    }

    #[test]
    fn sort_takes_both_forms_and_orders_missing_first() {
        assert_eq!(
            parse_sort("metadata.namespace,-metadata.name").unwrap(),
            [
                ("metadata.namespace".into(), 1),
                ("metadata.name".into(), -1)
            ]
        );
        assert_eq!(
            parse_sort(r#"[("status.latencyMs", -1), ('a', 1)]"#).unwrap(),
            [("status.latencyMs".into(), -1), ("a".into(), 1)]
        );
        assert!(parse_sort(r#"[("a", 2)]"#).is_err());
        assert!(parse_sort(r#"[("a" -1)]"#).is_err());
        let mut docs = vec![
            json!({"n": 2, "m": "b"}),
            json!({"m": "z"}),
            json!({"n": 1, "m": "a"}),
            json!({"n": 2, "m": "a"}),
        ];
        sort(&mut docs, &parse_sort("n,-m").unwrap());
        let order: Vec<&str> = docs.iter().map(|d| d["m"].as_str().unwrap()).collect();
        assert_eq!(order, ["z", "a", "b", "a"]);
    }

    #[test]
    fn sorting_by_looked_up_keys_orders_like_comparing_the_documents() {
        // A scrambled set with ties, missing fields and dates: the same order as a plain
        // comparison sort, and stable.
        let keys = parse_sort("-g,d,_id").unwrap();
        let docs: Vec<Value> = (0..300u64)
            .map(|i| {
                let k = (i * 7919) % 300;
                let mut d = json!({"_id": format!("id-{k:03}"), "d": format!("2026-0{}-01T00:00:00Z", 1 + k % 9)});
                if k % 5 != 0 {
                    d["g"] = json!(k % 4);
                }
                d
            })
            .collect();
        let mut want = docs.clone();
        want.sort_by(|a, b| {
            for (field, dir) in &keys {
                let o = match (lookup(a, field), lookup(b, field)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                };
                let o = if *dir < 0 { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        let mut got = docs.clone();
        sort(&mut got, &keys);
        assert_eq!(got, want);
        let mut arcs: Vec<std::sync::Arc<Value>> =
            docs.into_iter().map(std::sync::Arc::new).collect();
        sort(&mut arcs, &keys);
        assert!(arcs.iter().map(|a| a.as_ref()).eq(want.iter()));
    }

    #[test]
    fn dates_of_both_formats_are_read() {
        assert_eq!(date_of("Wed, 25 Feb 1987 17:00:00 GMT"), Some(541_270_800));
        assert_eq!(date_of("1987-02-25T17:00:00Z"), Some(541_270_800));
        assert_eq!(date_of("id-001"), None);
    }

    #[test]
    fn projection_includes_or_excludes_and_keeps_meta_fields() {
        let include = parse_projection(r#"{"spec.type": 1}"#).unwrap();
        assert_eq!(
            include.apply(doc()),
            json!({"_id": "prod/web", "spec": {"type": "geonode"}})
        );
        let exclude = parse_projection(r#"{"status": 0, "_id": 0}"#).unwrap();
        let out = exclude.apply(doc());
        assert!(out.get("status").is_none());
        assert_eq!(out["_id"], "prod/web");
        assert!(parse_projection(r#"{"a": 1, "b": 0}"#).is_err());
        assert!(parse_projection(r#"{"a": 5}"#).is_err());
        assert!(parse_projection("{a: 1}").is_err());
    }

    #[test]
    fn embedded_lists_the_fields_asked_for() {
        assert_eq!(
            parse_embedded(r#"{"service": 1, "x": 0}"#).unwrap(),
            ["service"]
        );
        assert!(parse_embedded("[1]").is_err());
    }
}
