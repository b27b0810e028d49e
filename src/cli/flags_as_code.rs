//! Flags as code: `rollout apply` (files → diff against the server → conditional writes),
//! `rollout export` (the server → the format `apply` reads) and their file formats.
//!
//! A file holds flags under `flags.<name>`, each with the fields of `PUT /flags/{flag}` (the
//! config file's `[flags.*]` without `reconcile`): TOML, YAML or JSON by extension. Definitions
//! are compared parsed, defaults filled in, so a file that spells a default out and one that
//! leaves it out are the same definition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::plan::{FlagDefinition, valid_flag_name};

/// The file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Toml,
    Yaml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// What a file holds: flags by name, nothing else.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsFile {
    #[serde(default)]
    pub flags: BTreeMap<String, FlagDefinition>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: not a .toml, .yaml, .yml or .json file")]
    Extension { path: PathBuf },
    #[error("{path} holds no .toml, .yaml, .yml or .json file")]
    EmptyDir { path: PathBuf },
    #[error("flag {name:?} is declared in both {first} and {second}")]
    Duplicate { name: String, first: PathBuf, second: PathBuf },
    #[error("{path}: {name:?} is not a valid flag name")]
    Name { path: PathBuf, name: String },
    #[error("{path}: flag {name:?}: {message}")]
    Invalid { path: PathBuf, name: String, message: String },
    #[error("flag {0:?} turns a guard off (a null threshold), which TOML cannot write: export it as yaml or json")]
    NullInToml(String),
    #[error("cannot write {0}")]
    Write(String),
}

/// Parses one file's text.
pub fn parse(text: &str, format: Format, path: &Path) -> Result<FlagsFile, FileError> {
    let parsed = match format {
        Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
        Format::Yaml => serde_norway::from_str(text).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|message| FileError::Parse { path: path.to_owned(), message: message.trim_end().to_owned() })
}

/// The flags of a file, or of every `.toml`/`.yaml`/`.yml`/`.json` file of a directory (not its
/// subdirectories), validated; a flag declared twice is an error.
pub fn load(path: &Path) -> Result<BTreeMap<String, FlagDefinition>, FileError> {
    let read_err = |source| FileError::Read { path: path.to_owned(), source };
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && Format::of(p).is_some())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(FileError::EmptyDir { path: path.to_owned() });
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut flags = BTreeMap::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let format = Format::of(&file).ok_or_else(|| FileError::Extension { path: file.clone() })?;
        let text = std::fs::read_to_string(&file).map_err(|source| FileError::Read { path: file.clone(), source })?;
        for (name, definition) in parse(&text, format, &file)?.flags {
            if !valid_flag_name(&name) {
                return Err(FileError::Name { path: file, name });
            }
            if let Err(e) = definition.validate() {
                return Err(FileError::Invalid { path: file, name, message: e.to_string() });
            }
            if let Some(first) = origin.get(&name) {
                return Err(FileError::Duplicate { name, first: first.clone(), second: file });
            }
            origin.insert(name.clone(), file.clone());
            flags.insert(name, definition);
        }
    }
    Ok(flags)
}

/// Writes flags in `format`: exactly what [`load`] reads back.
pub fn render(flags: BTreeMap<String, FlagDefinition>, format: Format) -> Result<String, FileError> {
    if format == Format::Toml
        && let Some((name, _)) = flags.iter().find(|(_, d)| has_null_threshold(d))
    {
        return Err(FileError::NullInToml(name.clone()));
    }
    let file = FlagsFile { flags };
    match format {
        Format::Toml => toml::to_string(&file).map_err(|e| FileError::Write(e.to_string())),
        Format::Yaml => serde_norway::to_string(&file).map_err(|e| FileError::Write(e.to_string())),
        Format::Json => serde_json::to_string_pretty(&file)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| FileError::Write(e.to_string())),
    }
}

fn has_null_threshold(d: &FlagDefinition) -> bool {
    d.thresholds.values().any(Option::is_none) || d.stages.iter().any(|s| s.thresholds.values().any(Option::is_none))
}

/// One field that differs: its path (`stages[1].soak_secs`), old and new value (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// What `apply` does to one flag.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Add,
    Change {
        version: u64,
        fields: Vec<FieldChange>,
    },
    Unchanged,
    /// On the server, not in the files (only with `--prune`).
    Delete,
}

/// The leaves of a JSON value by path: objects and lists of objects are opened (`stages[1].soak_secs`),
/// a list of plain values is one leaf (`internal_users`), and an empty list or object is no leaf
/// (the same as absent).
fn leaves(value: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                leaves(v, p, out);
            }
        }
        Value::Array(items) if items.is_empty() => {}
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path, other.clone());
        }
    }
}

/// The fields that differ between two definitions, in path order.
pub fn diff(old: &FlagDefinition, new: &FlagDefinition) -> Vec<FieldChange> {
    let flat = |d: &FlagDefinition| {
        let mut out = BTreeMap::new();
        leaves(&serde_json::to_value(d).unwrap_or(Value::Null), String::new(), &mut out);
        out
    };
    let (old, new) = (flat(old), flat(new));
    let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    paths
        .into_iter()
        .filter(|p| old.get(*p) != new.get(*p))
        .map(|p| FieldChange { path: p.clone(), old: old.get(p).cloned(), new: new.get(p).cloned() })
        .collect()
}

/// What `apply` would do: every flag of the files against the server's (`name → (version,
/// definition)`), and with `prune` the server's flags the files leave out.
pub fn plan(
    files: &BTreeMap<String, FlagDefinition>,
    server: &BTreeMap<String, (u64, FlagDefinition)>,
    prune: bool,
) -> Vec<(String, Plan)> {
    let mut plans: Vec<(String, Plan)> = files
        .iter()
        .map(|(name, wanted)| {
            let plan = match server.get(name) {
                None => Plan::Add,
                Some((_, current)) if current == wanted => Plan::Unchanged,
                Some((version, current)) => Plan::Change { version: *version, fields: diff(current, wanted) },
            };
            (name.clone(), plan)
        })
        .collect();
    if prune {
        plans.extend(server.keys().filter(|n| !files.contains_key(*n)).map(|n| (n.clone(), Plan::Delete)));
    }
    plans.sort_by(|a, b| a.0.cmp(&b.0));
    plans
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "(unset)".into(),
        Some(v) => v.to_string(),
    }
}

/// The diff as `apply` prints it: `+` added, `~` changed (with each field old → new), `=`
/// unchanged, `-` deleted; then the counts. `would`: the changes are not made yet (a dry run, or
/// a prune waiting for confirmation).
pub fn render_plan(plans: &[(String, Plan)], would: bool, dry_run: bool) -> String {
    let mut text = String::new();
    let (mut added, mut changed, mut unchanged, mut deleted) = (0, 0, 0, 0);
    let would = if would || dry_run { "would be " } else { "" };
    for (name, plan) in plans {
        match plan {
            Plan::Add => {
                added += 1;
                text.push_str(&format!("+ {name}: {would}added\n"));
            }
            Plan::Change { fields, .. } => {
                changed += 1;
                text.push_str(&format!("~ {name}: {would}changed\n"));
                for f in fields {
                    text.push_str(&format!("    {}: {} → {}\n", f.path, show(&f.old), show(&f.new)));
                }
            }
            Plan::Unchanged => {
                unchanged += 1;
                text.push_str(&format!("= {name}: unchanged\n"));
            }
            Plan::Delete => {
                deleted += 1;
                text.push_str(&format!("- {name}: {would}deleted\n"));
            }
        }
    }
    text.push_str(&format!("{added} added, {changed} changed, {unchanged} unchanged, {deleted} deleted"));
    text.push_str(if dry_run { " (dry run: nothing applied)\n" } else { "\n" });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(json: Value) -> FlagDefinition {
        serde_json::from_value(json).expect("a definition")
    }

    #[test]
    fn the_three_formats_read_the_same_flags_and_write_what_they_read() {
        let toml = "[flags.checkout]\nsalt = \"c\"\nwindow_secs = \"5m\"\n\
                    [[flags.checkout.stages]]\nname = \"all\"\npercent = 100\nsoak_secs = \"1h\"\n";
        let yaml = "flags:\n  checkout:\n    salt: c\n    window_secs: 300\n    stages:\n    - {name: all, percent: 100, soak_secs: 3600}\n";
        let json = r#"{"flags": {"checkout": {"salt": "c", "window_secs": 300,
                       "stages": [{"name": "all", "percent": 100, "soak_secs": "1h"}]}}}"#;
        let path = Path::new("f");
        let from_toml = parse(toml, Format::Toml, path).expect("toml").flags;
        assert_eq!(from_toml, parse(yaml, Format::Yaml, path).expect("yaml").flags);
        assert_eq!(from_toml, parse(json, Format::Json, path).expect("json").flags);
        for format in [Format::Toml, Format::Yaml, Format::Json] {
            let text = render(from_toml.clone(), format).expect("renders");
            assert_eq!(parse(&text, format, path).expect("reads back").flags, from_toml, "{format:?}:\n{text}");
        }
    }

    #[test]
    fn a_typo_is_an_error_naming_the_file() {
        let e = parse("[flags.a]\nsoak = 1\n", Format::Toml, Path::new("flags.toml")).expect_err("typo");
        assert!(e.to_string().starts_with("flags.toml is not valid") && e.to_string().contains("soak"), "{e}");
        assert!(parse("flag: {}\n", Format::Yaml, Path::new("f.yaml")).is_err(), "only `flags` at the top");
    }

    #[test]
    fn the_diff_names_each_changed_field_old_and_new() {
        let old = definition(serde_json::json!({"salt": "a"}));
        let new = definition(serde_json::json!({"salt": "b", "internal_users": ["ann"],
            "stages": [{"name": "internal", "internal_only": true, "soak_secs": 3600},
                       {"name": "10%", "percent": 10, "soak_secs": 1800},
                       {"name": "50%", "percent": 50, "soak_secs": 3600},
                       {"name": "100%", "percent": 100, "soak_secs": 79200}]}));
        let paths: Vec<(String, String, String)> =
            diff(&old, &new).into_iter().map(|f| (f.path, show(&f.old), show(&f.new))).collect();
        assert_eq!(
            paths,
            [
                ("internal_users".to_owned(), "(unset)".to_owned(), "[\"ann\"]".to_owned()),
                ("salt".to_owned(), "\"a\"".to_owned(), "\"b\"".to_owned()),
                ("stages[1].soak_secs".to_owned(), "3600".to_owned(), "1800".to_owned()),
            ]
        );
        let server = BTreeMap::from([("a".to_owned(), (3, old.clone())), ("gone".to_owned(), (1, old.clone()))]);
        let files = BTreeMap::from([("a".to_owned(), new.clone()), ("b".to_owned(), old.clone())]);
        let plans = plan(&files, &server, true);
        let kinds: Vec<(&str, bool)> = plans
            .iter()
            .map(|(n, p)| (n.as_str(), matches!(p, Plan::Change { version: 3, .. } | Plan::Add | Plan::Delete)))
            .collect();
        assert_eq!(kinds, [("a", true), ("b", true), ("gone", true)]);
        assert_eq!(plan(&files, &server, false).len(), 2, "nothing deleted without prune");
    }

    #[test]
    fn toml_cannot_turn_a_guard_off_so_export_says_so() {
        let off = definition(serde_json::json!({"thresholds": {"error_rate": null}}));
        let e = render(BTreeMap::from([("f".to_owned(), off.clone())]), Format::Toml).expect_err("null");
        assert!(matches!(e, FileError::NullInToml(ref n) if n == "f"), "{e}");
        let yaml = render(BTreeMap::from([("f".to_owned(), off.clone())]), Format::Yaml).expect("yaml");
        assert_eq!(parse(&yaml, Format::Yaml, Path::new("f")).expect("reads").flags["f"], off);
    }
}
