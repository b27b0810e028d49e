//! A flag's definition: its staged plan, internal allow-list and salt, and their validation.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::calendar::AdvanceWindow;
use super::evidence::DEFAULT_CONFIDENCE;
use super::guards::{CompareRules, Decision, Guard, ThresholdOverrides};

/// Longest accepted user id, in bytes.
pub const MAX_USER_LEN: usize = 512;
/// Most stages a plan may have.
pub const MAX_STAGES: usize = 32;
/// Most internal users a flag may list.
pub const MAX_INTERNAL_USERS: usize = 10_000;
/// Longest soak a stage may ask for (one year).
pub const MAX_SOAK_SECS: u64 = 366 * 24 * 3600;

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Share of users (0–100) enabled by bucket; internal-only stages use 0.
    #[serde(default)]
    pub percent: u8,
    /// How long the stage must run healthy before the controller advances (seconds, or a duration
    /// string such as `"1h"`).
    #[serde(default, deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub soak_secs: u64,
    /// Only the flag's internal users get the feature in this stage.
    #[serde(default)]
    pub internal_only: bool,
    /// Guard thresholds for this stage only, over the flag's (`null` turns a guard off).
    #[serde(default, skip_serializing_if = "ThresholdOverrides::is_empty")]
    pub thresholds: ThresholdOverrides,
    /// The flag's `confidence`, for this stage only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The flag's `decision`, for this stage only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The controller does not enter this stage, however healthy, until approved
    /// (`POST /flags/{flag}/approve`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// Distinct operators who must approve (1–10) when `requires_approval`.
    #[serde(default = "default_approvals", skip_serializing_if = "is_one")]
    pub approvals: u8,
    /// The flag's `advance_window`, for entering this stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_window: Option<AdvanceWindow>,
}

fn default_approvals() -> u8 {
    1
}

fn is_one(n: &u8) -> bool {
    *n == 1
}

impl Stage {
    pub fn new(name: &str, percent: u8, soak_secs: u64, internal_only: bool) -> Self {
        Self {
            name: name.to_owned(),
            percent,
            soak_secs,
            internal_only,
            thresholds: ThresholdOverrides::new(),
            confidence: None,
            decision: None,
            requires_approval: false,
            approvals: 1,
            advance_window: None,
        }
    }
}

/// What the controller does when a guard breaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    /// 0% for everyone, at once.
    #[default]
    Rollback,
    /// Freeze at the current percentage for an operator to decide.
    Pause,
}

fn default_min_samples() -> u64 {
    100
}

fn default_window_secs() -> u64 {
    300
}

fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

fn default_breach_reports() -> u64 {
    2
}

fn default_true() -> bool {
    true
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagDefinition {
    #[serde(default = "default_stages")]
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub internal_users: Vec<String>,
    #[serde(default)]
    pub salt: Option<String>,
    /// Guard thresholds over the runbook defaults (`null` turns a guard off).
    #[serde(default)]
    pub thresholds: ThresholdOverrides,
    /// Fewest samples (of a rate's denominator) before a rate is judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Length of the sliding metric window.
    #[serde(default = "default_window_secs", deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub window_secs: u64,
    /// Advance after the soak even when no guard has enough data.
    #[serde(default)]
    pub advance_without_data: bool,
    #[serde(default)]
    pub on_breach: OnBreach,
    /// URLs POSTed on every rollback of this flag (e.g. to pause email campaigns).
    #[serde(default)]
    pub rollback_hooks: Vec<String>,
    /// Guards fed by PromQL queries, pulled by the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGuards>,
    /// How sure a rate decision must be (0.5–0.9999): the confidence of its confidence sequence.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// `sequential` (the default: act only on evidence) or `threshold` (the point estimate).
    #[serde(default)]
    pub decision: Decision,
    /// Consecutive reports over its threshold before a gauge breaches (1–16).
    #[serde(default = "default_breach_reports")]
    pub breach_reports: u64,
    /// Rates judged against the control cohort, e.g. `{"error_rate": {"max_increase": 0.005}}`.
    #[serde(default, skip_serializing_if = "CompareRules::is_empty")]
    pub compare: CompareRules,
    /// Pause the flag when the cohorts' request counts do not match the share it serves.
    #[serde(default = "default_true")]
    pub sample_ratio_check: bool,
    /// HTTP checks the leader runs: before the start, before entering a stage, or during the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckDefinition>,
    /// Automatic advances and scheduled starts happen only inside it; rollbacks at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_window: Option<AdvanceWindow>,
    /// The post-launch review is posted this long after the first start (default 24 h).
    #[serde(default = "default_review_after", deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub review_after_secs: u64,
}

fn default_review_after() -> u64 {
    86_400
}

/// When a check runs.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub enum CheckWhen {
    /// `before_start`: at `scheduled_for − offset_secs`, or at once for an immediate start.
    BeforeStart,
    /// `before_stage:<name>`: before the controller enters that stage.
    BeforeStage(String),
    /// `during`: every `interval_secs` while the flag runs; a failure is a breach.
    During,
}

impl Serialize for CheckWhen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CheckWhen::BeforeStart => s.serialize_str("before_start"),
            CheckWhen::BeforeStage(stage) => s.serialize_str(&format!("before_stage:{stage}")),
            CheckWhen::During => s.serialize_str("during"),
        }
    }
}

impl<'de> Deserialize<'de> for CheckWhen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "before_start" => Ok(CheckWhen::BeforeStart),
            "during" => Ok(CheckWhen::During),
            other => match other.strip_prefix("before_stage:") {
                Some(stage) if !stage.is_empty() => Ok(CheckWhen::BeforeStage(stage.to_owned())),
                _ => Err(serde::de::Error::custom("expected before_start, before_stage:<stage name> or during")),
            },
        }
    }
}

/// A check: the leader POSTs `{flag, stage, run_id, check}` to `url`; a 2xx within
/// `timeout_secs` passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckDefinition {
    pub name: String,
    pub url: String,
    #[schema(value_type = String)]
    pub when: CheckWhen,
    /// `before_start`: how long before the scheduled start it runs.
    #[serde(default, deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub offset_secs: u64,
    /// How long a failed `before_stage` check waits before it runs again, and the period of a
    /// `during` check.
    #[serde(default = "default_check_interval", deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub interval_secs: u64,
    #[serde(default = "default_check_timeout", deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub timeout_secs: u64,
}

fn default_check_interval() -> u64 {
    60
}

fn default_check_timeout() -> u64 {
    30
}

/// PromQL guards: the leader queries `url` every `interval_secs` and feeds each guard the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusGuards {
    /// Base URL of the Prometheus server (its `/api/v1/query` is called).
    pub url: String,
    #[serde(default = "default_query_interval", deserialize_with = "super::duration::secs")]
    #[schema(schema_with = super::duration::secs_schema)]
    pub interval_secs: u64,
    /// One instant query per guard; it must yield a scalar or a one-element vector.
    pub queries: BTreeMap<Guard, String>,
}

fn default_query_interval() -> u64 {
    30
}

impl Default for FlagDefinition {
    fn default() -> Self {
        Self {
            stages: default_stages(),
            internal_users: Vec::new(),
            salt: None,
            thresholds: ThresholdOverrides::new(),
            min_samples: default_min_samples(),
            window_secs: default_window_secs(),
            advance_without_data: false,
            on_breach: OnBreach::Rollback,
            rollback_hooks: Vec::new(),
            prometheus: None,
            confidence: DEFAULT_CONFIDENCE,
            decision: Decision::Sequential,
            breach_reports: default_breach_reports(),
            compare: CompareRules::new(),
            sample_ratio_check: true,
            checks: Vec::new(),
            advance_window: None,
            review_after_secs: default_review_after(),
        }
    }
}

fn validate_window(field: &str, window: &AdvanceWindow) -> Result<(), DefinitionError> {
    window.resolve().map(|_| ()).map_err(|(part, message)| invalid(format!("{field}.{part}"), message))
}

fn validate_checks(definition: &FlagDefinition) -> Result<(), DefinitionError> {
    if definition.checks.len() > 20 {
        return Err(invalid("checks", "at most 20 checks"));
    }
    for (i, check) in definition.checks.iter().enumerate() {
        let field = |f: &str| format!("checks[{i}].{f}");
        if check.name.is_empty() || check.name.len() > 64 || check.name.chars().any(char::is_control) {
            return Err(invalid(field("name"), "must be 1–64 printable characters"));
        }
        if definition.checks[..i].iter().any(|c| c.name == check.name) {
            return Err(invalid(field("name"), format!("duplicate check name {:?}", check.name)));
        }
        if !valid_http_url(&check.url) {
            return Err(invalid(field("url"), "must be an http:// or https:// URL"));
        }
        if let CheckWhen::BeforeStage(stage) = &check.when
            && !definition.stages.iter().any(|s| &s.name == stage)
        {
            return Err(invalid(field("when"), format!("the plan has no stage named {stage:?}")));
        }
        if check.offset_secs > MAX_SOAK_SECS {
            return Err(invalid(field("offset_secs"), format!("must be at most {MAX_SOAK_SECS}")));
        }
        if !(1..=86_400).contains(&check.interval_secs) {
            return Err(invalid(field("interval_secs"), "must be between 1 and 86400"));
        }
        if !(1..=300).contains(&check.timeout_secs) {
            return Err(invalid(field("timeout_secs"), "must be between 1 and 300"));
        }
    }
    Ok(())
}

fn validate_confidence(field: &str, confidence: f64) -> Result<(), DefinitionError> {
    if !(0.5..=0.9999).contains(&confidence) {
        return Err(invalid(field, "must be between 0.5 and 0.9999"));
    }
    Ok(())
}

fn validate_compare(rules: &CompareRules) -> Result<(), DefinitionError> {
    for (guard, rule) in rules {
        let field = |f: &str| format!("compare.{guard}{f}");
        if guard.is_gauge() {
            return Err(invalid(field(""), "only rates can be compared with the control cohort"));
        }
        if rule.max_increase.is_none() && rule.max_relative_increase.is_none() {
            return Err(invalid(field(""), "set max_increase or max_relative_increase"));
        }
        if rule.max_increase.is_some_and(|m| !m.is_finite() || !(0.0..=1.0).contains(&m)) {
            return Err(invalid(field(".max_increase"), "must be a number between 0 and 1"));
        }
        if rule.max_relative_increase.is_some_and(|m| !m.is_finite() || !(0.0..=100.0).contains(&m)) {
            return Err(invalid(field(".max_relative_increase"), "must be a number between 0 and 100"));
        }
    }
    Ok(())
}

fn validate_thresholds(field: &str, overrides: &ThresholdOverrides) -> Result<(), DefinitionError> {
    for (guard, value) in overrides {
        let Some(v) = value else { continue };
        let max = if guard.is_gauge() { super::guards::MAX_GAUGE } else { 1.0 };
        if !v.is_finite() || !(0.0..=max).contains(v) {
            return Err(invalid(
                format!("{field}.{guard}"),
                format!("must be a number between 0 and {max}, or null to turn the guard off"),
            ));
        }
    }
    Ok(())
}

fn validate_rollback_hooks(hooks: &[String]) -> Result<(), DefinitionError> {
    if hooks.len() > 10 {
        return Err(invalid("rollback_hooks", "at most 10 hooks"));
    }
    for (i, url) in hooks.iter().enumerate() {
        if !valid_http_url(url) {
            return Err(invalid(format!("rollback_hooks[{i}]"), "must be an http:// or https:// URL"));
        }
    }
    Ok(())
}

fn validate_prometheus(p: &PrometheusGuards) -> Result<(), DefinitionError> {
    if !valid_http_url(&p.url) {
        return Err(invalid("prometheus.url", "must be an http:// or https:// URL"));
    }
    if !(1..=3600).contains(&p.interval_secs) {
        return Err(invalid("prometheus.interval_secs", "must be between 1 and 3600"));
    }
    if p.queries.is_empty() {
        return Err(invalid("prometheus.queries", "at least one guard query is required"));
    }
    for (guard, query) in &p.queries {
        if query.trim().is_empty() || query.len() > 4096 {
            return Err(invalid(format!("prometheus.queries.{guard}"), "must be 1–4096 characters of PromQL"));
        }
    }
    Ok(())
}

/// Whether `url` is an absolute http(s) URL of sane length.
pub fn valid_http_url(url: &str) -> bool {
    url.len() <= 2048
        && (url.starts_with("http://") || url.starts_with("https://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
}

/// A definition field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError { field: field.into(), message: message.into() }
}

impl FlagDefinition {
    /// Checks the definition: at least one stage, unique non-empty stage names, percent 0–100 and
    /// non-decreasing, internal-only stages at 0%, bounded soak times and lists, every setting
    /// within its range. Returns the first problem found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        self.validate_stages()?;
        if self.internal_users.len() > MAX_INTERNAL_USERS {
            return Err(invalid("internal_users", format!("at most {MAX_INTERNAL_USERS} users")));
        }
        for (i, user) in self.internal_users.iter().enumerate() {
            if !valid_user(user) {
                return Err(invalid(format!("internal_users[{i}]"), format!("must be 1–{MAX_USER_LEN} bytes")));
            }
        }
        if let Some(salt) = &self.salt
            && (salt.is_empty() || salt.len() > 128)
        {
            return Err(invalid("salt", "must be 1–128 bytes, or null for no salt"));
        }
        validate_thresholds("thresholds", &self.thresholds)?;
        if !(1..=1_000_000_000).contains(&self.min_samples) {
            return Err(invalid("min_samples", "must be between 1 and 1000000000"));
        }
        if !(10..=86_400).contains(&self.window_secs) {
            return Err(invalid("window_secs", "must be between 10 and 86400"));
        }
        validate_confidence("confidence", self.confidence)?;
        if !(1..=super::guards::RECENT_REPORTS as u64).contains(&self.breach_reports) {
            return Err(invalid("breach_reports", format!("must be between 1 and {}", super::guards::RECENT_REPORTS)));
        }
        validate_compare(&self.compare)?;
        validate_checks(self)?;
        if let Some(window) = &self.advance_window {
            validate_window("advance_window", window)?;
        }
        if !(60..=MAX_SOAK_SECS).contains(&self.review_after_secs) {
            return Err(invalid("review_after_secs", format!("must be between 60 and {MAX_SOAK_SECS}")));
        }
        validate_rollback_hooks(&self.rollback_hooks)?;
        self.prometheus.as_ref().map_or(Ok(()), validate_prometheus)
    }

    fn validate_stages(&self) -> Result<(), DefinitionError> {
        if self.stages.is_empty() {
            return Err(invalid("stages", "at least one stage is required"));
        }
        if self.stages.len() > MAX_STAGES {
            return Err(invalid("stages", format!("at most {MAX_STAGES} stages")));
        }
        let mut previous = 0u8;
        for (i, stage) in self.stages.iter().enumerate() {
            let field = |f: &str| format!("stages[{i}].{f}");
            if stage.name.is_empty() || stage.name.len() > 64 || stage.name.chars().any(char::is_control) {
                return Err(invalid(field("name"), "must be 1–64 printable characters"));
            }
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                return Err(invalid(field("name"), format!("duplicate stage name {:?}", stage.name)));
            }
            if stage.percent > 100 {
                return Err(invalid(field("percent"), "must be between 0 and 100"));
            }
            if stage.internal_only && stage.percent != 0 {
                return Err(invalid(field("percent"), "must be 0 for an internal_only stage"));
            }
            if stage.percent < previous {
                return Err(invalid(field("percent"), "percentages must not decrease from one stage to the next"));
            }
            if stage.soak_secs > MAX_SOAK_SECS {
                return Err(invalid(field("soak_secs"), format!("must be at most {MAX_SOAK_SECS}")));
            }
            validate_thresholds(&field("thresholds"), &stage.thresholds)?;
            if let Some(confidence) = stage.confidence {
                validate_confidence(&field("confidence"), confidence)?;
            }
            if !(1..=10).contains(&stage.approvals) {
                return Err(invalid(field("approvals"), "must be between 1 and 10"));
            }
            if let Some(window) = &stage.advance_window {
                validate_window(&field("advance_window"), window)?;
            }
            previous = stage.percent;
        }
        Ok(())
    }

    /// The guard settings in force in a stage.
    pub fn guard_config(&self, stage_index: usize) -> super::guards::GuardConfig<'_> {
        static NONE: std::sync::OnceLock<ThresholdOverrides> = std::sync::OnceLock::new();
        let stage = self.stages.get(stage_index);
        let stage_thresholds = match stage {
            Some(stage) => &stage.thresholds,
            None => NONE.get_or_init(ThresholdOverrides::new),
        };
        super::guards::GuardConfig {
            flag_thresholds: &self.thresholds,
            stage_thresholds,
            min_samples: self.min_samples,
            pulled: self.prometheus.as_ref().map(|p| p.queries.keys().copied().collect()).unwrap_or_default(),
            decision: stage.and_then(|s| s.decision).unwrap_or(self.decision),
            confidence: stage.and_then(|s| s.confidence).unwrap_or(self.confidence),
            breach_reports: self.breach_reports,
            compare: &self.compare,
            expected_share: stage
                .filter(|s| self.sample_ratio_check && !s.internal_only)
                .map(|s| f64::from(s.percent) / 100.0),
        }
    }

    /// Index of the stage a rollout resumes at after a rollback: the first that is not internal-only.
    pub fn first_percentage_stage(&self) -> usize {
        self.stages.iter().position(|s| !s.internal_only).unwrap_or(0)
    }
}

/// Flag names: `[A-Za-z0-9._-]{1,128}`, except `.` and `..`: a flag name is a URL path segment,
/// and clients, proxies and path normalizers (RFC 3986 dot segments) rewrite those two, so no
/// client could address such a flag.
pub fn valid_flag_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        // `GET /flags/config` is the clients' configuration, not a flag.
        && name != "config"
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// User ids: 1–512 bytes.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(stages: Vec<Stage>) -> FlagDefinition {
        FlagDefinition { stages, ..FlagDefinition::default() }
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
            (def(vec![Stage::new("a", 101, 0, false)]), "stages[0].percent"),
            (def(vec![Stage::new("a", 50, 0, false), Stage::new("b", 10, 0, false)]), "stages[1].percent"),
            (def(vec![Stage::new("a", 10, 0, false), Stage::new("a", 20, 0, false)]), "stages[1].name"),
            (def(vec![Stage::new("", 10, 0, false)]), "stages[0].name"),
            (def(vec![Stage::new("i", 5, 0, true)]), "stages[0].percent"),
            (def(vec![Stage::new("a", 5, MAX_SOAK_SECS + 1, false)]), "stages[0].soak_secs"),
            (FlagDefinition { internal_users: vec![String::new()], ..FlagDefinition::default() }, "internal_users[0]"),
            (FlagDefinition { salt: Some(String::new()), ..FlagDefinition::default() }, "salt"),
            (
                FlagDefinition { thresholds: [(Guard::ErrorRate, Some(1.5))].into(), ..FlagDefinition::default() },
                "thresholds.error_rate",
            ),
            (
                FlagDefinition {
                    stages: vec![Stage {
                        thresholds: [(Guard::QueueDepth, Some(f64::NAN))].into(),
                        ..Stage::new("a", 5, 0, false)
                    }],
                    ..FlagDefinition::default()
                },
                "stages[0].thresholds.queue_depth",
            ),
            (FlagDefinition { min_samples: 0, ..FlagDefinition::default() }, "min_samples"),
            (FlagDefinition { window_secs: 1, ..FlagDefinition::default() }, "window_secs"),
            (
                FlagDefinition { rollback_hooks: vec!["ftp://x".into()], ..FlagDefinition::default() },
                "rollback_hooks[0]",
            ),
            (
                FlagDefinition { rollback_hooks: vec!["http:///x".into()], ..FlagDefinition::default() },
                "rollback_hooks[0]",
            ),
        ];
        for (d, field) in cases {
            assert_eq!(d.validate().map_err(|e| e.field), Err(field.to_owned()), "{d:?}");
        }
    }

    #[test]
    fn flag_names_and_users() {
        assert!(valid_flag_name("checkout-v2.email_provider"));
        assert!(!valid_flag_name(""));
        assert!(!valid_flag_name("a/b"));
        assert!(!valid_flag_name(&"a".repeat(129)));
        assert!(!valid_flag_name("."));
        assert!(!valid_flag_name(".."));
        assert!(!valid_flag_name("config"), "GET /flags/config is the clients' configuration");
        assert!(valid_flag_name("config-v2"));
        assert!(valid_flag_name("..."));
        assert!(valid_flag_name(".hidden"));
        assert!(valid_user("é"));
        assert!(!valid_user(""));
        assert!(!valid_user(&"u".repeat(513)));
    }
}
