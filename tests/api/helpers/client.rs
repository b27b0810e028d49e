//! The request helpers, written once: [`TestApp`](super::TestApp) and
//! [`ServiceProcess`](super::ServiceProcess) both dereference to a [`Client`] of their address.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::ADMIN;

/// A JSON response: status and parsed body (Null when empty).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// An HTTP client of one server; the `admin_*` helpers send the [`ADMIN`] token.
pub struct Client {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's base URL, as the CLI's `--server` takes it.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        self.exec(req.build().expect("request")).await
    }

    /// Sends `req`; its body must be empty or JSON.
    pub async fn exec(&self, req: reqwest::Request) -> Reply {
        let resp = self.http.execute(req).await.expect("request completes");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)))
        };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(ADMIN)).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).bearer_auth(ADMIN).json(&body)).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.put(self.url(path)).bearer_auth(ADMIN).json(&body)).await
    }

    pub async fn admin_delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path)).bearer_auth(ADMIN)).await
    }

    /// Creates a flag with the given definition (must be new).
    pub async fn create_flag(&self, flag: &str, definition: Value) -> Value {
        let r = self.admin_put(&format!("/flags/{flag}"), definition).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    /// A flag as this server's snapshot holds it (`GET /flags/{flag}`).
    pub async fn flag(&self, flag: &str) -> Value {
        let r = self.admin_get(&format!("/flags/{flag}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    pub async fn command(&self, flag: &str, command: &str) -> Reply {
        self.admin_post(&format!("/flags/{flag}/{command}"), json!({})).await
    }

    /// Runs a command that must succeed; returns the new flag state.
    pub async fn must(&self, flag: &str, command: &str) -> Value {
        let r = self.command(flag, command).await;
        assert_eq!(r.status, 200, "{command} {flag}: {}", r.body);
        r.body
    }

    pub async fn evaluate(&self, flag: &str, user: &str) -> Value {
        let r = self.get(&format!("/flags/{flag}/users/{user}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    pub async fn percent(&self, flag: &str) -> u64 {
        self.evaluate(flag, "probe").await["percent"].as_u64().expect("percent")
    }

    /// The answer for `user`, or `None` while this replica does not know the flag yet (404):
    /// for polling a replica a change has not reached.
    pub async fn try_evaluate(&self, flag: &str, user: &str) -> Option<Value> {
        let r = self.get(&format!("/flags/{flag}/users/{user}")).await;
        match r.status {
            200 => Some(r.body),
            404 => None,
            status => panic!("{status}: {}", r.body),
        }
    }

    /// The flag's percent, or `None` while this replica does not know the flag yet.
    pub async fn try_percent(&self, flag: &str) -> Option<u64> {
        Some(self.try_evaluate(flag, "probe").await?["percent"].as_u64().expect("percent"))
    }

    /// Pushes guard metrics with the admin token.
    pub async fn push(&self, flag: &str, sample: Value) -> Reply {
        self.admin_post(&format!("/flags/{flag}/metrics"), sample).await
    }
}
