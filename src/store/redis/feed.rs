//! Where the change feed subscribes: on one Redis, a connection of its own. On a cluster the
//! change feed is classic pub/sub too: a cluster forwards every `PUBLISH` to every
//! node, so one subscription on any node sees all changes. The subscriber connects to the seed
//! nodes in turn, then to the nodes the cluster reports; when its node dies the stream ends and
//! the feed subscribes again through the next one.

use std::sync::atomic::{AtomicUsize, Ordering};

use redis::aio::PubSub;
use redis::{ConnectionAddr, ConnectionInfo};

use super::{COMMAND_TIMEOUT, RedisStore, bounded, redis_client};
use crate::store::{StoreError, StoreResult};

/// Where the change feed subscribes.
pub(super) enum Subscriber {
    Single(redis::Client),
    Cluster {
        seeds: Vec<ConnectionInfo>,
        /// The CA the nodes' certificates are checked against (`rediss://` with a private CA).
        ca_pem: Option<Vec<u8>>,
        /// Rotates the first node tried, so a dead node is not tried first forever.
        next: AtomicUsize,
    },
}

/// The connection settings of `info` at another node's address (same credentials and TLS mode).
fn at_node(info: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match info.addr() {
        ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
            ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: *insecure, tls_params: tls_params.clone() }
        }
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    info.clone().set_addr(addr)
}

/// `host:port` of every reachable node in a `CLUSTER NODES` reply.
fn cluster_node_addresses(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            if flags.split(',').any(|f| f.starts_with("fail") || f == "noaddr" || f == "handshake") {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let (host, port) = address.split('@').next()?.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
        })
        .collect()
}

impl RedisStore {
    /// A subscription on the one Redis, or on the first cluster node that takes it.
    pub(super) async fn pubsub(&self) -> StoreResult<PubSub> {
        let (seeds, ca_pem, next) = match &self.subscriber {
            Subscriber::Single(client) => {
                let mut pubsub = bounded(client.get_async_pubsub()).await?;
                bounded(pubsub.subscribe(self.channel())).await?;
                return Ok(pubsub);
            }
            Subscriber::Cluster { seeds, ca_pem, next } => (seeds, ca_pem, next),
        };
        let mut candidates = seeds.clone();
        let first = next.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1);
        candidates.rotate_left(first);
        // Beyond the seeds, every node the cluster reports (when it answers).
        let mut conn = self.conn.clone();
        if let Ok(Ok(nodes)) =
            tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut conn))
                .await
            && let Some(template) = seeds.first()
        {
            candidates.extend(cluster_node_addresses(&nodes).iter().map(|(host, port)| at_node(template, host, *port)));
        }
        let mut last = None;
        for info in candidates {
            let attempt = async {
                let mut pubsub = redis_client(info, ca_pem.as_deref())?.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match bounded(attempt).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(StoreError::Timeout(COMMAND_TIMEOUT)))
    }
}

#[cfg(test)]
mod tests {
    use redis::{ConnectionAddr, IntoConnectionInfo};

    use super::{at_node, cluster_node_addresses};

    #[test]
    fn cluster_nodes_lists_reachable_nodes_only() {
        let reply = "\
07c3 127.0.0.1:30004@31004 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@31002,node-b.example master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail - 1426238317741 1426238316232 3 connected 10923-16383
6ec2 :0@0 master,noaddr - 0 0 4 disconnected
e7d1 10.0.0.7:6379@16379 slave 07c3 0 1426238317741 1 connected
";
        assert_eq!(
            cluster_node_addresses(reply),
            [("127.0.0.1".to_owned(), 30004), ("127.0.0.1".to_owned(), 30002), ("10.0.0.7".to_owned(), 6379)]
        );
    }

    #[test]
    fn another_node_keeps_the_credentials() {
        let seed = "redis://:secret@seed.example:7000/".into_connection_info().expect("url");
        let moved = at_node(&seed, "10.0.0.2", 7001);
        assert!(matches!(moved.addr(), ConnectionAddr::Tcp(host, 7001) if host == "10.0.0.2"));
        assert_eq!(moved.redis_settings().password(), Some("secret"));
    }
}
