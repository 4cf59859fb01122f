//! `--metrics ADDR`: ringraft's metrics (see `ringraft::api::metrics`) as Prometheus text at
//! `GET /metrics`.
//!
//! ```text
//!  Raft (shard, apply threads) ──metrics facade──► PrometheusRecorder (installed globally)
//!                                                        │ handle.render()
//!  scraper ──GET /metrics──► responder thread ───────────┘  text/plain; version=0.0.4
//! ```
//!
//! The recorder must be installed before the node starts (a node registers its metrics when it
//! starts). The responder is a few lines of blocking HTTP/1.1 on its own thread rather than the
//! exporter's hyper listener: one request per connection, `Connection: close`, bounded request
//! size and read timeout, so a slow or hostile client cannot hold it for long. Prometheus names
//! replace dots with underscores: `raft.commitTime` is scraped as `raft_commitTime`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request head read; anything longer is answered 431 and closed.
const REQUEST_HEAD_MAX_BYTES: usize = 8 * 1024;

/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the recorder drains old histogram samples.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's global `metrics` recorder. Fails if a
/// recorder is already installed.
pub fn install() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| "a metrics recorder is already installed".to_string())?;
    Ok(handle)
}

/// Binds `address` and serves `handle`'s metrics there on a thread of its own (and keeps the
/// recorder tidy on another). Both run for the life of the process.
pub fn serve(address: SocketAddr, handle: PrometheusHandle) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(address)
        .map_err(|e| format!("binding the metrics address {address}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("metrics address: {e}"))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("ringraft-kv-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("starting the metrics upkeep thread: {e}"))?;
    spawn_responder(listener, handle).map_err(|e| format!("starting the metrics server: {e}"))?;
    Ok(local)
}

/// Answers requests on `listener`, one connection at a time.
fn spawn_responder(listener: TcpListener, handle: PrometheusHandle) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringraft-kv-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    // A failed exchange only concerns that client.
                    Ok(stream) => {
                        let _ = respond(stream, &handle);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
}

/// Reads one request head and answers it.
fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= REQUEST_HEAD_MAX_BYTES {
            return reply(&mut stream, "431 Request Header Fields Too Large", "", "");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = handle.render();
            let body = if method == "HEAD" { "" } else { &body };
            reply(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        ("GET" | "HEAD", _) => reply(&mut stream, "404 Not Found", "text/plain", "not found\n"),
        _ => reply(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        ),
    }
}

fn reply(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// Fetches `GET /metrics` from `address` (for tests and tools): the response body, if the
/// status was 200.
pub fn fetch(address: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: ringraft\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of the head"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default().to_string();
        return Err(io::Error::other(status));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_serves_metrics_and_refuses_other_paths() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("raft.apply", "node_id" => "1").increment(3);
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        spawn_responder(listener, handle).expect("spawn");
        let body = fetch(address, Duration::from_secs(5)).expect("fetch");
        assert!(
            body.contains("raft_apply{node_id=\"1\"} 3"),
            "unexpected metrics:\n{body}"
        );
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET /other HTTP/1.1\r\n\r\n")
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"POST /metrics HTTP/1.1\r\n\r\n")
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    }
}
