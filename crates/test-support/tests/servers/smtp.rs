//! The SMTP sink and the `forge-smtp-sink` binary, fed by lettre.

use std::process::Command;
use std::time::Duration;

use forge_test_support::{ChildGuard, SmtpSink, free_port, wait_for_port};
use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

fn transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(5)))
        .build()
}

fn mailbox(text: &str) -> Mailbox {
    text.parse().expect("a valid mailbox")
}

#[tokio::test]
async fn lettre_mail_is_captured_and_decoded() {
    let sink = SmtpSink::start().await.unwrap();
    let smtp = transport(sink.port());
    let body = "Hallo Zoë,\n\nbitte bestätige dein Konto: https://idm.example.org/activate/abc.def\n\n\
                .a line that starts with a dot\n";
    let plain = Message::builder()
        .from(mailbox("Forge <noreply@example.org>"))
        .to(mailbox("Zoë <zoe@example.org>"))
        .subject("Konto aktivieren — Schritt 2")
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .unwrap();
    smtp.send(plain).await.unwrap();

    let alternative = Message::builder()
        .from(mailbox("noreply@example.org"))
        .to(mailbox("a@example.org"))
        .cc(mailbox("b@example.org"))
        .subject("Two parts")
        .multipart(MultiPart::alternative_plain_html(
            "plain text ✓".to_owned(),
            "<p>html ✓</p>".to_owned(),
        ))
        .unwrap();
    smtp.send(alternative).await.unwrap();

    let mails = sink.wait_for(2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(mails.len(), 2);

    let first = &mails[0];
    assert_eq!(first.from, "noreply@example.org");
    assert_eq!(first.recipients, vec!["zoe@example.org".to_owned()]);
    assert_eq!(
        first.subject().as_deref(),
        Some("Konto aktivieren — Schritt 2")
    );
    assert_eq!(first.header("To").as_deref(), Some("Zoë <zoe@example.org>"));
    let text = first.text_body().unwrap();
    assert_eq!(text.replace("\r\n", "\n").trim_end(), body.trim_end());

    let second = &mails[1];
    assert_eq!(
        second.recipients,
        vec!["a@example.org".to_owned(), "b@example.org".to_owned()]
    );
    assert_eq!(
        second.text_body().as_deref().map(str::trim_end),
        Some("plain text ✓")
    );
    assert_eq!(
        second.html_body().as_deref().map(str::trim_end),
        Some("<p>html ✓</p>")
    );

    let timed_out = sink.wait_for(3, Duration::from_millis(100)).await;
    assert!(timed_out.is_err());
}

#[tokio::test]
async fn protocol_errors_and_resets() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let sink = SmtpSink::start().await.unwrap();
    let stream = tokio::net::TcpStream::connect(sink.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut expect = async |code: &str| {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                assert!(line.starts_with(code), "expected {code}, got {line:?}");
                return;
            }
        }
    };
    expect("220").await;
    for (command, code) in [
        ("HELO client\r\n", "250"),
        ("RCPT TO:<x@example.org>\r\n", "503"),
        ("DATA\r\n", "503"),
        ("MAIL FROM:<>\r\n", "250"),
        ("RCPT TO:<x@example.org>\r\n", "250"),
        ("RSET\r\n", "250"),
        ("DATA\r\n", "503"),
        ("NOOP\r\n", "250"),
        ("STARTTLS\r\n", "502"),
        ("FROB\r\n", "500"),
        ("MAIL FROM:<bounce@example.org>\r\n", "250"),
        ("RCPT TO:<y@example.org>\r\n", "250"),
        ("DATA\r\n", "354"),
        ("Subject: raw\r\n\r\n..dot\r\n.\r\n", "250"),
        ("QUIT\r\n", "221"),
    ] {
        write.write_all(command.as_bytes()).await.unwrap();
        expect(code).await;
    }
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "bounce@example.org");
    assert_eq!(mails[0].data, b"Subject: raw\r\n\r\n.dot\r\n");
}

#[tokio::test]
async fn sink_binary_writes_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_forge-smtp-sink"));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(&maildir);
    let _sink =
        ChildGuard::spawn("forge-smtp-sink", command, &dir.path().join("sink.log")).unwrap();
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10))
        .await
        .unwrap();

    let message = Message::builder()
        .from(mailbox("noreply@example.org"))
        .to(mailbox("dev@example.org"))
        .subject("Demo mail")
        .body("see the demo".to_owned())
        .unwrap();
    transport(port).send(message).await.unwrap();

    let eml = maildir.join("1.eml");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !eml.is_file() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "1.eml never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&eml).unwrap();
    assert!(text.contains("Subject: Demo mail"), "{text}");
    let log = std::fs::read_to_string(dir.path().join("sink.log")).unwrap();
    assert!(log.contains("message stored"), "{log}");
}
