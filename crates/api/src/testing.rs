//! A real server for tests (feature `testing`): the whole node ([`Node::open`], the code path of
//! `emporium serve`) on `127.0.0.1:0`, with a key of every scope.
//!
//! ```ignore
//! let server = TestServer::embedded().await;            // a fresh data directory
//! let client = reqwest::Client::new();
//! client.post(server.url("/v1/products")).bearer_auth(&server.key).json(&body).send().await?;
//! server.shutdown().await;
//! ```
//!
//! For PostgreSQL, give a fresh database's URL (`TestServer::postgres(url)`); two servers on one
//! URL are two nodes sharing one store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use emporium_eventstore::EventStore;

use crate::commands::CommandService;
use crate::http::auth::create_key;
use crate::node::{Node, NodeConfig};
use crate::store::Scope;

/// A node serving on an ephemeral port until [`TestServer::shutdown`] (or drop).
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    pub addr: SocketAddr,
    /// A key with every scope (`Authorization: Bearer <key>`).
    pub key: String,
    /// The node's command service (to inspect its cache, or to send commands without HTTP).
    pub commands: CommandService,
    /// The node's event store (to fold the log in assertions).
    pub event_store: Arc<dyn EventStore>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Kept alive as long as the server: the data directory of an embedded node.
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A node on the embedded stores in a fresh temporary directory.
    pub async fn embedded() -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = NodeConfig::embedded(dir.path());
        Self::start_with(config, Some(dir)).await
    }

    /// A node on the PostgreSQL stores at `url` (a fresh database, migrated on start), with a
    /// temporary data directory.
    pub async fn postgres(url: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = NodeConfig::postgres(url, dir.path());
        Self::start_with(config, Some(dir)).await
    }

    /// A node with `config` (its data directory is the caller's).
    pub async fn start(config: NodeConfig) -> TestServer {
        Self::start_with(config, None).await
    }

    async fn start_with(config: NodeConfig, dir: Option<tempfile::TempDir>) -> TestServer {
        let node = Node::open(config).await.expect("the node opens");
        let key = create_key(&*node.api_store, "test", &Scope::ALL)
            .await
            .expect("a test key")
            .secret;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an ephemeral port");
        let addr = listener.local_addr().expect("the bound address");
        let commands = node.commands.clone();
        let event_store = Arc::clone(&node.event_store);
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(listener, async move {
            let _ = stop.await;
        }));
        TestServer {
            base_url: format!("http://{addr}"),
            addr,
            key,
            commands,
            event_store,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The data directory of an embedded node started by [`TestServer::embedded`].
    pub fn data_dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Stops accepting, finishes in-flight requests, closes the stores.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("the test server failed: {error}"),
                Err(error) => panic!("the test server's task failed: {error}"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
