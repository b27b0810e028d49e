//! Answers from the snapshot: the hot path (`GET /flag/{user}`, `GET /flags/{flag}/users/{user}`),
//! OpenFeature's evaluations and `explain`. Nothing here waits on the store.

use std::sync::Arc;
use std::time::Instant;

use super::App;
use crate::domain::bucket;
use crate::rollouts::RolloutError;
use crate::snapshot::{Answer, FlagView};

/// Why a user gets the answer they get (`GET /flags/{flag}/explain`).
pub struct Explanation {
    pub view: Arc<FlagView>,
    pub answer: Answer,
    /// The exact string whose MD5 gives the bucket.
    pub hashed_key: String,
}

impl App {
    /// The hot path: the answer's JSON for `user` from `flag` (the default flag when `None`),
    /// counted in the evaluation metrics. One map lookup, one MD5 and one buffer: the flag's own
    /// parts of the answer were rendered when it entered the snapshot.
    pub fn answer_json(&self, flag: Option<&str>, user: &str) -> Result<Vec<u8>, RolloutError> {
        let name = flag.unwrap_or(&self.default_flag);
        let view = self.snapshot.get(name).ok_or_else(|| RolloutError::NotFound(name.to_owned()))?;
        let started = Instant::now();
        let answer = view.evaluate(user);
        self.telemetry.evaluation(answer.evaluation.reason, started.elapsed());
        Ok(view.answer_json(user, &answer))
    }

    /// One flag's answer for `user`, counted in the evaluation metrics; `None` for a flag this
    /// replica does not serve.
    pub fn evaluate(&self, flag: &str, user: &str) -> Option<(Arc<FlagView>, Answer)> {
        let view = self.snapshot.get(flag)?;
        let started = Instant::now();
        let answer = view.evaluate(user);
        self.telemetry.evaluation(answer.evaluation.reason, started.elapsed());
        Some((view, answer))
    }

    /// Every flag this replica serves, from one read of the snapshot.
    pub fn flags(&self) -> Vec<Arc<FlagView>> {
        self.snapshot.all()
    }

    /// How `user` is bucketed for `flag` (the salt included), answered like an evaluation but not
    /// counted as one.
    pub fn explain(&self, flag: &str, user: &str) -> Result<Explanation, RolloutError> {
        let view = self.snapshot.get(flag).ok_or_else(|| RolloutError::NotFound(flag.to_owned()))?;
        let answer = view.evaluate(user);
        let hashed_key = bucket::hashed_key(view.flag.definition.salt.as_deref(), user);
        Ok(Explanation { view, answer, hashed_key })
    }
}
