//! The daemon's HTTP server (axum): `/healthz`, `/readyz`, `/metrics` and the status page `/`.
//! Read-only: nothing here changes the outbox. It stops with the daemon.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::health::{readiness, Health};
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on http.address {address}: {source} (another process may use it; set http.address, or empty to serve nothing)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Clone)]
pub struct Endpoints {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub health: Health,
    pub prometheus: PrometheusHandle,
}

/// Binds `address` now (a port in use stops the daemon at start, not later) and serves until
/// `stop` is cancelled. Returns the address bound (port 0 picks one) and the server's task.
pub async fn start(
    address: SocketAddr,
    endpoints: Endpoints,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| HttpError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { address, source })?;
    let app = Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(endpoints);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((bound, task))
}

/// The process is alive and its runtime answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every check passes, else 503; one line per check either way.
async fn readyz(State(e): State<Endpoints>) -> Response {
    let checks = readiness(&e.db, &e.settings, &e.health, e.clock.now()).await;
    let ready = checks.iter().all(|c| c.ok);
    let mut body = String::new();
    for c in &checks {
        let verdict = if c.ok { "ok" } else { "FAIL" };
        body.push_str(&format!("{verdict} {}: {}\n", c.name, c.detail));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// The Prometheus text format: the outbox's gauges, read now, and the in-memory metrics.
async fn metrics(State(e): State<Endpoints>) -> Response {
    if let Err(err) = super::metrics::scrape(&e.db, e.clock.now()).await {
        // The in-memory metrics are still worth a scrape; the database's absence shows on
        // /readyz and in the log.
        tracing::warn!(error = %e.db.describe(&err), "metrics: cannot read the outbox");
    }
    e.prometheus.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.prometheus.render(),
    )
        .into_response()
}

async fn status_page(State(e): State<Endpoints>) -> Response {
    match super::page::status(&e.db, &e.settings, Some(&e.health), e.clock.now()).await {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "status page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the status page cannot be built now: {err}\n"),
            )
                .into_response()
        }
    }
}
