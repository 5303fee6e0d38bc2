//! The shared server on its own, with a plain router: the connection cap's answer, the request
//! arrival stamp, and a drain that ends when open responses finish. (The simulator's
//! `tests/server.rs` covers timeouts and the drain-timeout path through a real engine.)

use std::time::Duration;

use axum::routing::get;
use axum::Extension;
use infermon_http::{serve, ReceivedAt, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

async fn get_raw(addr: std::net::SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await;
    (stream, response)
}

#[tokio::test]
async fn a_connection_over_the_cap_gets_an_openai_style_503_and_the_drain_waits_for_work() {
    let router = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "slow done"
            }),
        )
        .route(
            "/stamped",
            get(|received: Option<Extension<ReceivedAt>>| async move {
                if received.is_some() {
                    "stamped"
                } else {
                    "no arrival stamp"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let server = tokio::spawn(serve(router, listener, options, (), async {
        let _ = stopped.await;
    }));

    let (_, stamped) = get_raw(addr, "/stamped").await;
    assert!(stamped.ends_with("stamped"), "{stamped}");

    let slow = tokio::spawn(get_raw(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, rejected) = get_raw(addr, "/stamped").await;
    assert!(rejected.starts_with("HTTP/1.1 503"), "{rejected}");
    assert!(rejected.contains("retry-after: 1"), "{rejected}");
    let body: serde_json::Value =
        serde_json::from_str(rejected.split("\r\n\r\n").nth(1).unwrap_or("")).expect("JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert_eq!(body["error"]["type"], "server_error");

    // Shutdown while /slow is still running: the drain lets it finish.
    stop.send(()).expect("server running");
    let (_, slow) = slow.await.expect("slow request");
    assert!(slow.ends_with("slow done"), "{slow}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server returned after the drain")
        .expect("server task");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let router = axum::Router::new().route("/", get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        router,
        listener,
        ServeOptions::default(),
        (),
        async {
            let _ = stopped.await;
        },
    ));

    let send = |head: String| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await;
        response
    };
    let big = "x".repeat(infermon_http::MAX_HEADER_BYTES);
    let response = send(format!(
        "GET / HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\nconnection: close\r\n\r\n"
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:.80}");

    let many: String = (0..=infermon_http::MAX_HEADERS)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    let response = send(format!(
        "GET / HTTP/1.1\r\nhost: t\r\n{many}connection: close\r\n\r\n"
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:.80}");

    // A normal request still gets through.
    let response = send("GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".into()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.80}");
    let _ = stop.send(());
    server.await.expect("server task");
}
