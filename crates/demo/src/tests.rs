//! End-to-end tests of the server, over raw TCP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{DemoArgs, DemoServer, HealthMode};

/// Upper bound so a broken server fails the test instead of hanging it (not a timing check).
const GIVE_UP: Duration = Duration::from_secs(30);

/// One raw HTTP/1.1 GET; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read response");
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|s| s.trim().parse().ok())
        .expect("Content-Length");
    let body = response[end + 4..].to_vec();
    assert_eq!(body.len(), length, "body length matches Content-Length");
    (status, body)
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}");
    serde_json::from_slice(&body).expect("JSON body")
}

async fn start(args: DemoArgs) -> SocketAddr {
    let server = DemoServer::bind(args, Vec::new()).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    addr
}

#[tokio::test]
async fn health_reaches_ready_with_all_skills_and_stats_count_probes() {
    let mut args = DemoArgs::with_port(0);
    args.ready_after = Duration::from_millis(200);
    args.skills = 7;
    args.report_version = Some("9.9.9-test".into());
    let addr = start(args).await;

    let poll = async {
        let mut probes = 0u64;
        loop {
            let health = get_json(addr, "/health").await;
            probes += 1;
            assert_eq!(health["status"], "ok");
            assert_eq!(health["version"], "9.9.9-test");
            let skills = health["skills_loaded"].as_u64().expect("skills_loaded");
            if health["loading_complete"] == true {
                assert_eq!(skills, 7);
                return probes;
            }
            assert_eq!(health["loading_complete"], false);
            assert!(skills < 7, "still loading but {skills} skills");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let probes = tokio::time::timeout(GIVE_UP, poll).await.expect("never became ready");

    let stats = get_json(addr, "/stats").await;
    assert_eq!(stats["health_requests"].as_u64(), Some(probes));
    assert_eq!(stats["health_requests_after_ready"].as_u64(), Some(1));
    let started = stats["started_at_unix_nanos"].as_u64().expect("started_at");
    let ready = stats["ready_at_unix_nanos"].as_u64().expect("ready_at once ready");
    assert_eq!(ready - started, 200_000_000);

    let (status, body) = get(addr, "/").await;
    assert_eq!((status, body.as_slice()), (200, &b"tether demo backend\n"[..]));
    assert_eq!(get(addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn zero_skills_is_complete_at_once() {
    let mut args = DemoArgs::with_port(0);
    args.skills = 0;
    let addr = start(args).await;
    let health = get_json(addr, "/health").await;
    assert_eq!(health["loading_complete"], true);
    assert_eq!(health["skills_loaded"], 0);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn hostile_health_modes() {
    let mode = |m| {
        let mut args = DemoArgs::with_port(0);
        args.health_mode = m;
        start(args)
    };
    let addr = mode(HealthMode::Status500).await;
    assert_eq!(get(addr, "/health").await.0, 500);

    let addr = mode(HealthMode::NonJson).await;
    assert_eq!(get(addr, "/health").await, (200, b"not json".to_vec()));

    let addr = mode(HealthMode::Huge).await;
    let (status, body) = get(addr, "/health").await;
    assert_eq!((status, body.len()), (200, crate::http::HUGE_BODY));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(json["loading_complete"], true);

    // A hanging /health does not stop other connections from being served.
    let addr = mode(HealthMode::Hang).await;
    let mut hung = TcpStream::connect(addr).await.expect("connect");
    hung.write_all(b"GET /health HTTP/1.1\r\n\r\n").await.expect("send");
    let stats = tokio::time::timeout(GIVE_UP, get_json(addr, "/stats")).await.expect("stats");
    // The hung request may or may not have been read yet; it never gets an answer.
    assert!(stats["health_requests"].as_u64() <= Some(1));
    let mut byte = [0u8; 1];
    let nothing = tokio::time::timeout(Duration::from_millis(50), hung.read(&mut byte)).await;
    assert!(nothing.is_err(), "a hanging /health answered");
}
