//! A lean HTTP/1.1 client: one keep-alive connection per simulated client, one request in
//! flight on it at a time (the closed-loop model of `wrk`), no pool, no redirects, no retries.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An answer, read whole.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// The `Emporium-Position` header, if any.
    pub position: Option<u64>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON: {e}"))
    }

    /// The slug of a problem+json body (`insufficient-stock`), or the status as text.
    pub fn problem_slug(&self) -> String {
        let slug = self.json().ok().and_then(|v| {
            v.get("type")
                .and_then(|t| t.as_str())
                .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned())
        });
        match slug {
            Some(slug) => format!("{} {slug}", self.status),
            None => format!("{}", self.status),
        }
    }

    pub fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        format!("{} {body}", self.status)
    }
}

/// One connection to the server, reconnected after a transport error.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr, key: &str) -> anyhow::Result<Conn> {
        Ok(Conn {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {key}"))?,
            sender: None,
        })
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer. `Err` is a transport error (the
    /// connection is dropped and made again on the next call).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, String> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let position = response
            .headers()
            .get("emporium-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        self.sender = Some(sender);
        Ok(Response {
            status,
            body,
            position,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, String> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: String) -> Result<Response, String> {
        self.send(Method::POST, path, Some(Bytes::from(body))).await
    }
}
