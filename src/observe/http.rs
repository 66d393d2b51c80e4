//! The daemon's HTTP server (axum): `/healthz`, `/readyz`, `/metrics` and the status page `/`.
//! Read-only: nothing here changes the outbox. It stops with the daemon.
//!
//! Every response carries [`security_headers`]; text quoted from outside (a relay's reply on
//! `/readyz`) is escaped; a non-loopback `http.address` is served with a warning, as nothing
//! here asks who is asking.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::health::{readiness, Health};
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Db;
use crate::telemetry::printable;

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
/// `stop` is cancelled, with `more` routes (the console's, passed in by the daemon, a stage
/// above this one) next to these. Returns the address bound (port 0 picks one) and the server's
/// task.
pub async fn start(
    address: SocketAddr,
    endpoints: Endpoints,
    more: Router,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| HttpError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { address, source })?;
    if !address.ip().is_loopback() {
        tracing::warn!(
            address = %address,
            "http.address is not a loopback address: the status page (campaigns, reply texts), \
             /metrics and /readyz are open to whoever reaches this port, with no \
             authentication; keep it on 127.0.0.1 behind a proxy that authenticates, or \
             firewall the port"
        );
    }
    let app = Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(endpoints)
        .merge(more)
        .layer(axum::middleware::map_response(security_headers));
    let task = tokio::spawn(async move {
        // The client's address, for the console's audit log and its login throttle.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((bound, task))
}

/// The content security policy of every response: nothing loaded, run or framed; only the
/// status page's own `<style>` and `style=""` attributes (bar widths, legend colours) and its
/// inline SVG chart. No script at all.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers for every response, the 404s included: no MIME sniffing (a reply text served as
/// text stays text), no framing, the policy above, no referrer sent to links elsewhere. A
/// response that set its own (stricter) policy, the console's, keeps it.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
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
        body.push_str(&format!("{verdict} {}: {}\n", c.name, inert(&c.detail)));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// `text` from outside (a relay's reply) for a plain-text page: control characters escaped
/// ([`printable`]), and markup too, should a browser or a dashboard render it as HTML.
fn inert(text: &str) -> String {
    printable(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How long `/metrics` waits for the database before it answers without it: well within
/// Prometheus's default scrape timeout (10 s). A server that is down or a SQLite file locked
/// by another process would otherwise hold the answer for the pool's or the lock's timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// The Prometheus text format: the outbox's gauges, read now, and the in-memory metrics.
/// Without the database (an error, or no answer within [`SCRAPE_TIMEOUT`]), the in-memory
/// metrics all the same, the outbox's gauges at their last values, and
/// `avvisi_database_up 0`; the log says so once per change, not at every scrape.
async fn metrics(State(e): State<Endpoints>) -> Response {
    let scraped =
        tokio::time::timeout(SCRAPE_TIMEOUT, super::metrics::scrape(&e.db, e.clock.now())).await;
    let problem = match scraped {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(e.db.describe(&err)),
        Err(_) => Some(format!("no answer within {} s", SCRAPE_TIMEOUT.as_secs())),
    };
    if super::metrics::database_up(problem.is_none()) {
        match &problem {
            Some(error) => tracing::warn!(
                %error,
                "metrics: cannot read the outbox; /metrics answers with avvisi_database_up 0 \
                 and the outbox's gauges at their last values"
            ),
            None => tracing::info!("metrics: the outbox can be read again"),
        }
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

async fn status_page(State(e): State<Endpoints>, RawQuery(query): RawQuery) -> Response {
    // Reloading by itself only when asked (`/?ricarica=1`): a page that refreshes on its own
    // fails WCAG 2.2.1 unless the reader chose it.
    let reload = query.is_some_and(|q| q.split('&').any(|p| p == "ricarica=1"));
    let now = e.clock.now();
    match super::page::status(&e.db, &e.settings, Some(&e.health), now, reload).await {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "status page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "la pagina di stato non si può costruire ora: {}\n",
                    inert(&err.to_string())
                ),
            )
                .into_response()
        }
    }
}
