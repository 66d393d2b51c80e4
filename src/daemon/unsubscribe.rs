//! The one-click unsubscribe endpoint (RFC 8058), on its own listener (`unsubscribe.address`),
//! meant to stand behind the reverse proxy that serves `unsubscribe.public_url`: the proxy
//! forwards `PUBLIC_URL/u/TOKEN` to `/u/TOKEN` here. Nothing else is served.
//!
//! - `GET /u/TOKEN` shows a confirmation page with a button and changes nothing: link scanners
//!   and prefetchers follow GET links.
//! - `POST /u/TOKEN` (the providers' one-click, body `List-Unsubscribe=One-Click`, or the page's
//!   button) records the opt-out of that user from that stream, idempotent; a short page, no
//!   cookie, no redirect.
//! - A token that is not one avvisi made (forged, altered, cut) gets 400 and records nothing.
//!
//! The pages are Italian, self-contained: no script, no external resource, a policy that allows
//! only their own style and a form posted to themselves.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::app::{unsubscribe, UnsubscribeError};
use crate::audience::optout::Tokens;
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::{Db, Stream};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeServerError {
    #[error("cannot listen on unsubscribe.address {address}: {source} (another process may use it; set unsubscribe.address, or empty to serve nothing)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Endpoint {
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
}

/// Binds `address` now and serves until `stop` is cancelled. Returns the address bound (port 0
/// picks one) and the server's task.
pub(super) async fn start(
    address: SocketAddr,
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), UnsubscribeServerError> {
    let bind = |source| UnsubscribeServerError::Bind { address, source };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let app = Router::new()
        .route("/u/{token}", get(confirm).post(record))
        .fallback(not_found)
        .layer(axum::middleware::map_response(headers))
        .with_state(Endpoint {
            db,
            settings,
            clock,
        });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the unsubscribe endpoint stopped");
        }
    });
    Ok((bound, task))
}

/// Nothing loaded, run or framed; the pages' own `<style>`; forms posted to themselves only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every response: no sniffing, no framing, the policy above, no referrer, not cached (a
/// proxy must not answer a POST's URL from a GET's page), and no cookie ever set.
async fn headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// GET: what the link would stop, and a button; nothing recorded.
async fn confirm(State(e): State<Endpoint>, Path(token): Path<String>) -> Response {
    match Tokens::new(&e.settings.unsubscribe).verify(&token) {
        Ok((_, stream)) => {
            let body = format!(
                "<h1>Annullare l'iscrizione?</h1>\n\
                 <p>Non riceverà più {} di {}.</p>\n\
                 <p>Le comunicazioni sulle procedure ancora da completare a Suo nome continueranno \
                 ad arrivare.</p>\n\
                 <form method=\"post\">\n\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n\
                 <button type=\"submit\">Conferma l'annullamento</button>\n\
                 </form>",
                what(&stream),
                escape(&e.settings.mail.service_name),
            );
            page(StatusCode::OK, "Annullamento dell'iscrizione", &body)
        }
        Err(_) => invalid(),
    }
}

/// POST: the opt-out recorded (once; a repeat is fine).
async fn record(State(e): State<Endpoint>, Path(token): Path<String>) -> Response {
    match unsubscribe(&e.db, &e.settings, &token, e.clock.now()).await {
        Ok(done) => {
            let body = format!(
                "<h1>Iscrizione annullata</h1>\n<p>Non riceverà più {} di {}.</p>",
                what(&done.stream),
                escape(&e.settings.mail.service_name),
            );
            page(StatusCode::OK, "Iscrizione annullata", &body)
        }
        Err(UnsubscribeError::Token(_)) => invalid(),
        Err(UnsubscribeError::Database(err)) => {
            tracing::error!(error = %e.db.describe(&err), "unsubscribe: cannot record the opt-out");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Servizio non disponibile",
                "<h1>Servizio momentaneamente non disponibile</h1>\n\
                 <p>La richiesta non è stata registrata. La preghiamo di riprovare più tardi.</p>",
            )
        }
    }
}

fn invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Link non valido",
        "<h1>Link non valido</h1>\n<p>Il link non è valido o è incompleto: nessuna modifica è \
         stata registrata. Usi il link così come appare nel messaggio ricevuto.</p>",
    )
}

async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Pagina non trovata",
        "<h1>Pagina non trovata</h1>",
    )
}

/// The stream in the words of the pages.
fn what(stream: &Stream) -> String {
    match stream {
        Stream::MaintenanceNotice => "gli avvisi di manutenzione".to_string(),
        Stream::ReopeningGeneral => "gli avvisi di riapertura".to_string(),
        Stream::Campaign(name) => format!("le comunicazioni «{}»", escape(name)),
        Stream::AllNotices => "gli avvisi".to_string(),
        // Never offered (the token is refused first); said plainly all the same.
        Stream::Reminders | Stream::ReopeningProcedures => "questi messaggi".to_string(),
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"it\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em;\
         line-height:1.5}}button{{font-size:1em;padding:.5em 1em}}</style>\n\
         </head>\n<body>\n{body}\n</body>\n</html>\n"
    );
    (status, Html(html)).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
