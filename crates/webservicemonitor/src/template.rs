//! Argv templates: the commands operators configure (`qsub …`, the restart
//! command) as lists of arguments with `{placeholder}`s.
//!
//! A template is an argument vector, never a shell line, so a value (a tool
//! name, extra arguments) can't inject shell syntax. A placeholder is replaced
//! inside its argument (`--release={release}`); an argument that is exactly
//! `{extra_args}` expands to zero or more arguments. Unknown placeholders are
//! refused when the configuration is loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Placeholders of the scheduler's list command.
pub const LIST_VARS: &[&str] = &[];
/// Placeholders of the scheduler's submit command.
pub const SUBMIT_VARS: &[&str] = &[
    "job_name",
    "tool",
    "user",
    "type",
    "queue",
    "mem",
    "release",
    "home",
    "extra_args",
];
/// Placeholders of the scheduler's stop command.
pub const STOP_VARS: &[&str] = &["job_name", "job_id", "tool", "user"];
/// Placeholders of the monitor's restart command.
pub const RESTART_VARS: &[&str] = &["user", "tool", "release", "backend", "type"];

/// Why a template can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` is not one of the allowed placeholders.
    #[error("unknown placeholder {{{0}}}; allowed: {1}")]
    Unknown(String, String),
    /// A `{` without a closing `}`.
    #[error("unclosed '{{' in argument {0:?}")]
    Unclosed(String),
    /// A list placeholder used inside a longer argument.
    #[error("{{{0}}} expands to several arguments and must be an argument of its own")]
    ListInsideArgument(String),
}

/// A value substituted for a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// One string, substituted in place.
    One(String),
    /// Several arguments; only valid as a whole argument.
    Many(Vec<String>),
}

/// The values of one rendering.
pub type Vars = BTreeMap<&'static str, Value>;

/// A command as an argument vector with placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ArgvTemplate(Vec<String>);

impl ArgvTemplate {
    /// Wraps an argument vector.
    pub fn new(argv: Vec<String>) -> Self {
        ArgvTemplate(argv)
    }

    /// True when there is no program.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw arguments.
    pub fn args(&self) -> &[String] {
        &self.0
    }

    /// Checks that only `allowed` placeholders occur.
    pub fn check(&self, allowed: &[&str]) -> Result<(), TemplateError> {
        for arg in &self.0 {
            for name in placeholders(arg)? {
                if !allowed.contains(&name.as_str()) {
                    let list = if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    };
                    return Err(TemplateError::Unknown(name, list));
                }
            }
        }
        Ok(())
    }

    /// Substitutes `vars`; a placeholder without a value becomes empty.
    pub fn render(&self, vars: &Vars) -> Result<Vec<String>, TemplateError> {
        let mut out = Vec::with_capacity(self.0.len());
        for arg in &self.0 {
            let names = placeholders(arg)?;
            if names.len() == 1 && arg == &format!("{{{}}}", names[0]) {
                match vars.get(names[0].as_str()) {
                    Some(Value::Many(v)) => out.extend(v.iter().cloned()),
                    Some(Value::One(s)) => out.push(s.clone()),
                    None => out.push(String::new()),
                }
                continue;
            }
            let mut s = arg.clone();
            for name in names {
                let value = match vars.get(name.as_str()) {
                    Some(Value::One(v)) => v.clone(),
                    Some(Value::Many(_)) => return Err(TemplateError::ListInsideArgument(name)),
                    None => String::new(),
                };
                s = s.replace(&format!("{{{name}}}"), &value);
            }
            out.push(s);
        }
        Ok(out)
    }
}

fn placeholders(arg: &str) -> Result<Vec<String>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| TemplateError::Unclosed(arg.to_owned()))?;
        names.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_place_and_expands_lists() {
        let t = ArgvTemplate::new(
            [
                "run",
                "--release={release}",
                "-N",
                "{job_name}",
                "{extra_args}",
            ]
            .map(String::from)
            .to_vec(),
        );
        t.check(SUBMIT_VARS).unwrap();
        let mut v = Vars::new();
        v.insert("release", Value::One("buster".into()));
        v.insert("job_name", Value::One("lighttpd-x".into()));
        v.insert("extra_args", Value::Many(vec!["--a".into(), "b c".into()]));
        assert_eq!(
            t.render(&v).unwrap(),
            ["run", "--release=buster", "-N", "lighttpd-x", "--a", "b c"]
        );
        v.insert("extra_args", Value::Many(vec![]));
        assert_eq!(t.render(&v).unwrap().len(), 4);
    }

    #[test]
    fn refuses_unknown_and_unclosed() {
        let t = ArgvTemplate::new(vec!["{tool".into()]);
        assert!(matches!(
            t.check(STOP_VARS),
            Err(TemplateError::Unclosed(_))
        ));
        let t = ArgvTemplate::new(vec!["{home}".into()]);
        assert!(matches!(
            t.check(STOP_VARS),
            Err(TemplateError::Unknown(..))
        ));
    }
}
