//! A walker over the policy's YAML tree that records every problem with its path and keeps
//! going, so `frugal check` can report all mistakes at once. It knows YAML shapes, not what
//! any section means.

use serde_json::{Map, Value};

use super::problem::Problems;

/// A value at a path.
#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    /// The value as the YAML (after `${VAR}` substitution) has it.
    pub value: &'a Value,
    /// Its dotted path, for problems.
    pub path: &'a str,
    /// Where problems are recorded.
    pub problems: &'a Problems,
}

impl<'a> Node<'a> {
    /// Records a problem at this node's path.
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

    /// The entries of a mapping whose keys are the user's own (headers, attributes), each
    /// with its path; a problem if the value is not a mapping.
    pub fn entries(&self) -> Option<Vec<(&'a str, &'a Value, String)>> {
        match self.value {
            Value::Object(m) => Some(
                m.iter()
                    .map(|(k, v)| (k.as_str(), v, child_path(self.path, k)))
                    .collect(),
            ),
            Value::Null => Some(Vec::new()),
            other => {
                self.problem(format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// The value as a list: a single value counts as a list of one, nothing as none.
    pub fn list(&self) -> Vec<&'a Value> {
        match self.value {
            Value::Array(a) => a.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        }
    }

    /// Calls `f` with each element of a list and its index, each at its own path
    /// (`key[i]`); a problem (`expected {what}`) and `false` if the value is not a list.
    pub fn each_item(&self, what: &str, f: impl FnMut(usize, Node<'_>)) -> bool {
        let Value::Array(items) = self.value else {
            self.problem(format!("expected {what}"));
            return false;
        };
        self.walk(items.iter(), f);
        true
    }

    /// Like [`Node::each_item`] over [`Node::list`]: a single value counts as a list of
    /// one, nothing as none.
    pub fn each_listed(&self, f: impl FnMut(usize, Node<'_>)) {
        self.walk(self.list().into_iter(), f);
    }

    fn walk(&self, items: impl Iterator<Item = &'a Value>, mut f: impl FnMut(usize, Node<'_>)) {
        for (i, value) in items.enumerate() {
            let path = format!("{}[{i}]", self.path);
            f(
                i,
                Node {
                    value,
                    path: &path,
                    problems: self.problems,
                },
            );
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

    /// The value as a boolean (`true`/`false`, also quoted), or a problem.
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

    /// The value as a whole number (also quoted), or a problem.
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

    /// One of a fixed set of words (in any case), as the value it stands for; a problem
    /// naming the allowed words otherwise.
    pub fn choice<T: Clone>(&self, choices: &[(&str, T)]) -> Option<T> {
        let t = self.text()?;
        if let Some((_, v)) = choices.iter().find(|(w, _)| w.eq_ignore_ascii_case(&t)) {
            return Some(v.clone());
        }
        let allowed: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        self.problem(format!(
            "{t:?} is not allowed (allowed: {})",
            allowed.join(", ")
        ));
        None
    }
}

/// A mapping being read: every key asked for is "known"; the rest are reported by
/// [`Obj::finish`] as unknown, with a suggestion when one is close.
pub(super) struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// The mapping's own path.
    pub path: String,
    known: Vec<&'static str>,
    problems: &'a Problems,
}

impl<'a> Obj<'a> {
    /// The path of the value under `key`.
    pub fn child_path(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    /// The value under `key`, if present (null counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some((v, self.child_path(key))),
        }
    }

    /// Whether `key` is present (null counts as absent), without marking it known.
    pub fn has(&self, key: &str) -> bool {
        !matches!(self.map.get(key), None | Some(Value::Null))
    }

    /// The problems this walk records into.
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

/// Calls `f` with the node under `key`; a key left out reads as an empty mapping, so a
/// section that is not written gets exactly the defaults of one written as `{}`.
pub(super) fn section<'a, T>(
    obj: &mut Obj<'a>,
    key: &'static str,
    f: impl FnOnce(Node<'_>) -> T,
) -> T {
    static ABSENT: Value = Value::Null;
    let (v, path) = obj
        .get(key)
        .unwrap_or_else(|| (&ABSENT, obj.child_path(key)));
    f(Node {
        value: v,
        path: &path,
        problems: obj.problems(),
    })
}

/// Calls `f` with the node under `key`; a key left out is the problem `missing`.
pub(super) fn required<'a, T>(
    obj: &mut Obj<'a>,
    key: &'static str,
    missing: &str,
    f: impl FnOnce(Node<'_>) -> Option<T>,
) -> Option<T> {
    match obj.get(key) {
        Some((v, path)) => f(Node {
            value: v,
            path: &path,
            problems: obj.problems(),
        }),
        None => {
            obj.problems().push(&obj.child_path(key), missing);
            None
        }
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
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
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
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
