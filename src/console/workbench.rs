//! The editors' workbench in the console (issue 24): the routes under `/console/modelli` and
//! their pages. Each calls one [`App`] function (`app/workbench.rs`, `app/templates.rs`) with the
//! signed-in account; every POST carries the session's CSRF token, checked first.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono_tz::Tz;

use super::pages::{csrf_field, esc, local, page, segment};
use super::{check, form, refusal, unavailable, Console, Visitor};
use crate::app::{
    Action, Actor, CampaignChanges, Draft, DraftPreview, DraftRefused, Forbidden, SignedIn,
    TemplatesRefused,
};
use crate::editor::diff::DiffLine;
use crate::store::template_sets::{Publication, PublicationKind};

/// The workbench's routes.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/console/modelli", get(workbench))
        .route("/console/modelli/bozza", post(start))
        .route("/console/modelli/file/{*path}", get(file).post(save))
        .route("/console/modelli/anteprima", post(preview_for))
        .route("/console/modelli/esempio", post(preview_sample))
        .route("/console/modelli/modifiche", get(own_changes))
        .route("/console/modelli/modifiche/{author}", get(changes))
        .route("/console/modelli/approva/{author}", post(approve))
        .route("/console/modelli/pubblica", post(publish))
        .route("/console/modelli/storia", get(history))
        .route("/console/modelli/ripristina/{digest}", post(rollback))
}

/// The answer to a workbench refusal: a rule's (a check failing, no approval, an unknown
/// file or user) is 409 with the reason; a role's or a token's is 403.
fn refused(e: &anyhow::Error, session: &SignedIn) -> Response {
    let rule = e
        .chain()
        .any(|c| c.is::<DraftRefused>() || c.is::<TemplatesRefused>());
    if rule && !e.chain().any(|c| c.is::<Forbidden>()) {
        let status = if e.chain().any(|c| {
            matches!(
                c.downcast_ref::<DraftRefused>(),
                Some(DraftRefused::NoSuchUser(_))
            )
        }) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::CONFLICT
        };
        return (
            status,
            Html(page(
                "Azione rifiutata",
                Some(session),
                &format!(
                    "<p class=\"error\" role=\"alert\">Nulla è stato fatto: {}</p>\
                     <p><a href=\"/console/modelli\">Torna ai modelli</a></p>",
                    esc(&format!("{e:#}"))
                ),
            )),
        )
            .into_response();
    }
    refusal(e, session)
}

/// The form's fields once it carries the session's CSRF token (checked before anything else);
/// else the refusal's page, the refusal recorded.
async fn checked(
    c: &Console,
    who: &Actor,
    session: &SignedIn,
    body: &Bytes,
    action: Action,
    object: &str,
) -> Result<HashMap<String, String>, Response> {
    let fields = form(body);
    check(c, who, session, &fields, action, object).await?;
    Ok(fields)
}

/// A file's address in the workbench: each segment of its path escaped.
fn file_href(path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(segment).collect();
    format!("/console/modelli/file/{}", segments.join("/"))
}

fn findings(d: &Draft, only: Option<&str>) -> String {
    let list = |items: &[crate::app::Finding], class: &str| -> String {
        items
            .iter()
            .filter(|f| only.is_none_or(|o| f.file == o))
            .map(|f| {
                let place = match f.line {
                    Some(l) => format!(
                        "<a href=\"{}#riga-{l}\">{}:{l}</a>",
                        file_href(&f.file),
                        esc(&f.file)
                    ),
                    None => esc(&f.file),
                };
                format!("<li class=\"{class}\">{place}: {}</li>", esc(&f.message))
            })
            .collect()
    };
    let problems = list(&d.problems, "problema");
    let warnings = list(&d.warnings, "avviso");
    let mut out = String::new();
    let elsewhere = d
        .problems
        .iter()
        .filter(|f| only.is_some_and(|o| f.file != o))
        .count();
    if elsewhere > 0 {
        out.push_str(&format!(
            "<p class=\"error\" role=\"alert\">Altri file della bozza hanno {elsewhere} problemi: \
             <a href=\"/console/modelli\">vedere l'elenco</a>.</p>"
        ));
    }
    if d.problems.is_empty() {
        out.push_str(
            "<p class=\"notice\" role=\"status\" id=\"esito\">Il controllo completo della bozza \
             non trova problemi.</p>",
        );
    } else if !problems.is_empty() {
        out.push_str(&format!(
            "<div role=\"alert\" id=\"esito\"><p class=\"error\">Il controllo completo della \
             bozza trova {} problemi: la bozza non può essere pubblicata finché restano.</p>\
             <ul id=\"problemi\">{problems}</ul></div>",
            d.problems.len() - elsewhere
        ));
    }
    if !warnings.is_empty() {
        out.push_str(&format!("<h3>Avvisi</h3><ul>{warnings}</ul>"));
    }
    out
}

async fn workbench(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    let edits = who.may(Action::Templates);
    if !edits && !who.may(Action::TemplatesApprove) {
        return super::not_for_role(&session);
    }
    let draft = if edits {
        match c.app.draft(&who).await {
            Ok(d) => d,
            Err(e) => return unavailable(&e),
        }
    } else {
        None
    };
    let others = match c.app.drafts_to_approve(&who).await {
        Ok(o) => o,
        Err(e) => return unavailable(&e),
    };
    let tz = c.app.settings().calendar.timezone;
    let approval = c.app.settings().approval.templates;
    let mut body = String::new();
    if edits {
        body.push_str(&own_draft(&c, &session, draft.as_ref(), approval, tz));
    }
    body.push_str("<h2>Bozze di altri redattori da approvare</h2>");
    if others.is_empty() {
        body.push_str("<p>Nessuna bozza da approvare.</p>");
    }
    for d in &others {
        let approved: Vec<String> = d.approvals.iter().map(|a| esc(&a.approved_by)).collect();
        body.push_str(&format!(
            "<h3>Bozza di {author}</h3><p>Modificata il {when}; versione {digest}; {check}; {approved}.</p>\
             <p><a href=\"/console/modelli/modifiche/{seg}\">Cosa cambia con la bozza di {author}</a></p>",
            author = esc(&d.info.author),
            when = local(d.info.updated_at, tz),
            digest = esc(&d.digest),
            check = if d.problems.is_empty() {
                "supera il controllo".to_string()
            } else {
                format!("{} problemi al controllo", d.problems.len())
            },
            approved = if approved.is_empty() {
                "non ancora approvata".to_string()
            } else {
                format!("approvata da {}", approved.join(", "))
            },
            seg = segment(&d.info.author),
        ));
        if d.problems.is_empty() && !d.approvals.iter().any(|a| a.approved_by == who.name()) {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/console/modelli/approva/{}\">{}\
                 <button type=\"submit\">Approva la bozza di {}</button></form>",
                segment(&d.info.author),
                csrf_field(&session),
                esc(&d.info.author)
            ));
        }
    }
    Html(page("Modelli dei messaggi", Some(&session), &body)).into_response()
}

/// The editor's own draft: its files, the check, the previews, the changes and the publication.
fn own_draft(c: &Console, s: &SignedIn, d: Option<&Draft>, approval: bool, tz: Tz) -> String {
    let csrf = csrf_field(s);
    let start = |label: &str| {
        format!(
            "<form method=\"post\" action=\"/console/modelli/bozza\">{csrf}\
             <button type=\"submit\">{label}</button></form>"
        )
    };
    let Some(d) = d else {
        return format!(
            "<p>Le modifiche si fanno in una bozza personale, copia della versione pubblicata: \
             nessun salvataggio arriva ai destinatari finché la bozza non è pubblicata.</p>{}\
             <p><a href=\"/console/modelli/storia\">Versioni pubblicate e ripristino</a></p>",
            start("Inizia una bozza dalla versione pubblicata")
        );
    };
    let mut body = format!(
        "<h2>La tua bozza</h2><p>Iniziata il {} dalla versione {}, modificata il {}. \
         Versione della bozza: <span id=\"versione\">{}</span>{}.</p>",
        local(d.info.started_at, tz),
        esc(&d.info.base_digest),
        local(d.info.updated_at, tz),
        esc(&d.digest),
        if d.is_live() {
            " (uguale alla versione pubblicata)"
        } else {
            ""
        }
    );
    body.push_str(&findings(d, None));
    body.push_str("<h3>File</h3><ul class=\"file\">");
    for path in d.files.keys() {
        body.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>",
            file_href(path),
            esc(path)
        ));
    }
    body.push_str("</ul>");
    // Previews: a real recipient, then any sample.
    let messages: String = d
        .files
        .keys()
        .filter_map(|p| p.strip_suffix("/subject.txt"))
        .filter(|m| !m.contains('/'))
        .map(|m| format!("<option value=\"{0}\">{0}</option>", esc(m)))
        .collect();
    let samples: String = c
        .app
        .preview_samples()
        .iter()
        .map(|s| {
            format!(
                "<option value=\"{}\">{}</option>",
                esc(&s.id),
                esc(&s.description)
            )
        })
        .collect();
    body.push_str(&format!(
        "<h3>Anteprima</h3>\
         <form method=\"post\" action=\"/console/modelli/anteprima\">{csrf}\
         <label for=\"destinatario\">Codice utente o codice fiscale di un destinatario reale</label>\
         <input type=\"text\" id=\"destinatario\" name=\"destinatario\" required>\
         <p><button type=\"submit\">Cosa riceve oggi con la bozza</button></p></form>\
         <form method=\"post\" action=\"/console/modelli/esempio\">{csrf}\
         <label for=\"messaggio\">Messaggio</label>\
         <select id=\"messaggio\" name=\"messaggio\">{messages}</select>\
         <label for=\"esempio\">Esempio (pubblico, riepiloghi di due e tre sezioni, indirizzo istituzionale...)</label>\
         <select id=\"esempio\" name=\"esempio\">{samples}</select>\
         <p><button type=\"submit\">Mostra l'esempio</button></p></form>\
         <p><a href=\"/console/modelli/modifiche\">Cosa cambia per i destinatari reali di ogni campagna</a></p>"
    ));
    // Publication: only a draft passing the check (the server checks again, whatever the page).
    body.push_str("<h3>Pubblicazione</h3>");
    if !d.problems.is_empty() {
        body.push_str(
            "<p>La bozza non supera il controllo: correggere i problemi elencati sopra.</p>",
        );
    } else if d.is_live() {
        body.push_str("<p>La bozza è uguale alla versione pubblicata: niente da pubblicare.</p>");
    } else if approval && !d.approved() {
        body.push_str(
            "<p id=\"serve-approvazione\">Serve l'approvazione di un altro redattore o di un \
             approvatore per questa versione della bozza: chiederla, poi pubblicare.</p>",
        );
    } else {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/console/modelli/pubblica\">{csrf}\
             <label for=\"nota\">Nota (cosa cambia, in poche parole)</label>\
             <input type=\"text\" id=\"nota\" name=\"nota\" required>\
             <p><button type=\"submit\">Pubblica la bozza</button></p></form>"
        ));
    }
    body.push_str(&format!(
        "<h3>Ricominciare</h3><p>Sostituisce la bozza con una copia della versione pubblicata.</p>{}\
         <p><a href=\"/console/modelli/storia\">Versioni pubblicate e ripristino</a></p>",
        start("Ricomincia dalla versione pubblicata")
    ));
    body
}

/// A file of the draft: its lines numbered (with the check's problems), then the form.
fn file_page(s: &SignedIn, d: &Draft, path: &str, notice: Option<&str>) -> String {
    let text = d.files.get(path).map(String::as_str).unwrap_or_default();
    let mut body = notice
        .map(|n| format!("<p class=\"notice\" role=\"status\">{}</p>", esc(n)))
        .unwrap_or_default();
    body.push_str(&findings(d, Some(path)));
    let bad: Vec<usize> = d
        .problems
        .iter()
        .filter(|p| p.file == path)
        .filter_map(|p| p.line)
        .collect();
    body.push_str(
        "<h2>Il file salvato, riga per riga</h2><table class=\"righe\"><thead><tr>\
         <th scope=\"col\">Riga</th><th scope=\"col\">Testo</th></tr></thead><tbody>",
    );
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let class = if bad.contains(&n) {
            " class=\"problema\""
        } else {
            ""
        };
        body.push_str(&format!(
            "<tr id=\"riga-{n}\"{class}><th scope=\"row\">{n}</th><td><code>{}</code></td></tr>",
            esc(line)
        ));
    }
    body.push_str("</tbody></table>");
    // The newline after <textarea> is dropped by the browser: it keeps a first empty line.
    body.push_str(&format!(
        "<h2>Modifica</h2><form method=\"post\" action=\"{}\">{}\
         <label for=\"contenuto\">Testo di {} (la bozza viene salvata e controllata; nulla \
         arriva ai destinatari finché non è pubblicata)</label>\
         <textarea id=\"contenuto\" name=\"contenuto\" rows=\"{}\" spellcheck=\"true\">\n{}</textarea>\
         <p><button type=\"submit\">Salva nella bozza</button></p></form>\
         <p><a href=\"/console/modelli\">Torna ai modelli</a></p>",
        file_href(path),
        csrf_field(s),
        esc(path),
        text.lines().count().clamp(3, 40) + 1,
        esc(text)
    ));
    page(&format!("Bozza: {path}"), Some(s), &body)
}

async fn start(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    if let Err(r) = checked(&c, &who, &session, &body, Action::TemplatesSave, "bozza").await {
        return r;
    }
    match c.app.start_draft(&who).await {
        Ok(_) => Redirect::to("/console/modelli").into_response(),
        Err(e) => refused(&e, &session),
    }
}

async fn file(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(path): Path<String>,
) -> Response {
    if !who.may(Action::Templates) {
        return super::not_for_role(&session);
    }
    match c.app.draft(&who).await {
        Ok(Some(d)) if d.files.contains_key(&path) => {
            Html(file_page(&session, &d, &path, None)).into_response()
        }
        Ok(Some(_)) => refused(&DraftRefused::NoSuchFile(path).into(), &session),
        Ok(None) => refused(&DraftRefused::NoDraft.into(), &session),
        Err(e) => unavailable(&e),
    }
}

async fn save(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match checked(&c, &who, &session, &body, Action::TemplatesSave, &path).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let content = fields.get("contenuto").cloned().unwrap_or_default();
    match c.app.save_draft_file(&who, &path, &content).await {
        Ok(d) => {
            let notice = "Salvato nella bozza (non pubblicato).";
            let status = if d.problems.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, Html(file_page(&session, &d, &path, Some(notice)))).into_response()
        }
        Err(e) => refused(&e, &session),
    }
}

fn preview_page(s: &SignedIn, p: &DraftPreview, tz: Tz) -> String {
    let mut body = format!(
        "<p id=\"descrizione\">{} Resa con la tua bozza il {}; nulla è stato inviato.</p>",
        esc(&p.description),
        local(p.at, tz)
    );
    if p.parts.is_empty() {
        body.push_str("<p>In questa data non riceve alcun messaggio.</p>");
    }
    for part in &p.parts {
        body.push_str(&format!("<h2>{}</h2>", esc(&part.message)));
        if let Some(e) = &part.error {
            body.push_str(&format!(
                "<p class=\"error\" role=\"alert\">Non si può preparare: {}</p>",
                esc(e)
            ));
            continue;
        }
        body.push_str(&format!(
            "<h3>Oggetto</h3><p class=\"oggetto\">{}</p>\
             <h3>Intestazioni</h3><pre class=\"intestazioni\">{}</pre>\
             <div class=\"affiancati\"><div><h3>HTML (sorgente)</h3><pre class=\"html\">{}</pre></div>\
             <div><h3>Testo</h3><pre class=\"testo\">{}</pre></div></div>",
            esc(&part.subject),
            esc(&part.headers),
            esc(&part.html),
            esc(&part.text)
        ));
    }
    body.push_str("<p><a href=\"/console/modelli\">Torna ai modelli</a></p>");
    page("Anteprima della bozza", Some(s), &body)
}

async fn preview_for(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    let fields = match checked(&c, &who, &session, &body, Action::Templates, "anteprima").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let wanted = fields.get("destinatario").cloned().unwrap_or_default();
    let preview = c.app.preview_draft_for(&who, &wanted, None).await;
    previewed(&c, &session, preview)
}

async fn preview_sample(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    let fields = match checked(&c, &who, &session, &body, Action::Templates, "anteprima").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let preview = c
        .app
        .preview_draft_sample(&who, &get("messaggio"), &get("esempio"))
        .await;
    previewed(&c, &session, preview)
}

/// The answer to a preview of the draft: its page, or the refusal.
fn previewed(c: &Console, session: &SignedIn, preview: anyhow::Result<DraftPreview>) -> Response {
    match preview {
        Ok(p) => Html(preview_page(
            session,
            &p,
            c.app.settings().calendar.timezone,
        ))
        .into_response(),
        Err(e) => refused(&e, session),
    }
}

fn changes_page(s: &SignedIn, author: &str, all: &[CampaignChanges]) -> String {
    let mut body = format!(
        "<p>Per al massimo {} destinatari reali di ogni campagna non conclusa: l'oggetto e il \
         testo resi ora con la versione pubblicata e con la bozza di {}. Righe tolte segnate \
         con «-», aggiunte con «+».</p>",
        crate::app::CHANGE_SAMPLES,
        esc(author)
    );
    if all.is_empty() {
        body.push_str("<p>Nessuna campagna con destinatari.</p>");
    }
    for c in all {
        body.push_str(&format!(
            "<h2>{} (messaggio {})</h2>",
            esc(&c.campaign),
            esc(&c.template)
        ));
        for r in &c.recipients {
            body.push_str(&format!("<h3>Utente {}</h3>", esc(&r.user_id)));
            if let Some(e) = &r.error {
                body.push_str(&format!(
                    "<p class=\"error\">La bozza non si può rendere: {}</p>",
                    esc(e)
                ));
                continue;
            }
            if !r.changed {
                body.push_str("<p>Nessuna differenza.</p>");
                continue;
            }
            let lines: String = r
                .diff
                .iter()
                .map(|l| match l {
                    DiffLine::Same(t) => format!("<span>  {}</span>\n", esc(t)),
                    DiffLine::Removed(t) => {
                        format!("<del class=\"tolta\">- {}</del>\n", esc(t))
                    }
                    DiffLine::Added(t) => {
                        format!("<ins class=\"aggiunta\">+ {}</ins>\n", esc(t))
                    }
                })
                .collect();
            body.push_str(&format!("<pre class=\"diff\">{lines}</pre>"));
        }
    }
    body.push_str("<p><a href=\"/console/modelli\">Torna ai modelli</a></p>");
    page("Cosa cambia", Some(s), &body)
}

async fn own_changes(State(c): State<Console>, v: Visitor) -> Response {
    let author = v.who.name().to_string();
    changes_of(&c, v, &author).await
}

async fn changes(State(c): State<Console>, v: Visitor, Path(author): Path<String>) -> Response {
    changes_of(&c, v, &author).await
}

async fn changes_of(c: &Console, Visitor { session, who, .. }: Visitor, author: &str) -> Response {
    let allowed = if author == who.name() {
        who.may(Action::Templates)
    } else {
        who.may(Action::TemplatesApprove)
    };
    if !allowed {
        return super::not_for_role(&session);
    }
    match c.app.draft_changes(&who, author).await {
        Ok(all) => Html(changes_page(&session, author, &all)).into_response(),
        Err(e) => refused(&e, &session),
    }
}

async fn approve(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(author): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked(&c, &who, &session, &body, Action::TemplatesApprove, &author).await {
        return r;
    }
    match c.app.approve_draft(&who, &author).await {
        Ok(_) => Redirect::to("/console/modelli").into_response(),
        Err(e) => refused(&e, &session),
    }
}

async fn publish(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    body: Bytes,
) -> Response {
    let fields = match checked(&c, &who, &session, &body, Action::TemplatesPublish, "bozza").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let note = fields.get("nota").cloned().unwrap_or_default();
    match c.app.publish_draft(&who, &note).await {
        Ok(_) => Redirect::to("/console/modelli/storia").into_response(),
        Err(e) => refused(&e, &session),
    }
}

fn kind_it(kind: PublicationKind) -> &'static str {
    match kind {
        PublicationKind::Publish => "pubblicazione",
        PublicationKind::Rollback => "ripristino",
        PublicationKind::Seed => "prima importazione dalla cartella",
    }
}

fn history_page(s: &SignedIn, list: &[Publication], may_roll_back: bool, tz: Tz) -> String {
    let mut body = String::from(
        "<p>Ogni pubblicazione, dalla più recente. La prima riga è la versione che ogni \
         demone usa ora; ripristinarne una precedente la pubblica di nuovo.</p>\
         <table><thead><tr><th scope=\"col\">Quando</th><th scope=\"col\">Chi</th>\
         <th scope=\"col\">Come</th><th scope=\"col\">Nota</th><th scope=\"col\">Versione</th>\
         <th scope=\"col\">Azioni</th></tr></thead><tbody>",
    );
    let live = list.first().map(|p| p.digest.clone());
    for (i, p) in list.iter().enumerate() {
        let action = if i == 0 {
            "in uso".to_string()
        } else if may_roll_back && live.as_deref() != Some(p.digest.as_str()) {
            format!(
                "<form method=\"post\" action=\"/console/modelli/ripristina/{}\">{}\
                 <label for=\"nota-{i}\">Nota del ripristino</label>\
                 <input type=\"text\" id=\"nota-{i}\" name=\"nota\">\
                 <button type=\"submit\">Ripristina {}</button></form>",
                segment(&p.digest),
                csrf_field(s),
                esc(&p.digest)
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            local(p.published_at, tz),
            esc(&p.published_by),
            kind_it(p.kind),
            esc(&p.note),
            esc(&p.digest)
        ));
    }
    body.push_str("</tbody></table><p><a href=\"/console/modelli\">Torna ai modelli</a></p>");
    page("Versioni pubblicate dei modelli", Some(s), &body)
}

async fn history(State(c): State<Console>, Visitor { session, who, .. }: Visitor) -> Response {
    if !who.may(Action::Templates) && !who.may(Action::TemplatesApprove) {
        return super::not_for_role(&session);
    }
    match c.app.template_history().await {
        Ok(list) => {
            let tz = c.app.settings().calendar.timezone;
            let may = who.may(Action::TemplatesRollback);
            Html(history_page(&session, &list, may, tz)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn rollback(
    State(c): State<Console>,
    Visitor { session, who, .. }: Visitor,
    Path(digest): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match checked(
        &c,
        &who,
        &session,
        &body,
        Action::TemplatesRollback,
        &digest,
    )
    .await
    {
        Ok(f) => f,
        Err(r) => return r,
    };
    let note = fields.get("nota").cloned().unwrap_or_default();
    match c.app.rollback_templates(&who, &digest, &note).await {
        Ok(_) => Redirect::to("/console/modelli/storia").into_response(),
        Err(e) => refused(&e, &session),
    }
}
