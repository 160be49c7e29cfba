//! chromedriver and headless Chromium, driven with fantoccini.

use std::time::Duration;

use fantoccini::Locator;
use forge_test_support::Chromedriver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one fixed HTML page to every request, on a loopback port.
async fn page_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page server");
    let port = listener.local_addr().expect("page server address").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request).await;
                let body = "<!doctype html><html><head><title>forge test page</title></head>\
                            <body><h1 id=\"greeting\">Hello from forge</h1></body></html>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(needle))
        .count()
}

#[tokio::test]
async fn page_title_is_read_through_chromedriver() {
    let (port, server) = page_server().await;
    let driver = Chromedriver::start().await.unwrap();
    assert_eq!(driver.url(), format!("http://127.0.0.1:{}", driver.port()));

    let client = driver.new_session().await.unwrap();
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(client.title().await.unwrap(), "forge test page");
    let heading = client.find(Locator::Id("greeting")).await.unwrap();
    assert_eq!(heading.text().await.unwrap(), "Hello from forge");

    // Names other than localhost don't resolve: the browser stays on this machine.
    assert!(client.goto("http://example.org/").await.is_err());

    // Leave the session open: dropping the driver must take the browser with it.
    let marker = format!("--port={}", driver.port());
    assert!(processes_mentioning(&marker) >= 1);
    let profile_root = driver
        .log_path()
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(processes_mentioning(&profile_root) >= 1, "no Chromium runs");
    drop(client);
    drop(driver);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        processes_mentioning(&profile_root),
        0,
        "Chromium outlived chromedriver"
    );
    server.abort();
}
