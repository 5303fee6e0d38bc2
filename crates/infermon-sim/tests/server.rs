//! The HTTP server's limits and shutdown, with raw TCP clients where the client's behaviour is
//! the point: a slow header sender, an idle kept-alive connection, one connection too many,
//! and streams still open when the server is told to stop.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use infermon_sim::{ServeOptions, SimConfig, SimHandle, SimTelemetry, Simulator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for "the server closed it": only keeps a broken build from hanging.
const CLOSE_BOUND: Duration = Duration::from_secs(10);

struct Served {
    sim: SimHandle,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), infermon_sim::SimError>>,
}

async fn serve(config: SimConfig, options: ServeOptions) -> Served {
    let sim = Simulator::start(config, SimTelemetry::disabled()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(infermon_sim::serve_with(
        sim.clone(),
        listener,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    Served {
        sim,
        addr,
        stop: Some(stop),
        server,
    }
}

/// Reads until the server closes the connection (or the bound passes); returns what came and
/// how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(CLOSE_BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {CLOSE_BOUND:?}"),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        start.elapsed(),
    )
}

/// One complete `GET /health` on `stream`, response read (it has an empty body).
async fn health_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: sim\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut response = Vec::new();
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the response");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    let served = serve(
        test_config(),
        ServeOptions {
            header_timeout: Duration::from_millis(500),
            ..ServeOptions::default()
        },
    )
    .await;
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // A slowloris: one header byte every 100 ms, never finishing the headers.
    let slowloris = tokio::spawn(async move {
        let _ = write.write_all(b"GET /health HTTP/1.1\r\nx-slow: ").await;
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(CLOSE_BOUND, read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the slow client kept its connection for {CLOSE_BOUND:?}"),
        }
    }
    let took = start.elapsed();
    slowloris.abort();
    assert!(
        took < Duration::from_secs(5),
        "closed only after {took:?} (header timeout 500 ms)"
    );
    assert!(!String::from_utf8_lossy(&received).contains("200 OK"));

    // A well-behaved client of the same server is unaffected.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    health_on(&mut stream).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
    let mut config = test_config();
    config.time_scale = 2.0;
    let served = serve(
        config,
        ServeOptions {
            idle_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        },
    )
    .await;

    let mut idle = TcpStream::connect(served.addr).await.unwrap();
    health_on(&mut idle).await;
    let (_, took) = read_until_closed(&mut idle).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "idle connection closed after {took:?} (idle timeout 300 ms)"
    );

    // A stream lasting several idle timeouts (≈150 tokens × ~3.5 ms) runs to its end.
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/v1/completions", served.addr))
        .json(&json!({
            "model": MODEL, "prompt": "a long one", "max_tokens": 300,
            "ignore_eos": true, "stream": true,
        }))
        .send()
        .await
        .unwrap();
    let streamed = read_stream(response, Instant::now()).await;
    assert_eq!(streamed.events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        streamed.events.len(),
        300 + 2,
        "every token, the finish chunk, [DONE]"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_a_clear_503() {
    let served = serve(
        test_config(),
        ServeOptions {
            max_connections: 2,
            ..ServeOptions::default()
        },
    )
    .await;
    let mut first = TcpStream::connect(served.addr).await.unwrap();
    let mut second = TcpStream::connect(served.addr).await.unwrap();
    health_on(&mut first).await;
    health_on(&mut second).await;

    let mut third = TcpStream::connect(served.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: sim\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_until_closed(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("retry-after: 1"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert!(body["error"]["message"].as_str().unwrap().contains('2'));

    // Closing one makes room again.
    drop(first);
    let url = format!("http://{}/health", served.addr);
    wait_until("a slot frees up", || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_then_ends_open_streams_with_an_error_event() {
    let mut config = test_config();
    config.time_scale = 1.0;
    let mut served = serve(
        config,
        ServeOptions {
            drain_timeout: Duration::from_millis(400),
            ..ServeOptions::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/completions", served.addr);
    let stream_completion = |prompt: &str, max_tokens: u32| {
        client
            .post(&url)
            .json(&json!({
                "model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                "ignore_eos": true, "stream": true,
            }))
            .send()
    };
    // Far longer than the drain: ≈ 3,000 × 7 ms.
    let long = stream_completion("never ends", 3000).await.unwrap();
    // Finishes well within the drain: ≈ 10 × 7 ms.
    let short = stream_completion("short", 10).await.unwrap();
    let stopped_at = Instant::now();
    served.stop.take().unwrap().send(()).unwrap();

    let (long, short) = tokio::join!(
        read_stream(long, Instant::now()),
        read_stream(short, Instant::now())
    );
    assert_eq!(
        short.events.len(),
        10 + 2,
        "the short stream finished normally"
    );
    let tail = &long.events[long.events.len() - 2..];
    assert_eq!(tail[1], "[DONE]");
    let error: Value = serde_json::from_str(&tail[0]).unwrap();
    assert_eq!(error["error"]["code"], "shutdown", "{error}");
    assert!(
        long.events.len() < 3000,
        "the long stream was cut short: {}",
        long.events.len()
    );

    tokio::time::timeout(CLOSE_BOUND, served.server)
        .await
        .expect("serve_with returns after the drain")
        .unwrap()
        .unwrap();
    let took = stopped_at.elapsed();
    assert!(took >= Duration::from_millis(350), "no drain: {took:?}");
    assert!(
        TcpStream::connect(served.addr).await.is_err(),
        "still accepting after shutdown"
    );
    assert!(served.sim.stats().failed >= 1);
}
