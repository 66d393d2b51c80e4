//! The browser console (issue 23): the login page, sessions, the campaigns with the buttons the
//! signed-in role may press, the approval, and the audit log. Served by the daemon next to the
//! status page ([`crate::observe::http`] takes [`router`] as a value).
//!
//! Every action is a form posting the session's CSRF token, checked before anything else; then
//! the same [`App`] function as the command line runs with [`Actor::Account`] (the role read
//! from the database on every request). Pages are Italian HTML built in [`pages`]; the policy
//! ([`CONTENT_SECURITY_POLICY`]) loads nothing but our own style sheet and runs no script.
//! No token, password or cookie reaches a log line.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};

use crate::app::{Action, Actor, App, Forbidden, LoginRefused, SessionRefused, SignedIn};

mod pages;
mod workbench;

/// The session cookie's name.
pub const COOKIE: &str = "avvisi_session";

/// The login form's cookie: before a session exists, the login form's CSRF token is this
/// cookie's value repeated in a hidden field (a page elsewhere can post a form to us, but can
/// neither read nor set our cookie).
pub const LOGIN_COOKIE: &str = "avvisi_accesso";

/// The console's content security policy: our own style sheet and images, forms posted only to
/// us, no script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("console.css");

/// The page where a signed-in person changes their own password; the only one open to an
/// account whose password someone else set.
const PASSWORD_PAGE: &str = "/console/password";

/// The largest new-campaign form accepted, its uploaded list included: 1.2 million fiscal
/// codes with their line ends take about 20 MB.
const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

/// A campaign's button: a lifecycle move of the operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    Pause,
    Resume,
    Cancel,
    Launch,
}

impl Move {
    const ALL: [Move; 4] = [Move::Launch, Move::Pause, Move::Resume, Move::Cancel];

    /// The last segment of its form's address.
    fn path(self) -> &'static str {
        match self {
            Move::Pause => "pausa",
            Move::Resume => "riprendi",
            Move::Cancel => "annulla",
            Move::Launch => "avvia",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Move::Pause => "Metti in pausa",
            Move::Resume => "Riprendi",
            Move::Cancel => "Annulla",
            Move::Launch => "Avvia",
        }
    }

    fn lifecycle(self) -> crate::campaign::action::Action {
        use crate::campaign::action::Action as L;
        match self {
            Move::Pause => L::Pause,
            Move::Resume => L::Resume,
            Move::Cancel => L::Cancel,
            Move::Launch => L::Launch,
        }
    }

    fn action(self) -> Action {
        match self {
            Move::Pause => Action::CampaignPause,
            Move::Resume => Action::CampaignResume,
            Move::Cancel => Action::CampaignCancel,
            Move::Launch => Action::CampaignLaunch,
        }
    }
}

/// The moves `who` may make on `c` now: legal for its state, allowed for the role, and a launch
/// only for a one-off campaign with a standing approval when approval is required.
fn moves(app: &App, who: &Actor, c: &crate::app::CampaignView) -> Vec<Move> {
    Move::ALL
        .into_iter()
        .filter(|m| {
            m.lifecycle()
                .applies_to()
                .iter()
                .any(|s| s.as_str() == c.state)
        })
        .filter(|m| who.may(m.action()))
        .filter(|m| {
            *m != Move::Launch
                || (c.kind == "oneoff"
                    && (!app.settings().approval.required
                        || c.approval.as_ref().is_some_and(|a| {
                            a.decision == crate::campaign::approval::Decision::Approved
                                && a.stale_at.is_none()
                        })))
        })
        .collect()
}

#[derive(Clone)]
struct Console {
    app: App,
}

/// The console's routes, for the daemon's HTTP server.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/accedi", get(login_form).post(login))
        .route("/esci", post(logout))
        .route("/console.css", get(css))
        .route("/console", get(list))
        .route("/console/registro", get(audit))
        .route(
            "/console/password",
            get(password_form).post(password_change),
        )
        .route(
            "/console/nuova",
            get(new_form)
                .post(create)
                .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/console/coda", get(queue))
        .route("/console/soppressioni", get(suppressions))
        .route("/console/soppressioni/{action}", post(suppression_act))
        .route("/console/account", get(accounts))
        .route("/console/account/aggiungi", post(account_add))
        .route("/console/account/{name}/{action}", post(account_act))
        .route("/console/campagne/{name}", get(show))
        .route("/console/campagne/{name}/{action}", post(act))
        .merge(workbench::routes())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Console { app })
}

/// Headers of every console response: the policy above, no sniffing, no referrer, no framing,
/// and nothing kept in a shared cache (the pages are one person's).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// The session cookie's token in `headers`, if any.
fn cookie_token(headers: &HeaderMap) -> Option<SecretString> {
    cookie(headers, COOKIE)
}

/// The value of cookie `wanted` in `headers`, if any.
fn cookie(headers: &HeaderMap, wanted: &str) -> Option<SecretString> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| SecretString::from(value.to_string()))
}

/// Where a request comes from, for the login throttle and the audit log: the connection's
/// address; when that is a trusted reverse proxy (`http.trusted_proxies`), the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy (what our nearest proxy
/// saw: anything further left the client may have written). From anyone else the header is
/// ignored.
pub(crate) fn client_address(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// The request's session and its token; `Err` is the answer to give instead: a redirect to the
/// login page without one, 503 when the database does not answer.
/// The person a request comes from: their session (re-read from the database), its token and
/// the actor the use cases record, with the client's address. Without a valid session the
/// request is answered with a redirect to the login page.
struct Visitor {
    session: SignedIn,
    token: SecretString,
    who: Actor,
}

impl axum::extract::FromRequestParts<Console> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        c: &Console,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(Redirect::to("/accedi").into_response());
        };
        let session = match c.app.session(&token).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Redirect::to("/accedi").into_response()),
            Err(e) => return Err(unavailable(&e)),
        };
        let trusted = &c.app.settings().http.trusted_proxies;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| {
                client_address(peer.ip(), &parts.headers, trusted).to_string()
            });
        // A password someone else set: nothing but the change of password (and signing out)
        // until the owner sets their own.
        let path = parts.uri.path();
        if session.account.must_change_password && path != PASSWORD_PAGE && path != "/esci" {
            return Err(Redirect::to(PASSWORD_PAGE).into_response());
        }
        let who = session.actor(peer);
        Ok(Visitor {
            session,
            token,
            who,
        })
    }
}

fn unavailable(e: &anyhow::Error) -> Response {
    tracing::error!(error = format!("{e:#}"), "console: a request failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::message(
            "Servizio non disponibile",
            None,
            "La console non riesce a leggere il database: riprovare tra poco.",
        )),
    )
        .into_response()
}

/// A urlencoded form's fields.
fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn login_form(State(c): State<Console>) -> Response {
    login_page(&c, StatusCode::OK, None)
}

/// The login page with `error`, and a new login token in its form and its cookie.
fn login_page(c: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let token = crate::app::random_token();
    let mut response = (status, Html(pages::login(&token, error))).into_response();
    let secure = if c.app.settings().http.https() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/accedi; Max-Age=3600{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn login(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    // The form's token must be the one its page set in our cookie: a login forged by another
    // site (into the forger's account) fails here, before the password is looked at.
    let expected = cookie(&headers, LOGIN_COOKIE);
    let given = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if !expected.is_some_and(|t| crate::app::same_token(t.expose_secret(), given)) {
        return login_page(
            &c,
            StatusCode::FORBIDDEN,
            Some(
                "Il modulo di accesso è scaduto o non viene da questa pagina: \
                 nulla è stato fatto. Riprovare.",
            ),
        );
    }
    let name = fields.get("nome").map(|n| n.trim()).unwrap_or_default();
    let password = SecretString::from(fields.get("password").cloned().unwrap_or_default());
    let from = client_address(peer.ip(), &headers, &c.app.settings().http.trusted_proxies);
    match c.app.login(name, &password, &from.to_string()).await {
        Ok(session) => {
            let settings = &c.app.settings().http;
            let max_age = i64::from(settings.session_minutes) * 60;
            let secure = if settings.https() { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
                session.token.expose_secret()
            );
            let mut response = Redirect::to("/console").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => match e.downcast_ref::<SessionRefused>() {
            Some(SessionRefused::Throttled { retry_at }) => {
                let (text, wait) = throttle_notice(&c, *retry_at);
                retry_after(
                    login_page(&c, StatusCode::TOO_MANY_REQUESTS, Some(&text)),
                    wait,
                )
            }
            // A disabled account gets the same answer as a wrong password: the page does not
            // tell a stranger that the password was right.
            Some(SessionRefused::Login(
                LoginRefused::WrongCredentials | LoginRefused::Disabled(_),
            )) => login_page(
                &c,
                StatusCode::UNAUTHORIZED,
                Some("Nome utente o password errati"),
            ),
            _ => unavailable(&e),
        },
    }
}

async fn logout(
    State(c): State<Console>,
    Visitor {
        session,
        token,
        who,
    }: Visitor,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let name = session.account.name.clone();
    if let Err(refused) = check(&c, &who, &session, &fields, Action::Logout, &name).await {
        return refused;
    }
    if let Err(e) = c.app.logout(&who, &token).await {
        return unavailable(&e);
    }
    let mut response = Redirect::to("/accedi").into_response();
    let cleared = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn list(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    match c.app.campaigns().await {
        Ok(all) => {
            let rows: Vec<_> = all
                .into_iter()
                .map(|v| {
                    let m = moves(&c.app, &who, &v);
                    (v, m)
                })
                .collect();
            Html(pages::campaigns(&session, &rows)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn show(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(name): Path<String>,
) -> Response {
    let view = match c.app.campaign(&name).await {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(error = format!("{e:#}"), "console: no such campaign");
            return (
                StatusCode::NOT_FOUND,
                Html(pages::message(
                    "Campagna non trovata",
                    Some(&session),
                    "Non esiste una campagna con questo nome.",
                )),
            )
                .into_response();
        }
    };
    // What an approver would approve: only where an approval is possible, so that merely
    // looking at a page never records a refusal.
    let decidable = who.may(Action::CampaignApprove)
        && view.kind == "oneoff"
        && view.state == "draft"
        && view.created_by.as_deref() != Some(who.name());
    let preview = if decidable {
        match c.app.approval_preview(&who, &name).await {
            Ok(p) => Some(p),
            Err(e) => return refusal(&e, &session),
        }
    } else {
        None
    };
    let m = moves(&c.app, &who, &view);
    let tz = c.app.settings().calendar.timezone;
    Html(pages::campaign(&session, &view, &m, preview.as_ref(), tz)).into_response()
}

async fn act(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let asked = match action.as_str() {
        "pausa" => Action::CampaignPause,
        "riprendi" => Action::CampaignResume,
        "annulla" => Action::CampaignCancel,
        "avvia" => Action::CampaignLaunch,
        "approva" => Action::CampaignApprove,
        "rifiuta" => Action::CampaignReject,
        "anteprima" => Action::CampaignPreview,
        "prova" => Action::CampaignTest,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Html(pages::message(
                    "Azione sconosciuta",
                    Some(&session),
                    "Questa azione non esiste.",
                )),
            )
                .into_response()
        }
    };
    let fields = form(&body);
    if let Err(refused) = check(&c, &who, &session, &fields, asked, &name).await {
        return refused;
    }
    if asked == Action::CampaignPreview {
        // A look, not a change: a POST only so that the form carries its token like the rest.
        let wanted = fields.get("destinatario").cloned().unwrap_or_default();
        return match c.app.preview_for(&who, &name, &wanted).await {
            Ok(p) => {
                let tz = c.app.settings().calendar.timezone;
                Html(pages::recipient_preview(&session, &name, &p, tz)).into_response()
            }
            Err(e) if e.chain().any(|c| c.is::<crate::app::NotARecipient>()) => (
                StatusCode::NOT_FOUND,
                Html(pages::message(
                    "Destinatario non trovato",
                    Some(&session),
                    &format!("{e:#}"),
                )),
            )
                .into_response(),
            Err(e) => refusal(&e, &session),
        };
    }
    if asked == Action::CampaignTest {
        return match c.app.send_own_test(&who, &name).await {
            Ok(t) => Html(pages::done(
                "Prova inviata",
                &session,
                &name,
                &format!(
                    "Il messaggio di prova «{}» è stato inviato a {} ({}).",
                    t.subject, t.to, t.delivery
                ),
            ))
            .into_response(),
            Err(e) => refusal(&e, &session),
        };
    }
    let done: anyhow::Result<()> = match asked {
        Action::CampaignPause => c.app.pause_campaign(&who, &name).await.map(drop),
        Action::CampaignResume => c.app.resume_campaign(&who, &name).await.map(drop),
        Action::CampaignCancel => c.app.cancel_campaign(&who, &name).await.map(drop),
        Action::CampaignLaunch => c.app.launch_campaign(&who, &name).await.map(drop),
        Action::CampaignReject => {
            let reason = fields.get("motivo").cloned().unwrap_or_default();
            c.app.reject_campaign(&who, &name, &reason).await.map(drop)
        }
        _ => approve(&c.app, &who, &name, fields.get("impronta")).await,
    };
    match done {
        Ok(()) => {
            Redirect::to(&format!("/console/campagne/{}", pages::segment(&name))).into_response()
        }
        Err(e) => refusal(&e, &session),
    }
}

/// The audience changed between the page the approver read and their click.
#[derive(Debug, thiserror::Error)]
#[error(
    "il pubblico è cambiato da quando la pagina è stata aperta: ricaricarla e controllare di nuovo"
)]
struct ChangedSinceShown;

/// Approves `name` as the page showed it: the preview is computed again and must have the
/// audience hash the form carried.
async fn approve(app: &App, who: &Actor, name: &str, shown: Option<&String>) -> anyhow::Result<()> {
    let preview = app.approval_preview(who, name).await?;
    if shown != Some(&preview.audience_sha256) {
        return Err(ChangedSinceShown.into());
    }
    app.approve_campaign(who, &preview).await.map(drop)
}

/// The form's token and the signed-in role checked for `action` on `object`: the page to answer
/// with when either is refused (the refusal is audited by `App::check_form`).
async fn check(
    c: &Console,
    who: &Actor,
    session: &SignedIn,
    fields: &HashMap<String, String>,
    action: Action,
    object: &str,
) -> Result<(), Response> {
    let csrf = fields.get("csrf").map(String::as_str);
    (c.app.check_form(who, session, csrf, action, object).await).map_err(|e| refusal(&e, session))
}

/// The page for a refused action: 403 for a role's refusal or a form without its token, 409 for
/// a rule's (an illegal move, an approval missing), 503 for a fault.
fn refusal(e: &anyhow::Error, session: &SignedIn) -> Response {
    let forbidden = e.chain().any(|c| c.is::<Forbidden>());
    let csrf = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<SessionRefused>(),
            Some(SessionRefused::Csrf)
        )
    });
    if forbidden || csrf {
        let text = if csrf {
            "Il modulo non porta il codice di sicurezza di questa sessione: nulla è stato fatto. \
             Ricaricare la pagina e riprovare."
        } else {
            "Questa azione non è consentita al tuo ruolo: nulla è stato fatto."
        };
        return (
            StatusCode::FORBIDDEN,
            Html(pages::message("Azione non consentita", Some(session), text)),
        )
            .into_response();
    }
    let refused = e.chain().any(|c| {
        c.downcast_ref::<crate::campaign::CampaignError>()
            .is_some_and(|e| !matches!(e, crate::campaign::CampaignError::Db(_)))
            || c.is::<crate::campaign::approval::ApprovalError>()
            || c.is::<ChangedSinceShown>()
            || c.is::<crate::app::NoOwnAddress>()
    });
    if refused {
        return (
            StatusCode::CONFLICT,
            Html(pages::message(
                "Azione rifiutata",
                Some(session),
                &format!("Nulla è stato fatto: {e:#}"),
            )),
        )
            .into_response();
    }
    unavailable(e)
}

async fn audit(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    match c.app.audit_log_for(&who, None).await {
        Ok(entries) => {
            let tz = c.app.settings().calendar.timezone;
            Html(pages::audit(&session, &entries, tz)).into_response()
        }
        Err(e) => refusal(&e, &session),
    }
}

async fn password_form(Visitor { session, .. }: Visitor) -> Response {
    password_page(&session, StatusCode::OK, None)
}

fn password_page(session: &SignedIn, status: StatusCode, error: Option<&str>) -> Response {
    (status, Html(pages::own_password(session, error))).into_response()
}

/// Changes the signed-in person's own password: the current one, the new one twice.
async fn password_change(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    use crate::app::AccountError as E;
    let fields = form(&body);
    let name = session.account.name.clone();
    if let Err(refused) = check(&c, &who, &session, &fields, Action::OwnPassword, &name).await {
        return refused;
    }
    let field = |k: &str| SecretString::from(fields.get(k).cloned().unwrap_or_default());
    let (current, new) = (field("attuale"), field("nuova"));
    if new.expose_secret() != field("ripeti").expose_secret() {
        let text = "Le due copie della nuova password non coincidono: nulla è cambiato.";
        return password_page(&session, StatusCode::UNPROCESSABLE_ENTITY, Some(text));
    }
    match c.app.change_own_password(&who, &current, &new).await {
        Ok(_) => Redirect::to("/console").into_response(),
        Err(e) => {
            if let Some(SessionRefused::Throttled { retry_at }) = e.downcast_ref() {
                let (text, wait) = throttle_notice(&c, *retry_at);
                let page = password_page(&session, StatusCode::TOO_MANY_REQUESTS, Some(&text));
                return retry_after(page, wait);
            }
            let text = match e.downcast_ref::<E>() {
                Some(E::WrongCurrentPassword) => {
                    "La password attuale non è corretta: nulla è cambiato.".to_string()
                }
                Some(E::SamePassword) => {
                    "La nuova password deve essere diversa da quella attuale.".to_string()
                }
                Some(E::ShortPassword) => format!(
                    "La nuova password deve avere almeno {} caratteri.",
                    crate::app::MIN_PASSWORD_CHARS
                ),
                Some(E::LongPassword) => {
                    "La nuova password può avere al massimo 1024 caratteri.".to_string()
                }
                _ => return refusal(&e, &session),
            };
            password_page(&session, StatusCode::UNPROCESSABLE_ENTITY, Some(&text))
        }
    }
}

/// The throttle's answer to a wrong password too many (a login's, or the current password's on
/// the change of password): the Italian text with when to try again, and the seconds to wait.
fn throttle_notice(c: &Console, retry_at: chrono::DateTime<chrono::Utc>) -> (String, i64) {
    let tz = c.app.settings().calendar.timezone;
    let wait = (retry_at - c.app.clock().now()).num_seconds().max(1);
    let text = format!(
        "Troppi tentativi con una password errata. Riprovare dopo le {} (ora di Roma).",
        pages::local_time(retry_at + chrono::Duration::seconds(59), tz)
    );
    (text, wait)
}

/// `response` with `Retry-After: seconds`.
fn retry_after(mut response: Response, seconds: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// 403 for a page the role may not open.
fn not_for_role(session: &SignedIn) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(pages::message(
            "Azione non consentita",
            Some(session),
            "Questa pagina non è per il tuo ruolo.",
        )),
    )
        .into_response()
}

/// What the new-campaign form holds, to show it again after a refusal.
#[derive(Debug, Default)]
pub(crate) struct NewCampaignForm {
    pub name: String,
    pub audience: String,
    pub template: String,
    pub provinces: String,
    pub send_at: String,
}

impl NewCampaignForm {
    fn of(fields: &HashMap<String, String>) -> NewCampaignForm {
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        NewCampaignForm {
            name: get("nome"),
            audience: get("pubblico"),
            template: get("modello"),
            provinces: get("province"),
            send_at: get("invio"),
        }
    }

    /// The request for the use case: the provinces as the command line's filter
    /// (`province=BO,RM`), separated by commas or spaces in the form.
    fn request(&self) -> anyhow::Result<crate::app::NewCampaignRequest> {
        let audience = self
            .audience
            .parse()
            .map_err(|e: crate::audience::UnknownAudience| anyhow::anyhow!(e))?;
        let codes: Vec<&str> = self
            .provinces
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|c| !c.is_empty())
            .collect();
        Ok(crate::app::NewCampaignRequest {
            name: self.name.clone(),
            audience,
            template: self.template.clone(),
            filter: (!codes.is_empty()).then(|| format!("province={}", codes.join(","))),
            send_at: (!self.send_at.is_empty()).then(|| self.send_at.clone()),
            expires_at: None,
            transactional: None,
            users: None,
        })
    }
}

async fn new_form(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    if !who.may(Action::CampaignCreate) {
        return not_for_role(&session);
    }
    new_form_page(
        &c,
        &session,
        StatusCode::OK,
        &NewCampaignForm::default(),
        None,
    )
    .await
}

async fn new_form_page(
    c: &Console,
    session: &SignedIn,
    status: StatusCode,
    form: &NewCampaignForm,
    error: Option<&str>,
) -> Response {
    match c.app.template_names().await {
        Ok(templates) => (
            status,
            Html(pages::new_campaign(session, form, &templates, error)),
        )
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// Creates the draft campaign the form describes, through the same use case as
/// `avvisi campaign create`; a refusal shows the form again with the reason.
async fn create(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (fields, upload) = match multipart(content_type, &body) {
        Some(parts) => parts,
        None => (form(&body), None),
    };
    let filled = NewCampaignForm::of(&fields);
    if let Err(refused) = check(
        &c,
        &who,
        &session,
        &fields,
        Action::CampaignCreate,
        &filled.name,
    )
    .await
    {
        return refused;
    }
    let request = filled.request().and_then(|mut req| {
        if let Some((file, bytes)) = upload.filter(|(_, b)| !b.is_empty()) {
            let text =
                String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{file}: not UTF-8 text"))?;
            req.users = Some(crate::app::user_list(&file, &text)?);
        }
        Ok(req)
    });
    let created = match request {
        Ok(req) => c.app.create_campaign(&who, &req).await,
        Err(e) => Err(e),
    };
    match created {
        // The entries that matched nobody are listed on the answer itself, before anything else.
        Ok(done) if !done.not_found.is_empty() => Html(pages::created_with_missing(
            &session,
            &done.name,
            done.setup.audience_size,
            &done.not_found,
        ))
        .into_response(),
        Ok(done) => Redirect::to(&format!("/console/campagne/{}", pages::segment(&done.name)))
            .into_response(),
        Err(e) if e.chain().any(|c| c.is::<Forbidden>()) => refusal(&e, &session),
        Err(e)
            if e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::campaign::CampaignError>(),
                    Some(crate::campaign::CampaignError::Db(_))
                )
            }) =>
        {
            unavailable(&e)
        }
        // The operator's input: the form again, filled as it was, with the reason.
        Err(e) => {
            new_form_page(
                &c,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                &filled,
                Some(&format!("La campagna non è stata creata: {e:#}")),
            )
            .await
        }
    }
}

/// The answer to a refused or failed action on the pages below: 403 for a role or a token,
/// 503 when the database failed, else 409 with the reason (the operator's input or a rule).
fn refused_or_fault(e: &anyhow::Error, session: &SignedIn) -> Response {
    let forbidden = e.chain().any(|c| {
        c.is::<Forbidden>()
            || matches!(
                c.downcast_ref::<SessionRefused>(),
                Some(SessionRefused::Csrf)
            )
    });
    if forbidden || e.chain().any(|c| c.is::<sqlx::Error>()) {
        return refusal(e, session);
    }
    (
        StatusCode::CONFLICT,
        Html(pages::message(
            "Azione rifiutata",
            Some(session),
            &format!("Nulla è stato fatto: {e:#}"),
        )),
    )
        .into_response()
}

/// The queue: messages by state for each campaign, the first due times, and what holds
/// sending now.
async fn queue(State(c): State<Console>, Visitor { session, .. }: Visitor) -> Response {
    let (status, campaigns) = match tokio::try_join!(c.app.status(), c.app.campaigns()) {
        Ok(both) => both,
        Err(e) => return unavailable(&e),
    };
    let tz = c.app.settings().calendar.timezone;
    Html(pages::queue(&session, &status, &campaigns, tz)).into_response()
}

async fn suppressions(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    match c.app.suppressions().await {
        Ok(list) => {
            let tz = c.app.settings().calendar.timezone;
            let editable = who.may(Action::Suppress);
            Html(pages::suppressions(&session, &list, editable, tz)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Adds an address to the suppression list or removes one: the same use cases as
/// `avvisi suppress` and `avvisi unsuppress`.
async fn suppression_act(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(action): Path<String>,
    body: Bytes,
) -> Response {
    let asked = match action.as_str() {
        "aggiungi" => Action::Suppress,
        "rimuovi" => Action::Unsuppress,
        _ => return unknown_action(&session),
    };
    let fields = form(&body);
    let address = fields
        .get("indirizzo")
        .map(|a| a.trim().to_string())
        .unwrap_or_default();
    if let Err(refused) = check(&c, &who, &session, &fields, asked, &address).await {
        return refused;
    }
    let done = if asked == Action::Suppress {
        let reason = fields
            .get("motivo")
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .unwrap_or("aggiunto dalla console");
        c.app.suppress(&who, &address, reason).await.map(drop)
    } else {
        c.app.unsuppress(&who, &address).await.map(drop)
    };
    match done {
        Ok(()) => Redirect::to("/console/soppressioni").into_response(),
        Err(e) => refused_or_fault(&e, &session),
    }
}

fn unknown_action(session: &SignedIn) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message(
            "Azione sconosciuta",
            Some(session),
            "Questa azione non esiste.",
        )),
    )
        .into_response()
}

/// The accounts, for administrators only (the page names everyone who may act).
async fn accounts(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    if !who.may(Action::UsersAdd) {
        return not_for_role(&session);
    }
    accounts_page(&c, &session, StatusCode::OK, None).await
}

async fn accounts_page(
    c: &Console,
    session: &SignedIn,
    status: StatusCode,
    notice: Option<(&str, &str)>,
) -> Response {
    match c.app.accounts().await {
        Ok(list) => {
            let tz = c.app.settings().calendar.timezone;
            (status, Html(pages::accounts(session, &list, notice, tz))).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Adds an account; without a password in the form, one is made up and shown once, on the
/// answer's page only (never stored but as its hash, never in a log).
async fn account_add(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let name = fields
        .get("nome")
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    if let Err(refused) = check(&c, &who, &session, &fields, Action::UsersAdd, &name).await {
        return refused;
    }
    let role: crate::store::accounts::Role = match fields.get("ruolo").and_then(|r| r.parse().ok())
    {
        Some(r) => r,
        None => {
            return refused_or_fault(&anyhow::anyhow!("ruolo sconosciuto"), &session);
        }
    };
    let given = fields.get("password").filter(|p| !p.is_empty());
    // 20 hex characters: 80 random bits, above the 12-character minimum.
    let made_up = given
        .is_none()
        .then(|| crate::app::random_token()[..20].to_string());
    let password = SecretString::from(given.cloned().or(made_up.clone()).unwrap_or_default());
    let address = fields
        .get("indirizzo")
        .map(|a| a.trim())
        .filter(|a| !a.is_empty());
    match c
        .app
        .add_account(&who, &name, role, &password, address)
        .await
    {
        Ok(added) => {
            let text = match &made_up {
                Some(p) => format!(
                    "Account {} creato. Password iniziale, mostrata solo ora: {p}",
                    added.name
                ),
                None => format!("Account {} creato con la password scelta.", added.name),
            };
            accounts_page(&c, &session, StatusCode::OK, Some(("notice", &text))).await
        }
        Err(e) => refused_or_fault(&e, &session),
    }
}

/// Disables an account, changes its role or sets its address.
async fn account_act(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let asked = match action.as_str() {
        "disattiva" => Action::UsersDisable,
        "ruolo" => Action::UsersRole,
        "indirizzo" => Action::UsersAddress,
        _ => return unknown_action(&session),
    };
    let fields = form(&body);
    if let Err(refused) = check(&c, &who, &session, &fields, asked, &name).await {
        return refused;
    }
    let done = if asked == Action::UsersDisable {
        c.app.disable_account(&who, &name).await
    } else if asked == Action::UsersAddress {
        let address = fields.get("indirizzo").cloned().unwrap_or_default();
        c.app.set_address(&who, &name, &address).await
    } else {
        match fields.get("ruolo").and_then(|r| r.parse().ok()) {
            Some(role) => c.app.set_role(&who, &name, role).await,
            None => Err(anyhow::anyhow!("ruolo sconosciuto")),
        }
    };
    match done {
        Ok(_) => Redirect::to("/console/account").into_response(),
        Err(e) => refused_or_fault(&e, &session),
    }
}

/// An uploaded file: its name and its bytes.
type Upload = (String, Vec<u8>);

/// The fields and the one uploaded file of a `multipart/form-data` body, or `None` when the
/// body is not one. Text fields are read as UTF-8.
fn multipart(content_type: &str, body: &[u8]) -> Option<(HashMap<String, String>, Option<Upload>)> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"'))?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = HashMap::new();
    let mut file = None;
    let mut rest = body;
    // Each part sits between two delimiters: "\r\n" headers "\r\n\r\n" content "\r\n".
    while let Some(at) = find(rest, &delimiter) {
        let part = &rest[..at];
        rest = &rest[at + delimiter.len()..];
        let Some(part) = part.strip_prefix(b"\r\n") else {
            continue;
        };
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]);
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let param = |name: &str| {
            disposition
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('"').to_string())
        };
        let name = param("name")?;
        match param("filename") {
            Some(f) => file = Some((f, content.to_vec())),
            None => {
                fields.insert(name, String::from_utf8_lossy(content).into_owned());
            }
        }
    }
    Some((fields, file))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
