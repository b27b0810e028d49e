//! What the operator commands print for people: aligned tables and short summaries.

use crate::client::{Event, Explanation, FlagState, HealthReport};
use crate::domain::guards::round;
use crate::domain::report::human_duration;
use crate::domain::rollout::Position;

/// A table whose columns are as wide as their widest cell, two spaces apart.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count());
            cells.chain([self.header[i].chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        // A key–value table has no header to print.
        let mut text = if self.header.iter().all(|h| h.is_empty()) {
            String::new()
        } else {
            line(&mut self.header.iter().copied())
        };
        for row in &self.rows {
            text.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        text
    }
}

fn secs(s: i64) -> String {
    human_duration(s.saturating_mul(1000))
}

/// When the controller may move the flag next.
fn next_advance(f: &FlagState) -> String {
    match (f.status.as_str(), f.soak_remaining_secs) {
        ("running", Some(0)) if !f.waiting_for_evidence.is_empty() => {
            format!("waiting for evidence: {}", f.waiting_for_evidence.join(", "))
        }
        ("running", Some(0)) => "when healthy".into(),
        ("running", Some(left)) => format!("in {}", secs(left)),
        ("paused", _) => "paused".into(),
        ("pending", _) => "on start".into(),
        _ => "-".into(),
    }
}

/// `FLAG STATUS STAGE PERCENT VERSION IN-STAGE NEXT-ADVANCE`.
pub fn status_table(flags: &[FlagState]) -> String {
    let mut table = Table::new(&["FLAG", "STATUS", "STAGE", "PERCENT", "VERSION", "IN-STAGE", "NEXT-ADVANCE"]);
    for f in flags {
        let in_stage = match (f.status.as_str(), f.in_stage_secs) {
            ("pending", _) | (_, None) => "-".into(),
            (_, Some(s)) => secs(s),
        };
        table.row(vec![
            f.name.clone(),
            f.status.clone(),
            f.stage.clone(),
            format!("{}%", f.percent),
            f.version.to_string(),
            in_stage,
            next_advance(f),
        ]);
    }
    table.render()
}

/// `AT ACTION FROM→TO ACTOR REASON`, in the order given (newest first from the server).
pub fn history_table(events: &[Event]) -> String {
    let mut table = Table::new(&["AT", "ACTION", "FROM→TO", "ACTOR", "REASON"]);
    for e in events {
        let from = e.from.as_ref().map_or_else(|| "new".to_owned(), Position::to_string);
        table.row(vec![
            e.at.clone(),
            e.action.clone(),
            format!("{from} → {}", e.to),
            e.actor.clone(),
            e.reason.replace(['\r', '\n'], " "),
        ]);
    }
    table.render()
}

fn number(v: f64) -> String {
    round(v).to_string()
}

/// `GUARD VALUE INTERVAL THRESHOLD SAMPLES VERDICT`, then the overall verdict.
pub fn health_table(h: &HealthReport) -> String {
    let mut table = Table::new(&["GUARD", "VALUE", "INTERVAL", "THRESHOLD", "SAMPLES", "VERDICT"]);
    for g in &h.guards {
        let side = if g.breaches_when == "below" { "<" } else { ">" };
        table.row(vec![
            g.guard.clone(),
            g.value.map_or_else(|| "-".to_owned(), number),
            g.interval.map_or_else(|| "-".to_owned(), |i| format!("[{},{}]", number(i.lower), number(i.upper))),
            g.threshold.map_or_else(|| "vs control".to_owned(), |t| format!("{side} {}", number(t))),
            format!("{}/{}", g.samples, g.min_samples),
            g.verdict.clone(),
        ]);
    }
    let mut text = table.render();
    text.push_str(&format!(
        "overall: {} ({} {} {}, {} s window since {})\n",
        h.verdict, h.flag, h.status, h.stage, h.window_secs, h.since
    ));
    if !h.waiting_for_evidence.is_empty() {
        text.push_str(&format!("soak over, waiting for evidence: {}\n", h.waiting_for_evidence.join(", ")));
    }
    text
}

/// The bucketing of one user, line by line.
pub fn explanation(e: &Explanation) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let why = match e.reason.as_str() {
        "internal_user" => "on the internal allow-list".to_owned(),
        "in_rollout" => format!("bucket {} < {}%", e.bucket, e.percent),
        "not_in_rollout" => format!("bucket {} >= {}%", e.bucket, e.percent),
        "flag_off" => format!("the flag is {}: off for everyone", e.status),
        other => other.to_owned(),
    };
    let mut table = Table::new(&["", ""]);
    for (k, v) in [
        ("flag", e.flag.clone()),
        ("user", e.user.clone()),
        ("salt", e.salt.clone().unwrap_or_else(|| "(none)".into())),
        ("hashed key", e.hashed_key.clone()),
        ("bucket", format!("{} (first 4 bytes of md5(hashed key), big-endian, mod 100)", e.bucket)),
        ("status", format!("{}, stage {} ({}%)", e.status, e.stage, e.percent)),
        ("internal user", yes_no(e.internal_user).to_owned()),
        ("enabled", format!("{} ({}: {why})", yes_no(e.enabled), e.reason)),
    ] {
        table.row(vec![k.to_owned(), v]);
    }
    table.render()
}

/// What the emergency stop changed: the incident id, then `FLAG FROM TO`.
pub fn stopped(answer: &serde_json::Value) -> String {
    let mut table = Table::new(&["FLAG", "FROM", "TO"]);
    for f in answer["changed"].as_array().into_iter().flatten() {
        let cell = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
        table.row(vec![cell("flag"), cell("from"), cell("to")]);
    }
    format!("incident {}\n{}", answer["incident"].as_str().unwrap_or("-"), table.render())
}

/// `frozen by operator:ann at … : reason`, or `not frozen`.
pub fn freeze(answer: &serde_json::Value) -> String {
    if answer["frozen"].as_bool() == Some(true) {
        let text = |k: &str| answer[k].as_str().unwrap_or("-").to_owned();
        format!("frozen by {} at {}: {}\n", text("by"), text("at"), text("reason"))
    } else {
        "not frozen: automatic advances and starts go on\n".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let mut t = Table::new(&["A", "LONG-HEADER", "C"]);
        t.row(vec!["wide-cell".into(), "x".into(), "→ ü".into()]);
        assert_eq!(t.render(), "A          LONG-HEADER  C\nwide-cell  x            → ü\n");
    }

    #[test]
    fn next_advance_reads_from_the_status_and_the_soak() {
        let f = |status: &str, soak: Option<i64>| FlagState {
            name: "f".into(),
            status: status.into(),
            stage: "10%".into(),
            percent: 10,
            version: 3,
            stage_entered_at: String::new(),
            in_stage_secs: Some(60),
            soak_remaining_secs: soak,
            waiting_for_evidence: Vec::new(),
        };
        assert_eq!(next_advance(&f("running", Some(3540))), "in 59m 0s");
        assert_eq!(next_advance(&f("running", Some(0))), "when healthy");
        assert_eq!(next_advance(&f("paused", None)), "paused");
        assert_eq!(next_advance(&f("completed", None)), "-");
        let table = status_table(&[f("running", Some(0))]);
        assert_eq!(
            table,
            "FLAG  STATUS   STAGE  PERCENT  VERSION  IN-STAGE  NEXT-ADVANCE\n\
             f     running  10%    10%      3        1m 0s     when healthy\n"
        );
    }
}
