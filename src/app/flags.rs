//! Operators' use cases: define flags and drive their rollouts (through [`crate::rollouts`], which
//! keeps the version rules), and read them back: the flags as served, their guard health, their
//! history, the post-launch review and the audit of deleted flags.

use std::sync::Arc;

use super::App;
use crate::controller;
use crate::domain::guards::{Health, HealthPoint};
use crate::domain::plan::FlagDefinition;
use crate::domain::rollout::{AuditEvent, Command, Deletion, Flag, Status};
use crate::review::Review;
use crate::rollouts::{Request, RolloutError, window_start};
use crate::snapshot::FlagView;

/// A flag, and the server time it was read or written at: the API shows soak timers against it.
pub struct FlagAt {
    pub flag: Flag,
    pub now_ms: i64,
}

/// Every flag this replica serves, and the server time it was read at.
pub struct Listing {
    pub flags: Vec<Arc<FlagView>>,
    pub now_ms: i64,
}

/// A flag as this replica serves it, with what the controller waits on.
pub struct Shown {
    pub view: Arc<FlagView>,
    pub now_ms: i64,
    /// The soak is over but these guards are still inconclusive (empty otherwise).
    pub waiting_for_evidence: Vec<&'static str>,
    /// What else holds it: an approval, the advance window, a check, the freeze.
    pub waiting_for: Option<crate::timeline::WaitingFor>,
}

/// The leader's readings of a flag's guards over its current stage entry.
pub struct GuardHistory {
    pub view: Arc<FlagView>,
    /// Oldest first.
    pub points: Vec<HealthPoint>,
}

/// The guard verdicts of a flag's current stage.
pub struct GuardHealth {
    pub view: Arc<FlagView>,
    pub health: Health,
    /// The window counts only since this moment (the stage start, or the window's length ago).
    pub since_ms: i64,
    pub waiting_for_evidence: Vec<&'static str>,
}

impl App {
    /// Every flag this replica serves.
    pub fn list(&self) -> Listing {
        Listing { now_ms: self.clock.now_ms(), flags: self.snapshot.all() }
    }

    /// One flag as this replica serves it.
    pub async fn show(&self, name: &str) -> Result<Shown, RolloutError> {
        let view = self.snapshot.get(name).ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
        let now_ms = self.clock.now_ms();
        let waiting_for_evidence = self.waiting_for_evidence(&view.flag).await;
        // Like the evidence above: the flag is served from the snapshot even when the store is
        // down, so a failed read leaves `waiting_for` out instead of failing the request.
        let waiting_for = self.timeline.waiting_for(&view.flag).await.unwrap_or_else(|e| {
            tracing::debug!(flag = %view.flag.name, error = %e, "cannot read what the flag waits for");
            None
        });
        Ok(Shown { view, now_ms, waiting_for_evidence, waiting_for })
    }

    /// Creates the flag or replaces its definition; true when created. With `expected_version`,
    /// refused unless the flag is at that version (0: unless it does not exist yet).
    pub async fn define(
        &self,
        name: &str,
        definition: FlagDefinition,
        actor: String,
        expected_version: Option<u64>,
    ) -> Result<(FlagAt, bool), RolloutError> {
        let req = Request { expected_version, ..Request::new(actor, "definition saved") };
        let (flag, created) = self.rollouts.put(name, definition, &req).await?;
        Ok((FlagAt { flag, now_ms: self.clock.now_ms() }, created))
    }

    /// An operator's command, refused when the flag is no longer at `expected_version` (a
    /// rollback excepted: it wins every race).
    pub async fn command(
        &self,
        name: &str,
        command: Command,
        actor: String,
        reason: String,
        expected_version: Option<u64>,
    ) -> Result<FlagAt, RolloutError> {
        let req = Request { expected_version, cause: Some("operator".into()), ..Request::new(actor, reason) };
        let flag = self.rollouts.transition(name, command, &req).await?;
        Ok(FlagAt { flag, now_ms: self.clock.now_ms() })
    }

    /// Deletes a flag everywhere; the deletion audit keeps who, why and what it was.
    pub async fn delete(&self, name: &str, actor: String, reason: String) -> Result<Deletion, RolloutError> {
        self.rollouts.delete(name, &Request::new(actor, reason)).await
    }

    /// A flag's audit events, newest first.
    pub async fn history(&self, name: &str, limit: usize) -> Result<Vec<AuditEvent>, RolloutError> {
        let events = self.store.history(name, limit).await?;
        if events.is_empty() && self.store.get_flag(name).await?.is_none() {
            return Err(RolloutError::NotFound(name.to_owned()));
        }
        Ok(events)
    }

    /// The deletion audit, newest first.
    pub async fn deletions(&self, limit: usize) -> Result<Vec<Deletion>, RolloutError> {
        Ok(self.store.deletions(limit).await?)
    }

    /// The guard verdicts of a flag's current stage, over its window.
    pub async fn guard_health(&self, name: &str) -> Result<GuardHealth, RolloutError> {
        let view = self.snapshot.get(name).ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
        let health = self.rollouts.health(&view.flag).await?;
        let now = self.clock.now_ms();
        let since_ms = window_start(&view.flag, now);
        let waiting_for_evidence = controller::waiting_for_evidence(&view.flag, &health, now);
        Ok(GuardHealth { view, health, since_ms, waiting_for_evidence })
    }

    /// The guard history of a flag's current stage entry (what the dashboard charts).
    pub async fn guard_history(&self, name: &str) -> Result<GuardHistory, RolloutError> {
        let view = self.snapshot.get(name).ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
        let points = self.rollouts.health_history(&view.flag).await?;
        Ok(GuardHistory { view, points })
    }

    /// The post-launch review's material: the stored flag, its whole history, and the current
    /// stage's verdicts (the metric windows of past stages expire).
    pub async fn review(&self, name: &str) -> Result<Review, RolloutError> {
        Review::gather(&*self.store, &self.rollouts, name).await
    }

    /// The guards a running flag whose soak is over still waits on (empty otherwise, without a
    /// store read). The flag is served from the snapshot even when the store is down, so a failed
    /// read says nothing here; the health route reports it.
    async fn waiting_for_evidence(&self, flag: &Flag) -> Vec<&'static str> {
        let now = self.clock.now_ms();
        if flag.state.status != Status::Running || flag.soak_remaining_ms(now) != Some(0) {
            return Vec::new();
        }
        match self.rollouts.health(flag).await {
            Ok(health) => controller::waiting_for_evidence(flag, &health, now),
            Err(e) => {
                tracing::debug!(flag = %flag.name, error = %e, "cannot read the guards for waiting_for_evidence");
                Vec::new()
            }
        }
    }
}
