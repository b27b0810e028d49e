//! The runbook's timeline as the edge asks for it; [`crate::timeline::Timeline`] does the work
//! (the controller drives the same timeline on its ticks).

use std::sync::Arc;

use super::App;
use crate::domain::rollout::Flag;
use crate::rollouts::Request;
use crate::snapshot::FlagView;
use crate::timeline::{CheckRun, Freeze, Stopped, TimelineError};

impl App {
    /// Starts a flag now (after its `before_start` checks) or schedules it at `at_ms`.
    pub async fn start(&self, name: &str, at_ms: Option<i64>, req: &Request) -> Result<Flag, TimelineError> {
        match at_ms {
            Some(at) => self.timeline.schedule(name, at, req).await,
            None => self.timeline.start_now(name, req).await,
        }
    }

    pub async fn approve(&self, name: &str, stage: &str, req: &Request) -> Result<Flag, TimelineError> {
        self.timeline.approve(name, stage, req).await
    }

    /// The flag as this replica serves it, and its checks' latest runs.
    pub async fn checks(&self, name: &str) -> Result<(Arc<FlagView>, Vec<CheckRun>), TimelineError> {
        let view = self.snapshot.get(name).ok_or_else(|| crate::rollouts::RolloutError::NotFound(name.to_owned()))?;
        let runs = self.timeline.check_runs(&view.flag).await?;
        Ok((view, runs))
    }

    pub async fn rollback_all(&self, req: &Request) -> Result<Stopped, TimelineError> {
        self.timeline.rollback_all(req).await
    }

    pub async fn frozen(&self) -> Result<Option<Freeze>, TimelineError> {
        Ok(self.timeline.frozen().await?)
    }

    pub async fn freeze(&self, by: &str, reason: &str) -> Result<Freeze, TimelineError> {
        self.timeline.freeze(by, reason).await
    }

    pub async fn unfreeze(&self, by: &str, reason: &str) -> Result<Option<Freeze>, TimelineError> {
        self.timeline.unfreeze(by, reason).await
    }

    /// The time the edge renders flags at.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
