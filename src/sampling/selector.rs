//! PromQL series selectors as the metrics rules will write them: `node_cpu_seconds_total`,
//! `{__name__=~"node_.*", job="node"}`, `up{job!="frugal"}`. Matchers `=`, `!=`, `=~`, `!~`;
//! regular expressions are anchored at both ends, as Prometheus anchors them; a label the
//! series lacks has the value `""` (so `{team=""}` matches series without `team`). Values
//! are double-quoted, single-quoted or backquoted strings with Go's escapes (`\"`, `\\`,
//! `\n`, `\t`; none in backquotes).

use regex::Regex;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Matches,
    /// `!~`
    NotMatches,
}

/// One `label op "value"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name (`__name__` for the metric name).
    pub name: String,
    /// The comparison.
    pub op: Op,
    /// The value as written.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// `name="value"`.
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            op: Op::Equal,
            value: value.to_string(),
            regex: None,
        }
    }

    /// A matcher; a regular expression (anchored at both ends) that does not compile is
    /// an error naming the label.
    pub fn new(name: String, op: Op, value: String) -> Result<Matcher, String> {
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("{name}: not a regular expression: {e}"))?,
            ),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Whether a label's value (`""` when the series lacks it) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value,
            (Op::NotEqual, _) => value != self.value,
            (Op::Matches, Some(re)) => re.is_match(value),
            (Op::NotMatches, Some(re)) => !re.is_match(value),
            (Op::Matches | Op::NotMatches, None) => false,
        }
    }
}

/// A parsed selector: every matcher must match.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The matchers, the metric name's (`__name__`) included.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Whether a series (its label set, any order) is selected.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.matches_with(|name| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })
    }

    /// Whether the series whose label values `get` looks up is selected.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(get(&m.name).unwrap_or("")))
    }
}

fn name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!first && c.is_ascii_digit())
}

fn metric_char(c: char, first: bool) -> bool {
    name_char(c, first) || c == ':'
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self, ok: fn(char, bool) -> bool) -> Option<String> {
        self.skip_space();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .take_while(|(i, c)| ok(*c, *i == 0))
            .map(|(i, c)| i + c.len_utf8())
            .last()?;
        let ident = rest[..len].to_string();
        self.at += len;
        Some(ident)
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let mut chars = self.rest().char_indices();
        let Some((_, quote)) = chars.next().filter(|(_, c)| matches!(c, '"' | '\'' | '`')) else {
            return Err(format!("expected a quoted value at {:?}", self.rest()));
        };
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                out.push(match c {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' && quote != '`' {
                escaped = true;
            } else if c == quote {
                self.at += i + 1;
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err("a value's quote is not closed".into())
    }
}

/// Parses a selector, saying what is wrong where it is not one.
pub fn parse(s: &str) -> Result<Selector, String> {
    let mut p = Parser { s, at: 0 };
    let mut matchers = Vec::new();
    let name = p.ident(metric_char);
    if let Some(name) = &name {
        matchers.push(Matcher {
            name: "__name__".into(),
            op: Op::Equal,
            value: name.clone(),
            regex: None,
        });
    }
    if p.eat("{") {
        loop {
            if p.eat("}") {
                break;
            }
            let label = p
                .ident(name_char)
                .ok_or_else(|| format!("expected a label name at {:?}", p.rest()))?;
            let op = if p.eat("=~") {
                Op::Matches
            } else if p.eat("!~") {
                Op::NotMatches
            } else if p.eat("!=") {
                Op::NotEqual
            } else if p.eat("=") {
                Op::Equal
            } else {
                return Err(format!("expected =, !=, =~ or !~ after {label}"));
            };
            let value = p.string()?;
            matchers.push(Matcher::new(label, op, value)?);
            if !p.eat(",") {
                if p.eat("}") {
                    break;
                }
                return Err(format!("expected , or }} at {:?}", p.rest()));
            }
        }
    } else if name.is_none() {
        return Err(format!("not a series selector: {s:?}"));
    }
    p.skip_space();
    if !p.rest().is_empty() {
        return Err(format!("unexpected {:?} after the selector", p.rest()));
    }
    if matchers.iter().all(|m| m.matches("")) {
        // Prometheus refuses these too: they would select every series.
        return Err("a selector needs a matcher that does not match the empty value".into());
    }
    Ok(Selector { matchers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_matchers_and_anchored_regexes_select_as_prometheus_does() {
        let node = series(&[("__name__", "node_cpu_seconds_total"), ("job", "node")]);
        let up = series(&[("__name__", "up"), ("job", "frugal")]);
        let s = parse(r#"{__name__=~"node_.*", job="node"}"#).unwrap();
        assert!(s.matches(&node) && !s.matches(&up));
        // Anchored: "node" alone does not match "node_cpu…".
        assert!(!parse(r#"{__name__=~"node"}"#).unwrap().matches(&node));
        let s = parse(r#"up{job!="node"}"#).unwrap();
        assert!(s.matches(&up) && !s.matches(&node));
        assert!(parse("node_cpu_seconds_total").unwrap().matches(&node));
        assert!(parse(r#"up{job!~"n.*"}"#).unwrap().matches(&up));
        // A missing label is "".
        let s = parse(r#"up{team=""}"#).unwrap();
        assert!(s.matches(&up));
        assert!(!parse(r#"up{team="x"}"#).unwrap().matches(&up));
        // Quotes and escapes.
        let q = series(&[("__name__", "m"), ("path", r#"/a"b"#)]);
        assert!(parse(r#"m{path="/a\"b"}"#).unwrap().matches(&q));
        assert!(parse(r#"m{path='/a"b'}"#).unwrap().matches(&q));
        assert!(parse(r#"m{path=`/a"b`}"#).unwrap().matches(&q));
        assert!(
            parse("kube:rate5m{ job = 'x' , }").is_ok(),
            "spaces, a trailing comma, colons"
        );
    }

    #[test]
    fn what_is_not_a_selector_is_refused_with_the_reason() {
        for (bad, says) in [
            ("", "not a series selector"),
            ("{}", "empty value"),
            (r#"{job=~".*"}"#, "empty value"),
            (r#"{job!~"n.*"}"#, "empty value"),
            (r#"{job="x""#, "expected , or }"),
            (r#"{job=x}"#, "quoted"),
            (r#"{job~"x"}"#, "expected ="),
            (r#"{job=~"("}"#, "regular expression"),
            (r#"up{job="x"} or"#, "unexpected"),
            (r#"{job="x}"#, "not closed"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
