//! Reading a service's Prometheus endpoint in a test: a plain HTTP/1.1
//! `GET /metrics`, and one sample out of the text exposition.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` over a fresh HTTP/1.1 connection to `addr` (a metrics
/// endpoint): status, head, body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .expect("read the reply");
    let reply = String::from_utf8(reply).expect("a text reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status line");
    (status, head.to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` (`name` alone when `labels` is
/// empty) in a Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}
