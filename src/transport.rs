//! Delivery transports: `.eml` files in a folder (embedded default) or an SMTP relay.
//!
//! Failures are classified once, here, so the worker decides retries without knowing lettre:
//! a 4xx reply is [`FailureKind::Transient`], a 5xx reply [`FailureKind::Permanent`], and no
//! reply at all (refused, dropped, timed out) [`FailureKind::Unreachable`], which also tells the
//! worker to back off as a whole instead of burning through the queue.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{Settings, TransportKind};

/// How a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The relay answered 4xx: try again later.
    Transient,
    /// The relay answered 5xx: this message will never go through.
    Permanent,
    /// No usable answer (connection refused or dropped, timeout, TLS): the relay is in trouble.
    Unreachable,
    /// Not attempted: the relay's hourly quota (`rate.per_hour`) is used up for now.
    Throttled,
}

/// A failed send, with the relay's reply code and text when there was one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct SendFailure {
    pub kind: FailureKind,
    pub code: Option<u16>,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("smtp.url: {0}")]
    SmtpUrl(String),
    #[error("cannot create the outbox folder {}: {source}", dir.display())]
    Folder {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Where emails go.
#[derive(Clone)]
pub enum Transport {
    /// One `NAME.eml` per email; written atomically, so a retry overwrites, never duplicates.
    Files(PathBuf),
    /// One shared lettre transport: its pool reuses connections across messages.
    Smtp(Relay),
}

type Limiter = governor::DefaultDirectRateLimiter;

/// The relay and its limits, shared by every connection of this process.
#[derive(Clone)]
pub struct Relay {
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    per_second: Option<Arc<Limiter>>,
    per_hour: Option<Arc<Limiter>>,
}

impl Transport {
    /// The transport chosen by `delivery.transport`.
    pub fn from_settings(settings: &Settings) -> Result<Transport, TransportError> {
        match settings.delivery.transport {
            TransportKind::File => {
                let dir = settings.delivery.dir.clone();
                std::fs::create_dir_all(&dir).map_err(|source| TransportError::Folder {
                    dir: dir.clone(),
                    source,
                })?;
                Ok(Transport::Files(dir))
            }
            TransportKind::Smtp => {
                let smtp = &settings.smtp;
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url)
                    .map_err(|e| TransportError::SmtpUrl(e.to_string()))?
                    .timeout(Some(Duration::from_secs(smtp.timeout_seconds)))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(settings.delivery.concurrency)
                            .idle_timeout(Duration::from_secs(60)),
                    );
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_string(),
                    ));
                }
                let rate = &settings.rate;
                Ok(Transport::Smtp(Relay {
                    smtp: builder.build(),
                    // No burst above the per-second rate: the relay sees an even flow.
                    per_second: NonZeroU32::new(rate.per_second).map(|n| {
                        Arc::new(Limiter::direct(
                            Quota::per_second(n).allow_burst(NonZeroU32::MIN),
                        ))
                    }),
                    // The hourly quota may be used at any pace within the hour.
                    per_hour: NonZeroU32::new(rate.per_hour)
                        .map(|n| Arc::new(Limiter::direct(Quota::per_hour(n)))),
                }))
            }
        }
    }

    /// A short description for logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Transport::Files(dir) => format!("files in {}", dir.display()),
            Transport::Smtp(_) => "smtp".to_string(),
        }
    }

    /// Delivers one email. `file_stem` names the `.eml` file for the file transport.
    pub async fn send(&self, message: &Message, file_stem: &str) -> Result<(), SendFailure> {
        match self {
            Transport::Files(dir) => write_eml(dir, file_stem, message.formatted())
                .await
                .map_err(|e| SendFailure {
                    kind: FailureKind::Unreachable,
                    code: None,
                    detail: format!("cannot write {}: {e}", dir.display()),
                }),
            Transport::Smtp(relay) => {
                if let Some(hourly) = &relay.per_hour {
                    if let Err(not_until) = hourly.check() {
                        let clock = governor::clock::DefaultClock::default();
                        let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                        return Err(SendFailure {
                            kind: FailureKind::Throttled,
                            code: None,
                            detail: format!(
                                "hourly quota used up; next slot in {}s",
                                wait.as_secs() + 1
                            ),
                        });
                    }
                }
                if let Some(per_second) = &relay.per_second {
                    per_second.until_ready().await;
                }
                relay
                    .smtp
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }
        }
    }
}

async fn write_eml(dir: &std::path::Path, stem: &str, bytes: Vec<u8>) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{stem}.eml.tmp"));
    let path = dir.join(format!("{stem}.eml"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await
}

fn classify(e: lettre::transport::smtp::Error) -> SendFailure {
    let code = e.status().map(u16::from);
    let kind = if e.is_permanent() {
        FailureKind::Permanent
    } else if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Unreachable
    };
    // lettre's Display says what happened; its source says why (e.g. "Connection refused").
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    SendFailure { kind, code, detail }
}
