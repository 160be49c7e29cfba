//! Outgoing mail: SMTP through lettre (plain, STARTTLS or implicit TLS), or
//! `.eml` files in a directory for development.
//!
//! Every mail is `multipart/alternative`: the text as written, and an HTML
//! version of the same text ([`html_version`]: escaped, paragraphs kept, links
//! made clickable), so clients that prefer HTML show it without mangling.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, MailTransport, SmtpTls};

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address or the message is malformed.
    #[error("bad message: {0}")]
    Message(String),
    /// The relay refused or could not be reached.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// Writing the file failed.
    #[error("mailbox file: {0}")]
    File(#[from] std::io::Error),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(PathBuf),
}

/// Sends mail as configured.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    /// A mailer for `settings` (the SMTP password passed separately).
    pub fn new(settings: &MailSettings, password: &str) -> Result<Mailer, MailError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| MailError::Message(format!("mail.from: {e}")))?;
        let transport = match settings.transport {
            MailTransport::File => Transport::File(settings.file_dir.clone()),
            MailTransport::Smtp => {
                let host = settings.smtp_host.as_str();
                let mut b = match settings.tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                    SmtpTls::Starttls | SmtpTls::Tls => {
                        let params = TlsParameters::new(host.to_owned())
                            .map_err(|e| MailError::Smtp(e.to_string()))?;
                        let tls = if settings.tls == SmtpTls::Tls {
                            Tls::Wrapper(params)
                        } else {
                            Tls::Required(params)
                        };
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(tls)
                    }
                };
                b = b
                    .port(settings.smtp_port)
                    .timeout(Some(Duration::from_millis(settings.timeout_ms.max(1))));
                if !settings.username.is_empty() {
                    b = b.credentials(Credentials::new(
                        settings.username.clone(),
                        password.to_owned(),
                    ));
                }
                Transport::Smtp(b.build())
            }
        };
        Ok(Mailer { from, transport })
    }

    /// Sends a mail with text `body` (and its HTML version) to `to`.
    pub async fn send(&self, to: &[String], subject: &str, body: String) -> Result<(), MailError> {
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for t in to {
            let mb: Mailbox = t
                .parse()
                .map_err(|e| MailError::Message(format!("{t:?}: {e}")))?;
            b = b.to(mb);
        }
        let html = html_version(&body);
        let msg = b
            .multipart(MultiPart::alternative_plain_html(body, html))
            .map_err(|e| MailError::Message(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(t) => {
                t.send(msg)
                    .await
                    .map_err(|e| MailError::Smtp(e.to_string()))?;
            }
            Transport::File(dir) => {
                tokio::fs::create_dir_all(dir).await?;
                let name = format!(
                    "{}-{}.eml",
                    time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
                    crate::tokens::random_token(6)
                );
                tokio::fs::write(dir.join(name), msg.formatted()).await?;
            }
        }
        metrics::counter!("forge_idm_mails_sent_total").increment(1);
        Ok(())
    }
}

/// The HTML version of a mail's text: HTML-escaped, blank-line-separated
/// paragraphs as `<p>`, line breaks as `<br>`, and `http(s)://` words as links.
pub fn html_version(text: &str) -> String {
    fn escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }
    fn line(l: &str) -> String {
        l.split(' ')
            .map(|w| {
                if w.starts_with("https://") || w.starts_with("http://") {
                    let w = escape(w);
                    format!("<a href=\"{w}\">{w}</a>")
                } else {
                    escape(w)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let lines: Vec<String> = p.lines().map(line).collect();
            format!("<p>{}</p>", lines.join("<br>\n"))
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{}\n</body></html>\n",
        paragraphs.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::html_version;

    #[test]
    fn html_version_escapes_and_links() {
        let html = html_version("Hello <b>&\n\nopen https://idm.example.org/a?x=1&y=2 now\n");
        assert!(html.contains("<p>Hello &lt;b&gt;&amp;</p>"), "{html}");
        assert!(
            html.contains(r#"<a href="https://idm.example.org/a?x=1&amp;y=2">"#),
            "{html}"
        );
        assert!(!html.contains("<b>"));
    }
}
