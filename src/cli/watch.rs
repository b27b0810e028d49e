//! `rollout status [FLAG] --watch`: redraws the status on each change from `GET /stream` until
//! Ctrl-C. The stream says *that* a flag changed; the status is read again from the admin API, so
//! what is drawn is exactly what `rollout status` prints.
//!
//! On a terminal each redraw replaces the screen; into a pipe each state is appended (one table,
//! or one JSON/YAML document, per change), like `kubectl get -w`.

use std::io::IsTerminal;
use std::time::Duration;

use rollout_sdk::sse;

use crate::client::{Client, ClientError};

/// Without a byte for this long (the server's heartbeat is 15 s by default), the stream is
/// taken for dead and opened again.
const IDLE: Duration = Duration::from_secs(60);
/// Pause before reopening a stream that ended or failed.
const REOPEN: Duration = Duration::from_secs(1);

/// Whether a stream event concerns what is watched: the snapshot always, a change when it is the
/// watched flag's (or any, when watching every flag).
fn concerns(event: &sse::Event, flag: Option<&str>) -> bool {
    match event.event.as_str() {
        "snapshot" => true,
        "change" => flag.is_none_or(|flag| {
            serde_json::from_str::<serde_json::Value>(&event.data)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(|n| n == flag))
                .unwrap_or(true)
        }),
        _ => false,
    }
}

/// Watches until Ctrl-C. `draw` reads and prints the status; an error from it ends the watch
/// (the flag was deleted, the token refused), as does a stream the server refuses.
pub async fn watch<F, Fut>(client: &Client, flag: Option<&str>, draw: F) -> Result<(), ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let terminal = std::io::stdout().is_terminal();
    let follow = async {
        let mut last_id: Option<String> = None;
        loop {
            let mut response = match client.stream(last_id.as_deref()).await {
                Ok(response) => response,
                Err(e) if e.exit_code() == 2 => {
                    eprintln!("warning: {}; retrying", crate::util::error_chain(&e));
                    tokio::time::sleep(REOPEN).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut parser = sse::Parser::default();
            loop {
                let chunk = match tokio::time::timeout(IDLE, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => chunk,
                    // Ended, failed or silent: open it again, resuming after the last event.
                    Ok(Ok(None) | Err(_)) | Err(_) => break,
                };
                let Ok(events) = parser.push(&chunk) else { break };
                if let Some(id) = events.iter().rev().find_map(|e| e.id.clone()) {
                    last_id = Some(id);
                }
                if events.iter().any(|e| concerns(e, flag)) {
                    let text = draw().await?;
                    if terminal {
                        super::emit(&format!("\x1b[H\x1b[2J{text}\nwatching {}; Ctrl-C to stop\n", client.server()));
                    } else {
                        super::emit(&format!("{text}\n"));
                    }
                }
            }
            tokio::time::sleep(REOPEN).await;
        }
    };
    tokio::select! {
        outcome = follow => outcome,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> sse::Event {
        sse::Event { event: kind.into(), data: data.into(), id: None }
    }

    #[test]
    fn a_watch_of_one_flag_redraws_on_its_changes_and_snapshots_only() {
        assert!(concerns(&event("snapshot", "{}"), Some("a")));
        assert!(concerns(&event("change", r#"{"name":"a","version":2}"#), Some("a")));
        assert!(!concerns(&event("change", r#"{"name":"b","version":2}"#), Some("a")));
        assert!(concerns(&event("change", r#"{"name":"b","deleted":true}"#), None));
        assert!(!concerns(&event("message", ""), None));
    }
}
