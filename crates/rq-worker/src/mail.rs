//! The `forge.send_mail` built-in job: sends one plain-text e-mail through
//! the configured SMTP relay.
//!
//! Arguments (keyword, or positional in this order): `to` (an address or a
//! list), `subject`, `body`; optional keywords `from`, `reply_to`. Transient
//! SMTP failures (4xx, connection problems) are retryable; permanent ones
//! (5xx, bad addresses) fail the job at once.

use std::sync::Arc;
use std::time::Duration;

use forge_rq::{HandlerRegistry, JobArgs, JobError};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

use crate::config::{MailSettings, MailTls};

/// The job name.
pub const SEND_MAIL: &str = "forge.send_mail";

/// Builds the SMTP transport.
pub fn transport(
    settings: &MailSettings,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let mut builder = match settings.tls {
        MailTls::None => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.smtp_host)
        }
        MailTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.smtp_host)?
        }
        MailTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.smtp_host)?,
    }
    .port(settings.smtp_port)
    .timeout(Some(Duration::from_secs(settings.timeout_secs.max(1))));
    if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(builder.build())
}

fn mailbox(s: &str, what: &str) -> Result<Mailbox, JobError> {
    s.parse()
        .map_err(|e| JobError::permanent(format!("{what} {s:?} is not an e-mail address: {e}")))
}

/// Registers `forge.send_mail` using `settings`.
pub fn register(registry: &mut HandlerRegistry, settings: &MailSettings) {
    let settings = Arc::new(settings.clone());
    let transport = Arc::new(transport(&settings));
    registry.register(SEND_MAIL, move |_ctx, args: JobArgs| {
        let settings = settings.clone();
        let transport = transport.clone();
        async move {
            let transport = transport
                .as_ref()
                .as_ref()
                .map_err(|e| JobError::permanent(format!("SMTP relay misconfigured: {e}")))?;
            let to: Value = args.get("to", 0)?;
            let to: Vec<String> = match to {
                Value::String(s) => vec![s],
                Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        other => Err(JobError::permanent(format!(
                            "recipient {other} is not a string"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(JobError::permanent(format!(
                        "to: expected an address or a list, got {other}"
                    )));
                }
            };
            if to.is_empty() {
                return Err(JobError::permanent("no recipients"));
            }
            let subject: String = args.get("subject", 1)?;
            let body: String = args.get("body", 2)?;
            let from: String = if args.kwargs.contains_key("from") {
                args.kwarg("from")?
            } else {
                settings.from.clone()
            };
            let mut msg = Message::builder()
                .from(mailbox(&from, "from")?)
                .subject(subject);
            for t in &to {
                msg = msg.to(mailbox(t, "recipient")?);
            }
            if args.kwargs.contains_key("reply_to") {
                let r: String = args.kwarg("reply_to")?;
                msg = msg.reply_to(mailbox(&r, "reply_to")?);
            }
            let msg = msg
                .body(body)
                .map_err(|e| JobError::permanent(format!("cannot build the message: {e}")))?;
            match transport.send(msg).await {
                Ok(resp) => Ok(json!({"sent_to": to, "smtp": resp.code().to_string()})),
                Err(e) if e.is_permanent() => {
                    Err(JobError::permanent(format!("SMTP refused: {e}")))
                }
                Err(e) => Err(JobError::retryable(format!("SMTP failed: {e}"))),
            }
        }
    });
}
