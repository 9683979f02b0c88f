//! Email over SMTP (lettre, on tokio, TLS by rustls): STARTTLS, implicit TLS, or plain for a
//! relay on the same host and for tests.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Channel, Message, Undelivered};
use crate::config::notify::{EmailChannel, SmtpSecurity};

pub struct Email {
    config: EmailChannel,
}

impl Email {
    pub fn new(config: EmailChannel) -> Email {
        Email { config }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, Undelivered> {
        let c = &self.config;
        let bad = |e: lettre::transport::smtp::Error| {
            Undelivered::permanent(format!("email: the SMTP server {}: {e}", c.host))
        };
        let (builder, default_port) = match c.security {
            SmtpSecurity::Starttls => (
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(bad)?,
                587,
            ),
            SmtpSecurity::Tls => (
                AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(bad)?,
                465,
            ),
            SmtpSecurity::None => (
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
                25,
            ),
        };
        let mut builder = builder
            .port(c.port.unwrap_or(default_port))
            .timeout(Some(Duration::from_secs(15)));
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(builder.build())
    }

    /// The email, addressed; an address that does not parse is the pipeline's to fix.
    pub fn email(&self, message: &Message) -> Result<lettre::Message, Undelivered> {
        let c = &self.config;
        let address = |text: &str| {
            text.parse::<lettre::message::Mailbox>().map_err(|e| {
                Undelivered::permanent(format!(
                    "email: `{text}` is not an email address ({e}) (hint: fix notify's email channel)"
                ))
            })
        };
        let mut builder = lettre::Message::builder()
            .from(address(&c.from)?)
            .subject(format!("[rollcall] {}", message.event.title))
            .header(ContentType::TEXT_PLAIN);
        for to in &c.to {
            builder = builder.to(address(to)?);
        }
        // 8-bit text keeps a link on one line, whole, for any reader; a line too long for it
        // (over 998 bytes) falls back to the encoding lettre picks.
        let text = message.text();
        let body = lettre::message::Body::new_with_encoding(
            text.clone(),
            lettre::message::header::ContentTransferEncoding::EightBit,
        )
        .unwrap_or_else(|_| lettre::message::Body::new(text));
        builder
            .body(body)
            .map_err(|e| Undelivered::permanent(format!("email: {e}")))
    }
}

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    async fn deliver(&self, message: &Message) -> Result<(), Undelivered> {
        let email = self.email(message)?;
        let transport = self.transport()?;
        match transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Undelivered::permanent(format!(
                "email: the SMTP server {} refused the message: {e}",
                self.config.host
            ))),
            Err(e) => Err(Undelivered::transient(format!(
                "email: the SMTP server {}: {e}",
                self.config.host
            ))),
        }
    }
}
