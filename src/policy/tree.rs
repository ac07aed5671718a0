//! A walker over the policy's YAML tree that records every problem with its path and keeps
//! going, so `frugal check` can report all mistakes at once.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::load::Problem;

/// Collected problems, shared by every node of one walk.
#[derive(Default)]
pub(super) struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    /// Records a problem; only the first one at a path is kept, so an unset `${VAR}` is
    /// not reported again as a bad value.
    pub fn push(&self, path: &str, message: impl Into<String>) {
        let mut v = self.0.borrow_mut();
        if v.iter().any(|p| p.path == path) {
            return;
        }
        v.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// A value at a path.
#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    pub value: &'a Value,
    pub path: &'a str,
    pub problems: &'a Problems,
}

impl<'a> Node<'a> {
    pub fn problem(&self, message: impl Into<String>) {
        self.problems.push(self.path, message);
    }

    /// The value as a mapping, or a problem.
    pub fn map(&self) -> Option<Obj<'a>> {
        match self.value {
            Value::Object(m) => Some(Obj {
                map: m,
                path: self.path.to_string(),
                known: Vec::new(),
                problems: self.problems,
            }),
            Value::Null => Some(Obj {
                map: empty_map(),
                path: self.path.to_string(),
                known: Vec::new(),
                problems: self.problems,
            }),
            other => {
                self.problem(format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// The value as a list (a single scalar counts as a list of one), or a problem.
    pub fn list(&self) -> Option<Vec<&'a Value>> {
        match self.value {
            Value::Array(a) => Some(a.iter().collect()),
            Value::Null => Some(Vec::new()),
            other => Some(vec![other]),
        }
    }

    /// The value as text: strings as they are, numbers and booleans as written.
    pub fn text(&self) -> Option<String> {
        match self.value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.problem(format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub fn bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
            other => {
                self.problem(format!("expected true or false, found {}", show(other)));
                None
            }
        }
    }

    pub fn u64(&self) -> Option<u64> {
        match self.value {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) if s.trim().parse::<u64>().is_ok() => s.trim().parse().ok(),
            other => {
                self.problem(format!("{} is not a whole number", show(other)));
                None
            }
        }
    }

    /// Parses the value's text with `parse`, recording its error message.
    pub fn parse<T>(&self, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let t = self.text()?;
        match parse(&t) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(e);
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn one_of(&self, allowed: &[&str]) -> Option<String> {
        let t = self.text()?;
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(&t)) {
            Some(t.to_ascii_lowercase())
        } else {
            self.problem(format!(
                "{t:?} is not allowed (allowed: {})",
                allowed.join(", ")
            ));
            None
        }
    }
}

/// A mapping being read: every key asked for is "known"; the rest are reported by
/// [`Obj::finish`] as unknown, with a suggestion when one is close.
pub(super) struct Obj<'a> {
    map: &'a Map<String, Value>,
    pub path: String,
    known: Vec<&'static str>,
    problems: &'a Problems,
}

impl<'a> Obj<'a> {
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, if present (null counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some((v, self.child_path(key))),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn problems(&self) -> &'a Problems {
        self.problems
    }

    /// Reports keys that were never asked for; returns how many there were.
    pub fn finish(self) -> usize {
        let mut unknown = 0;
        for key in self.map.keys() {
            if self.known.iter().any(|k| k == key) {
                continue;
            }
            let path = self.child_path(key);
            let hint = match closest(key, &self.known) {
                Some(k) => format!("unknown key (did you mean {k}?)"),
                None if self.known.is_empty() => "unknown key".to_string(),
                None => format!("unknown key (allowed: {})", self.known.join(", ")),
            };
            self.problems.push(&path, hint);
            unknown += 1;
        }
        unknown
    }
}

/// Calls `f` with the node under `key`, if present.
pub(super) fn with<'a, T>(
    obj: &mut Obj<'a>,
    key: &'static str,
    f: impl FnOnce(Node<'_>) -> Option<T>,
) -> Option<T> {
    let (v, path) = obj.get(key)?;
    let problems = obj.problems();
    f(Node {
        value: v,
        path: &path,
        problems,
    })
}

fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

/// The known key closest to `key` by edit distance, if close enough to be a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        assert_eq!(
            closest("latncy_over", &["latency_over", "status_code"]),
            Some("latency_over")
        );
        assert_eq!(closest("zzz", &["latency_over", "status_code"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
