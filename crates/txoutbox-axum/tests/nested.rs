//! The routes nested under a path of an application's router: the console's page links to its
//! assets and API under that path, the API answers there, and the guard still refuses a foreign
//! `Host` and a cross-site action. No database: the console reads a store that holds nothing.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use txoutbox_axum::{BoxFuture, Console, ConsoleStore, RelayRoutes};
use txoutbox_core::{DeadLetter, DeadLetterFilter, DeadPayload, RelayMonitor, Result, TopicStats};

/// An outbox with nothing in it.
struct Empty;

impl ConsoleStore for Empty {
    fn table(&self) -> String {
        "shop.outbox_messages".into()
    }
    fn list_dead<'a>(&'a self, _: &'a DeadLetterFilter, _: usize) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn replay_dead<'a>(&'a self, _: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async { Ok(0) })
    }
    fn purge_dead<'a>(&'a self, _: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async { Ok(0) })
    }
    fn dead_payload(&self, _: i64, _: usize) -> BoxFuture<'_, Result<Option<DeadPayload>>> {
        Box::pin(async { Ok(None) })
    }
    fn topic_stats(&self) -> BoxFuture<'_, Result<Vec<TopicStats>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Sends one raw HTTP/1.1 request (`head`: request line and headers); the status code and the
/// body.
async fn request(address: std::net::SocketAddr, head: &str) -> (u16, String) {
    send(address, head, "").await
}

async fn send(address: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n{body}").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn the_console_works_under_a_nested_path_behind_the_guard() {
    let console = Console::from_store(Arc::new(Empty))
        .with_token("a-token-long-enough-0123")
        .unwrap();
    assert!(Console::from_store(Arc::new(Empty)).with_token("short").is_err());
    let routes = RelayRoutes::new(RelayMonitor::default())
        .console(console)
        .into_router()
        .unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "shop" }))
        .nest("/outbox", routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (code, page) = request(address, "GET /outbox/ui HTTP/1.1\r\nHost: 127.0.0.1").await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"src="/outbox/ui/assets/console.js""#), "{page}");
    assert!(page.contains(r#"href="/outbox/ui/dead-letters""#), "{page}");
    let (code, script) = request(
        address,
        "GET /outbox/ui/assets/console.js HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_eq!(code, 200);
    assert!(script.contains("BASE"));
    let (code, overview) = request(address, "GET /outbox/ui/api/overview HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(code, 200, "{overview}");
    assert!(
        overview.contains(r#""table":"shop.outbox_messages""#),
        "{overview}"
    );
    let (code, _) = request(address, "GET /outbox/live HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(code, 503, "the relay does not run");
    let (code, _) = request(address, "GET /outbox/health HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(code, 503, "no check has run");
    let (code, _) = request(address, "GET /outbox/metrics HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(code, 404, "no recorder given");

    // The guard: a foreign Host (DNS rebinding), a cross-site action, a missing token.
    let (code, _) = request(address, "GET /outbox/status HTTP/1.1\r\nHost: evil.example").await;
    assert_eq!(code, 403);
    let purge = |extra: &str| {
        format!(
            "POST /outbox/ui/api/dead-letters/purge HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nContent-Length: 12{extra}"
        )
    };
    let all = r#"{"all":true}"#;
    let (code, _) = send(address, &purge("\r\nOrigin: https://evil.example"), all).await;
    assert_eq!(code, 403);
    let (code, _) = send(address, &purge(""), all).await;
    assert_eq!(code, 401);
    let (code, body) = send(
        address,
        &purge("\r\nAuthorization: Bearer a-token-long-enough-0123"),
        all,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // The application's own route is not the relay's business.
    let (code, body) = request(address, "GET / HTTP/1.1\r\nHost: evil.example").await;
    assert_eq!((code, body.as_str()), (200, "shop"));
}
