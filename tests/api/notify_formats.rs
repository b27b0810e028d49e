//! Notifications in each receiver's format (Slack blocks, a Teams Adaptive Card, a Discord embed,
//! the generic JSON), each checked by a local receiver against the shape its provider documents,
//! and per-receiver event filters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use rollout_controller::config::NamedToken;
use rollout_controller::notify::{Event, Format, Target};
use serde_json::{Value, json};

use crate::helpers::{ADMIN, RedisServer, ServiceProcess, TestApp, eventually};

/// What a receiver got at one path, and whether the body had its provider's shape.
#[derive(Clone)]
struct Received {
    path: String,
    body: Value,
    verdict: Result<(), String>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// A receiver on a free port that checks each body by its path (`/slack…`, `/teams…`,
/// `/discord…`, anything else generic) and answers 400 to a bad one, as the providers do.
async fn checking_receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{path}",
            post(|State(inbox): State<Inbox>, Path(path): Path<String>, body: axum::body::Bytes| async move {
                let size = body.len();
                let verdict = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()).and_then(|body| {
                    let check = if path.starts_with("slack") {
                        slack_shape(&body)
                    } else if path.starts_with("teams") {
                        teams_shape(&body, size)
                    } else if path.starts_with("discord") {
                        discord_shape(&body)
                    } else {
                        generic_shape(&body)
                    };
                    check.map(|()| body)
                });
                let (status, verdict, body) = match verdict {
                    Ok(body) => (StatusCode::OK, Ok(()), body),
                    Err(e) => (StatusCode::BAD_REQUEST, Err(e), Value::Null),
                };
                inbox.lock().expect("inbox").push(Received { path, body, verdict });
                status
            }),
        )
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

fn at(inbox: &Inbox, path: &str) -> Vec<Received> {
    inbox.lock().expect("inbox").iter().filter(|r| r.path == path).cloned().collect()
}

fn require(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn text_object(t: &Value, max: usize, what: &str) -> Result<(), String> {
    require(matches!(t["type"].as_str(), Some("plain_text" | "mrkdwn")), &format!("{what}: a text object"))?;
    require(t["text"].is_string() && (1..=max).contains(&chars(&t["text"])), &format!("{what}: 1..={max} characters"))
}

/// Slack Block Kit (api.slack.com/reference/block-kit/blocks): `text` fallback, at most 50
/// blocks; header plain text ≤ 150; a section's text ≤ 3,000 or 1–10 fields ≤ 2,000 each; context
/// elements ≤ 10; actions: buttons with plain text ≤ 75 and a URL ≤ 3,000.
fn slack_shape(m: &Value) -> Result<(), String> {
    require(m["text"].is_string() && (1..=3000).contains(&chars(&m["text"])), "text: the fallback, ≤ 3000")?;
    let blocks = m["blocks"].as_array().ok_or("blocks: an array")?;
    require((1..=50).contains(&blocks.len()), "blocks: 1..=50")?;
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => {
                require(b["text"]["type"] == "plain_text", "header: plain_text")?;
                text_object(&b["text"], 150, "header")?;
            }
            Some("section") => match (b.get("text"), b.get("fields")) {
                (Some(t), _) => text_object(t, 3000, "section text")?,
                (None, Some(fields)) => {
                    let fields = fields.as_array().ok_or("fields: an array")?;
                    require((1..=10).contains(&fields.len()), "fields: 1..=10")?;
                    fields.iter().try_for_each(|f| text_object(f, 2000, "field"))?;
                }
                (None, None) => return Err("section: text or fields".into()),
            },
            Some("context") => {
                let elements = b["elements"].as_array().ok_or("context: elements")?;
                require((1..=10).contains(&elements.len()), "context: 1..=10 elements")?;
                elements.iter().try_for_each(|e| text_object(e, 3000, "context element"))?;
            }
            Some("actions") => {
                let elements = b["elements"].as_array().ok_or("actions: elements")?;
                require((1..=25).contains(&elements.len()), "actions: 1..=25 elements")?;
                for e in elements {
                    require(e["type"] == "button", "actions: buttons")?;
                    require(e["text"]["type"] == "plain_text", "button: plain_text")?;
                    text_object(&e["text"], 75, "button text")?;
                    require(e["url"].as_str().is_some_and(|u| u.starts_with("http") && u.len() <= 3000), "button url")?;
                }
            }
            other => return Err(format!("unexpected block type {other:?}")),
        }
    }
    Ok(())
}

/// Microsoft Teams (learn.microsoft.com, "Send Adaptive Cards using an incoming webhook"):
/// `{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
/// "content": <AdaptiveCard>}]}`, at most 28 KB; the card has a version, a body of elements with a
/// `type`, TextBlocks with text, FactSets of title/value strings, Action.OpenUrl with a URL.
fn teams_shape(m: &Value, size: usize) -> Result<(), String> {
    require(size <= 28 * 1024, "at most 28 KB")?;
    require(m["type"] == "message", "type: message")?;
    let attachments = m["attachments"].as_array().ok_or("attachments: an array")?;
    require(attachments.len() == 1, "one attachment")?;
    let a = &attachments[0];
    require(a["contentType"] == "application/vnd.microsoft.card.adaptive", "contentType: an Adaptive Card")?;
    let card = &a["content"];
    require(card["type"] == "AdaptiveCard", "content: an AdaptiveCard")?;
    require(card["version"].as_str().is_some_and(|v| v.starts_with("1.")), "version: 1.x")?;
    let body = card["body"].as_array().ok_or("body: an array")?;
    require(!body.is_empty(), "body: not empty")?;
    for e in body {
        match e["type"].as_str() {
            Some("TextBlock") => require(e["text"].as_str().is_some_and(|t| !t.is_empty()), "TextBlock: text")?,
            Some("FactSet") => {
                let facts = e["facts"].as_array().ok_or("FactSet: facts")?;
                require(facts.iter().all(|f| f["title"].is_string() && f["value"].is_string()), "facts: strings")?;
            }
            other => return Err(format!("unexpected element {other:?}")),
        }
    }
    if let Some(actions) = card.get("actions") {
        for action in actions.as_array().ok_or("actions: an array")? {
            require(action["type"] == "Action.OpenUrl", "Action.OpenUrl")?;
            require(action["url"].as_str().is_some_and(|u| u.starts_with("http")), "action url")?;
            require(action["title"].is_string(), "action title")?;
        }
    }
    Ok(())
}

/// Discord (discord.com/developers/docs/resources/message#embed-object-embed-limits): at most 10
/// embeds; title ≤ 256, description ≤ 4,096, ≤ 25 fields of name ≤ 256 and value ≤ 1,024 (both
/// non-empty), 6,000 characters in all; colour an RGB integer; timestamp ISO 8601.
fn discord_shape(m: &Value) -> Result<(), String> {
    let embeds = m["embeds"].as_array().ok_or("embeds: an array")?;
    require((1..=10).contains(&embeds.len()), "embeds: 1..=10")?;
    for e in embeds {
        require(e["title"].is_string() && chars(&e["title"]) <= 256, "title ≤ 256")?;
        require(e["description"].is_string() && chars(&e["description"]) <= 4096, "description ≤ 4096")?;
        let fields = e["fields"].as_array().ok_or("fields: an array")?;
        require(fields.len() <= 25, "fields ≤ 25")?;
        for f in fields {
            require((1..=256).contains(&chars(&f["name"])), "field name 1..=256")?;
            require((1..=1024).contains(&chars(&f["value"])), "field value 1..=1024")?;
            require(f.get("inline").is_none_or(Value::is_boolean), "inline: a boolean")?;
        }
        let total = chars(&e["title"])
            + chars(&e["description"])
            + fields.iter().map(|f| chars(&f["name"]) + chars(&f["value"])).sum::<usize>()
            + chars(&e["footer"]["text"]);
        require(total <= 6000, "6000 characters in all")?;
        require(e["color"].as_u64().is_some_and(|c| c <= 0xFF_FF_FF), "color: 0..=0xFFFFFF")?;
        let ts = e["timestamp"].as_str().ok_or("timestamp: a string")?;
        humantime::parse_rfc3339(ts).map_err(|e| format!("timestamp: {e}"))?;
        if let Some(url) = e.get("url") {
            require(url.as_str().is_some_and(|u| u.starts_with("http")), "url")?;
        }
    }
    Ok(())
}

/// Today's JSON: the Slack-compatible `text` and the structured fields.
fn generic_shape(m: &Value) -> Result<(), String> {
    for key in ["text", "flag", "action", "to", "actor", "reason", "version", "at"] {
        require(m.get(key).is_some(), &format!("{key} missing"))?;
    }
    require(m.get("blocks").is_none() && m.get("embeds").is_none(), "nothing but the generic fields")
}

fn target(url: &str, path: &str, format: Format, events: Option<&[Event]>) -> Target {
    Target { url: format!("{url}/{path}"), format, events: events.map(|e| e.iter().copied().collect()) }
}

#[tokio::test]
async fn each_format_has_its_providers_shape_and_each_receiver_gets_only_its_events() {
    let redis = RedisServer::start();
    let (url, inbox) = checking_receiver().await;
    let app = TestApp::on(&redis)
        .settings(|s| {
            s.admin_tokens.push(NamedToken { name: "bob".into(), secret: "bob-token-for-tests".to_owned().into() });
            s.dashboard_url = Some("https://rollouts.example.com/ui/".into());
            s.notify_urls = vec![format!("{url}/env").into()];
            s.notify_targets = vec![
                target(&url, "slack", Format::Slack, None),
                target(&url, "teams", Format::Teams, None),
                target(&url, "discord", Format::Discord, None),
                target(&url, "generic", Format::Generic, None),
                target(&url, "slack-rollbacks", Format::Slack, Some(&[Event::Rollback])),
                target(&url, "discord-approvals", Format::Discord, Some(&[Event::ApprovalWaiting, Event::Approve])),
            ];
        })
        .spawn()
        .await;
    app.create_flag(
        "f",
        json!({"stages": [{"name": "internal", "internal_only": true, "soak_secs": 60},
                          {"name": "10%", "percent": 10, "soak_secs": 60, "requires_approval": true}]}),
    )
    .await;
    app.admin_post("/flags/f/start", json!({})).await;
    app.clock.advance_secs(60);
    app.push("f", json!({"requests": 5000, "errors": 0})).await;
    assert!(app.tick().await.is_empty(), "held for the approval");
    let approved = app.admin_post("/flags/f/approve", json!({"stage": "10%", "reason": "looks fine"})).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(app.tick().await.len(), 1, "advanced");
    // The longest reason there is, with what Slack's mrkdwn and Discord's mentions would act on.
    let reason = format!("<script> & @everyone {}", "x".repeat(1000 - 22));
    let r = app.admin_post("/flags/f/rollback", json!({"reason": reason})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let all = ["create", "start", "held", "approve", "advance", "rollback"];
    eventually(Duration::from_secs(10), "every receiver has its notices", || async {
        ["slack", "teams", "discord", "generic", "env"].iter().all(|p| at(&inbox, p).len() == all.len())
            && at(&inbox, "slack-rollbacks").len() == 1
            && at(&inbox, "discord-approvals").len() == 2
    })
    .await;
    for r in inbox.lock().expect("inbox").iter() {
        assert_eq!(r.verdict, Ok(()), "/{} got a body its provider refuses", r.path);
    }

    // The same events, in order, whatever the format.
    let generic: Vec<Value> = at(&inbox, "generic").into_iter().map(|r| r.body).collect();
    assert_eq!(generic.iter().map(|m| m["action"].as_str().unwrap_or("")).collect::<Vec<_>>(), all);
    assert_eq!(at(&inbox, "env").into_iter().map(|r| r.body).collect::<Vec<_>>(), generic, "env URLs: generic");
    let rollback = &generic[5];
    assert!(rollback["text"].as_str().is_some_and(|t| t.starts_with(":rotating_light: f: rollback 10% (10%) → ")));

    // Slack: a header naming the flag and event, the reason escaped, the dashboard button.
    let slack = &at(&inbox, "slack")[5].body;
    assert_eq!(slack["blocks"][0]["text"]["text"], "🚨 f: rollback");
    let section = slack["blocks"][1]["text"]["text"].as_str().expect("section");
    assert!(section.starts_with("10% (10%) → rolled_back (0%)\n&lt;script&gt; &amp; @everyone x"), "{section}");
    let button = slack["blocks"].as_array().and_then(|b| b.last()).expect("blocks");
    assert_eq!(button["elements"][0]["url"], "https://rollouts.example.com/ui/");
    assert_eq!(at(&inbox, "slack-rollbacks")[0].body, *slack, "filtered, not reshaped");

    // Teams: the title coloured by event, the facts, the link.
    let card = &at(&inbox, "teams")[5].body["attachments"][0]["content"];
    assert_eq!(
        (card["body"][0]["text"].as_str(), card["body"][0]["color"].as_str()),
        (Some("🚨 f: rollback"), Some("Attention"))
    );
    let facts = &card["body"][2]["facts"];
    assert_eq!(facts[0], json!({"title": "Flag", "value": "f"}));
    assert_eq!(facts[2], json!({"title": "Actor", "value": "operator:ann"}));
    assert_eq!(card["actions"][0]["url"], "https://rollouts.example.com/ui/");

    // Discord: red for a rollback, the time of the event, nobody pinged.
    let discord = &at(&inbox, "discord")[5].body;
    let embed = &discord["embeds"][0];
    assert_eq!((embed["title"].as_str(), embed["color"].as_u64()), (Some("🚨 f: rollback"), Some(0xD7_26_3D)));
    assert_eq!(embed["timestamp"], rollback["at"]);
    assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
    let held = &at(&inbox, "discord")[2].body["embeds"][0];
    assert_eq!(held["title"], "⏳ f: approval waiting");
    assert_eq!(held["description"], "at internal (0%)\nstage 10% waits for 1 more approval(s)");

    // The filtered receivers: the approval wait and the approval, nothing else.
    let approvals: Vec<String> = at(&inbox, "discord-approvals")
        .iter()
        .map(|r| r.body["embeds"][0]["title"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(approvals, ["⏳ f: approval waiting", "▶️ f: approve"]);
    let r = app.http.get(app.url("/admin/status")).bearer_auth(ADMIN).send().await.expect("status");
    let status: Value = r.json().await.expect("json");
    assert_eq!(status["notify_urls"].as_array().map(Vec::len), Some(7), "every receiver is probed");
}

#[tokio::test]
async fn the_real_binary_reads_notify_tables_with_a_secret_url_from_the_environment_and_refuses_unknown_events() {
    let redis = RedisServer::start();
    let (url, inbox) = checking_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rollout.toml");
    std::fs::write(
        &config,
        "dashboard_url = \"https://rollouts.example.com/ui/\"\n\
         [[notify]]\nurl_env = \"TEST_DISCORD_WEBHOOK\"\nformat = \"discord\"\nevents = [\"rollback\"]\n",
    )
    .expect("write");
    let config = config.to_str().expect("a UTF-8 path");
    let hook = format!("{url}/discord-from-env");
    let service =
        ServiceProcess::spawn(&redis.url(), &["--config", config], &[("TEST_DISCORD_WEBHOOK", hook.as_str())]).await;
    service.create_flag("f", json!({})).await;
    for command in ["start", "rollback"] {
        let r = service.admin_post(&format!("/flags/f/{command}"), json!({"reason": "test"})).await;
        assert_eq!(r.status, 200, "{command}: {}", r.body);
    }
    eventually(Duration::from_secs(10), "the rollback reaches the Discord receiver", || async {
        !at(&inbox, "discord-from-env").is_empty()
    })
    .await;
    let got = at(&inbox, "discord-from-env");
    assert_eq!(got.len(), 1, "create and start are not subscribed");
    assert_eq!(got[0].verdict, Ok(()));
    assert_eq!(got[0].body["embeds"][0]["title"], "🚨 f: rollback");
    assert_eq!(got[0].body["embeds"][0]["url"], "https://rollouts.example.com/ui/");
    assert!(!service.logs().contains("discord-from-env"), "the secret URL is never logged");

    std::fs::write(config, "[[notify]]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"rolback\"]\n").expect("write");
    let mut refused = ServiceProcess::launch(&redis.url(), &["--config", config], &[]);
    let status = refused.wait_exit(Duration::from_secs(10)).await.expect("a config error stops the start");
    assert!(!status.success());
    let log = refused.logs();
    assert!(log.contains("unknown variant `rolback`") && log.contains("rollback"), "{log}");
}
