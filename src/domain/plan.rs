//! A flag's definition: its staged plan, internal allow-list and salt, and their validation.

use serde::{Deserialize, Serialize};

/// Longest accepted user id, in bytes.
pub const MAX_USER_LEN: usize = 512;
/// Most stages a plan may have.
pub const MAX_STAGES: usize = 32;
/// Most internal users a flag may list.
pub const MAX_INTERNAL_USERS: usize = 10_000;
/// Longest soak a stage may ask for (one year).
pub const MAX_SOAK_SECS: u64 = 366 * 24 * 3600;

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Share of users (0–100) enabled by bucket; internal-only stages use 0.
    #[serde(default)]
    pub percent: u8,
    /// How long the stage must run healthy before the controller advances.
    #[serde(default)]
    pub soak_secs: u64,
    /// Only the flag's internal users get the feature in this stage.
    #[serde(default)]
    pub internal_only: bool,
}

impl Stage {
    fn new(name: &str, percent: u8, soak_secs: u64, internal_only: bool) -> Self {
        Self {
            name: name.to_owned(),
            percent,
            soak_secs,
            internal_only,
        }
    }
}

/// The runbook's plan: internal 1h → 10% 1h → 50% 1h → 100% 22h (review at T+24h).
pub fn default_stages() -> Vec<Stage> {
    vec![
        Stage::new("internal", 0, 3600, true),
        Stage::new("10%", 10, 3600, false),
        Stage::new("50%", 50, 3600, false),
        Stage::new("100%", 100, 22 * 3600, false),
    ]
}

/// What an operator declares about a flag. Every field is optional on input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagDefinition {
    #[serde(default = "default_stages")]
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub internal_users: Vec<String>,
    #[serde(default)]
    pub salt: Option<String>,
}

impl Default for FlagDefinition {
    fn default() -> Self {
        Self {
            stages: default_stages(),
            internal_users: Vec::new(),
            salt: None,
        }
    }
}

/// A definition field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        message: message.into(),
    }
}

impl FlagDefinition {
    /// Checks the plan: at least one stage, unique non-empty names, percent 0–100 and
    /// non-decreasing, internal-only stages at 0%, bounded soak times and lists.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.stages.is_empty() {
            return Err(invalid("stages", "at least one stage is required"));
        }
        if self.stages.len() > MAX_STAGES {
            return Err(invalid("stages", format!("at most {MAX_STAGES} stages")));
        }
        let mut previous = 0u8;
        for (i, stage) in self.stages.iter().enumerate() {
            let field = |f: &str| format!("stages[{i}].{f}");
            if stage.name.is_empty()
                || stage.name.len() > 64
                || stage.name.chars().any(char::is_control)
            {
                return Err(invalid(field("name"), "must be 1–64 printable characters"));
            }
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                return Err(invalid(
                    field("name"),
                    format!("duplicate stage name {:?}", stage.name),
                ));
            }
            if stage.percent > 100 {
                return Err(invalid(field("percent"), "must be between 0 and 100"));
            }
            if stage.internal_only && stage.percent != 0 {
                return Err(invalid(
                    field("percent"),
                    "must be 0 for an internal_only stage",
                ));
            }
            if stage.percent < previous {
                return Err(invalid(
                    field("percent"),
                    "percentages must not decrease from one stage to the next",
                ));
            }
            if stage.soak_secs > MAX_SOAK_SECS {
                return Err(invalid(
                    field("soak_secs"),
                    format!("must be at most {MAX_SOAK_SECS}"),
                ));
            }
            previous = stage.percent;
        }
        if self.internal_users.len() > MAX_INTERNAL_USERS {
            return Err(invalid(
                "internal_users",
                format!("at most {MAX_INTERNAL_USERS} users"),
            ));
        }
        for (i, user) in self.internal_users.iter().enumerate() {
            if !valid_user(user) {
                return Err(invalid(
                    format!("internal_users[{i}]"),
                    format!("must be 1–{MAX_USER_LEN} bytes"),
                ));
            }
        }
        if let Some(salt) = &self.salt
            && (salt.is_empty() || salt.len() > 128)
        {
            return Err(invalid("salt", "must be 1–128 bytes, or null for no salt"));
        }
        Ok(())
    }

    /// Index of the stage a rollout resumes at after a rollback: the first that is not internal-only.
    pub fn first_percentage_stage(&self) -> usize {
        self.stages
            .iter()
            .position(|s| !s.internal_only)
            .unwrap_or(0)
    }
}

/// Flag names: `[A-Za-z0-9._-]{1,128}`.
pub fn valid_flag_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// User ids: 1–512 bytes.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(stages: Vec<Stage>) -> FlagDefinition {
        FlagDefinition {
            stages,
            ..FlagDefinition::default()
        }
    }

    #[test]
    fn the_runbook_plan_is_valid_and_resumes_at_ten_percent() {
        let d = FlagDefinition::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.stages[d.first_percentage_stage()].name, "10%");
    }

    #[test]
    fn invalid_plans_name_the_field() {
        let cases = [
            (def(vec![]), "stages"),
            (
                def(vec![Stage::new("a", 101, 0, false)]),
                "stages[0].percent",
            ),
            (
                def(vec![
                    Stage::new("a", 50, 0, false),
                    Stage::new("b", 10, 0, false),
                ]),
                "stages[1].percent",
            ),
            (
                def(vec![
                    Stage::new("a", 10, 0, false),
                    Stage::new("a", 20, 0, false),
                ]),
                "stages[1].name",
            ),
            (def(vec![Stage::new("", 10, 0, false)]), "stages[0].name"),
            (def(vec![Stage::new("i", 5, 0, true)]), "stages[0].percent"),
            (
                def(vec![Stage::new("a", 5, MAX_SOAK_SECS + 1, false)]),
                "stages[0].soak_secs",
            ),
            (
                FlagDefinition {
                    internal_users: vec![String::new()],
                    ..FlagDefinition::default()
                },
                "internal_users[0]",
            ),
            (
                FlagDefinition {
                    salt: Some(String::new()),
                    ..FlagDefinition::default()
                },
                "salt",
            ),
        ];
        for (d, field) in cases {
            assert_eq!(
                d.validate().map_err(|e| e.field),
                Err(field.to_owned()),
                "{d:?}"
            );
        }
    }

    #[test]
    fn flag_names_and_users() {
        assert!(valid_flag_name("checkout-v2.email_provider"));
        assert!(!valid_flag_name(""));
        assert!(!valid_flag_name("a/b"));
        assert!(!valid_flag_name(&"a".repeat(129)));
        assert!(valid_user("é"));
        assert!(!valid_user(""));
        assert!(!valid_user(&"u".repeat(513)));
    }
}
