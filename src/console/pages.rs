//! The console's pages as HTML text: Italian, `<html lang="it">`, a viewport for phones, one
//! style sheet of our own and nothing else loaded; every text from the database escaped.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::app::{Action, ApprovalPreview, CampaignView, SignedIn};
use crate::campaign::approval::Decision;
use crate::store::audit::Entry;

/// `text` safe inside an element or a quoted attribute.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// What a path segment escapes: everything but the unreserved characters of RFC 3986.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `name` as one segment of an address.
pub(crate) fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// `at` in Europe/Rome (the calendar's zone), for people.
pub(crate) fn local(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%d/%m/%Y %H:%M").to_string()
}

/// `at` in Europe/Rome as "10:16 del 23/11/2026", for a sentence.
pub(crate) fn local_time(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .format("%H:%M del %d/%m/%Y")
        .to_string()
}

/// A whole page: `title`, the signed-in bar when there is a session, then `body`.
pub(crate) fn page(title: &str, session: Option<&SignedIn>, body: &str) -> String {
    let bar = match session {
        Some(s) => format!(
            "<header><nav>{}</nav>\
             <div>{} ({}) <form class=\"inline\" method=\"post\" action=\"/esci\">{}\
             <button type=\"submit\">Esci</button></form></div></header>",
            nav(s),
            esc(&s.account.name),
            role_it(s.account.role.as_str()),
            csrf_field(s)
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} - avvisi</title><link rel=\"stylesheet\" href=\"/console.css\"></head>\
         <body>{bar}<main><h1>{}</h1>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    )
}

/// The links of the pages the signed-in role may use; none while the password someone else set
/// is still to be changed.
fn nav(s: &SignedIn) -> String {
    if s.account.must_change_password {
        return String::new();
    }
    let who = s.actor(None);
    let links = [
        ("/console", "Campagne", true),
        (
            "/console/nuova",
            "Nuova campagna",
            who.may(Action::CampaignCreate),
        ),
        ("/console/coda", "Coda", true),
        ("/console/soppressioni", "Soppressioni", true),
        (
            "/console/modelli",
            "Modelli",
            who.may(Action::Templates) || who.may(Action::TemplatesApprove),
        ),
        ("/console/account", "Account", who.may(Action::UsersAdd)),
        ("/console/registro", "Registro", who.may(Action::AuditRead)),
        ("/console/password", "Password", true),
    ];
    links
        .iter()
        .filter(|(_, _, shown)| *shown)
        .map(|(href, label, _)| format!("<a href=\"{href}\">{label}</a>"))
        .collect()
}

pub(crate) fn csrf_field(s: &SignedIn) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// The role's name in Italian.
pub(crate) fn role_it(role: &str) -> &'static str {
    match role {
        "viewer" => "lettore",
        "operator" => "operatore",
        "approver" => "approvatore",
        "editor" => "redattore",
        "admin" => "amministratore",
        _ => "ruolo sconosciuto",
    }
}

fn state_it(state: &str) -> &'static str {
    match state {
        "draft" => "bozza",
        "scheduled" => "programmata",
        "running" => "in corso",
        "paused" => "in pausa",
        "cancelled" => "annullata",
        "finished" => "conclusa",
        _ => "stato sconosciuto",
    }
}

/// The login form carrying `token` (see [`super::LOGIN_COOKIE`]), with `error` above it when
/// the last try failed.
pub(crate) fn login(token: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/accedi\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"nome\">Nome utente</label>\
         <input type=\"text\" id=\"nome\" name=\"nome\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
         <p><button type=\"submit\">Accedi</button></p></form>",
        esc(token)
    );
    page("Accesso alla console", None, &body)
}

/// The change of one's own password; for an account whose password someone else set, the
/// only page open until it is done.
pub(crate) fn own_password(s: &SignedIn, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let why = if s.account.must_change_password {
        "<p class=\"notice\" role=\"status\">La password di questo account è stata scelta da \
         un'altra persona: prima di continuare, sceglierne una propria.</p>"
    } else {
        ""
    };
    let body = format!(
        "{why}{error}<form method=\"post\" action=\"/console/password\">{}\
         <label for=\"attuale\">Password attuale</label>\
         <input type=\"password\" id=\"attuale\" name=\"attuale\" autocomplete=\"current-password\" required>\
         <label for=\"nuova\">Nuova password (almeno {} caratteri, diversa dall'attuale)</label>\
         <input type=\"password\" id=\"nuova\" name=\"nuova\" autocomplete=\"new-password\" required>\
         <label for=\"ripeti\">Ripeti la nuova password</label>\
         <input type=\"password\" id=\"ripeti\" name=\"ripeti\" autocomplete=\"new-password\" required>\
         <p><button type=\"submit\">Cambia la password</button></p></form>",
        csrf_field(s),
        crate::app::MIN_PASSWORD_CHARS
    );
    page("Cambio della password", Some(s), &body)
}

/// A message page (a refusal, an error).
pub(crate) fn message(title: &str, session: Option<&SignedIn>, text: &str) -> String {
    let back = if session.is_some() {
        "<p><a href=\"/console\">Torna alle campagne</a></p>"
    } else {
        "<p><a href=\"/accedi\">Torna all'accesso</a></p>"
    };
    page(
        title,
        session,
        &format!("<p class=\"error\" role=\"alert\">{}</p>{back}", esc(text)),
    )
}

/// A page telling that an action was done, with the way back to the campaign.
pub(crate) fn done(title: &str, session: &SignedIn, campaign: &str, text: &str) -> String {
    page(
        title,
        Some(session),
        &format!(
            "<p class=\"notice\" role=\"status\">{}</p>\
             <p><a href=\"/console/campagne/{}\">Torna alla campagna</a></p>",
            esc(text),
            segment(campaign)
        ),
    )
}

/// One button of a campaign: a form posting to its action with the session's token.
fn button(s: &SignedIn, campaign: &str, action: &str, label: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/console/campagne/{}/{action}\">{}\
         <button type=\"submit\" name=\"azione\" value=\"{action}\">{label}</button></form>",
        segment(campaign),
        csrf_field(s)
    )
}

/// What `c` allows the signed-in account now: its state's legal actions that its role may do.
pub(crate) fn buttons(s: &SignedIn, c: &CampaignView, moves: &[super::Move]) -> String {
    moves
        .iter()
        .map(|m| button(s, &c.name, m.path(), m.label()))
        .collect()
}

fn progress(c: &CampaignView) -> String {
    let done = c.messages.sent + c.messages.skipped + c.messages.failed + c.messages.expired;
    format!(
        "{done} su {} messaggi ({} inviati)",
        c.planned, c.messages.sent
    )
}

fn link(c: &CampaignView) -> String {
    format!(
        "<a href=\"/console/campagne/{}\">{}</a>",
        segment(&c.name),
        esc(&c.name)
    )
}

/// The campaigns, each with its buttons.
pub(crate) fn campaigns(s: &SignedIn, rows: &[(CampaignView, Vec<super::Move>)]) -> String {
    let mut body = String::from(
        "<table><thead><tr><th scope=\"col\">Campagna</th><th scope=\"col\">Stato</th>\
         <th scope=\"col\">Destinatari</th><th scope=\"col\">Avanzamento</th>\
         <th scope=\"col\">Azioni</th></tr></thead><tbody>",
    );
    for (c, moves) in rows {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            link(c),
            state_it(&c.state),
            c.setup.audience_size,
            progress(c),
            buttons(s, c, moves)
        ));
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body = "<p>Nessuna campagna.</p>".to_string();
    }
    page("Campagne", Some(s), &body)
}

/// One campaign: its facts, its buttons, and for an approver what they would approve.
pub(crate) fn campaign(
    s: &SignedIn,
    c: &CampaignView,
    moves: &[super::Move],
    preview: Option<&ApprovalPreview>,
    tz: Tz,
) -> String {
    let mut body = format!(
        "<dl><dt>Stato</dt><dd>{}</dd><dt>Pubblico</dt><dd>{} ({})</dd>\
         <dt>Province</dt><dd>{}</dd>\
         <dt>Destinatari ora</dt><dd>{}</dd><dt>Avanzamento</dt><dd>{}</dd>\
         <dt>Modello</dt><dd>{}</dd><dt>Creata da</dt><dd>{}</dd>",
        state_it(&c.state),
        esc(&c.setup.audience),
        esc(c.audience_description),
        c.setup
            .filter_province
            .as_deref()
            .map(|p| match p.starts_with('#') {
                true => "solo gli utenti dell'elenco caricato".to_string(),
                false => esc(&p.replace(',', ", ")),
            })
            .unwrap_or_else(|| "tutte".to_string()),
        c.setup.audience_size,
        progress(c),
        esc(&c.setup.template),
        esc(c.created_by.as_deref().unwrap_or("-")),
    );
    if let Some(a) = &c.approval {
        let when = a.decided_at.map(|t| local(t, tz)).unwrap_or_default();
        body.push_str(&format!(
            "<dt>Ultima decisione</dt><dd>{} da {} il {when}{}{}</dd>",
            match a.decision {
                Decision::Approved => "approvata",
                Decision::Rejected => "rifiutata",
            },
            esc(&a.decided_by),
            a.reason
                .as_deref()
                .map(|r| format!(": {}", esc(r)))
                .unwrap_or_default(),
            if a.stale_at.is_some() {
                " (non più valida: il pubblico è cambiato)"
            } else {
                ""
            }
        ));
    }
    body.push_str("</dl>");
    body.push_str(&format!("<p>{}</p>", buttons(s, c, moves)));
    body.push_str(&funnel(&c.funnel));
    if s.actor(None).may(Action::CampaignPreview) {
        body.push_str(&format!(
            "<h2>Anteprima per un destinatario</h2>\
             <form method=\"post\" action=\"/console/campagne/{}/anteprima\">{}\
             <label for=\"destinatario\">Codice utente o codice fiscale</label>\
             <input type=\"text\" id=\"destinatario\" name=\"destinatario\" required>\
             <p><button type=\"submit\">Mostra il messaggio</button></p></form>",
            segment(&c.name),
            csrf_field(s)
        ));
    }
    if s.actor(None).may(Action::CampaignTest) {
        // No address field: the test goes to the account's own address, set by an administrator.
        body.push_str(&format!(
            "<h2>Messaggio di prova</h2>\
             <p>Il messaggio, preparato per il primo destinatario reale e marcato [PROVA], \
             arriva solo all'indirizzo del tuo account.</p>\
             <form method=\"post\" action=\"/console/campagne/{}/prova\">{}\
             <p><button type=\"submit\">Invia una prova al mio indirizzo</button></p></form>",
            segment(&c.name),
            csrf_field(s)
        ));
    }
    if let Some(p) = preview {
        body.push_str(&format!(
            "<h2>Da approvare</h2><p class=\"notice\">Destinatari: <strong id=\"dimensione\">{}</strong>. \
             Impronta SHA-256 del pubblico: {}</p>\
             <form method=\"post\" action=\"/console/campagne/{name}/approva\">{csrf}\
             <input type=\"hidden\" name=\"impronta\" value=\"{sha}\">\
             <button type=\"submit\">Approva per {} destinatari</button></form>\
             <form method=\"post\" action=\"/console/campagne/{name}/rifiuta\">{csrf}\
             <label for=\"motivo\">Motivo del rifiuto</label>\
             <input type=\"text\" id=\"motivo\" name=\"motivo\" required>\
             <p><button type=\"submit\">Rifiuta</button></p></form><h2>Esempi di messaggi</h2>",
            p.audience_size,
            esc(&p.audience_sha256),
            p.audience_size,
            name = segment(&c.name),
            csrf = csrf_field(s),
            sha = esc(&p.audience_sha256),
        ));
        for m in &p.samples {
            body.push_str(&format!(
                "<h3>{} {} ({})</h3><p><strong>Oggetto:</strong> {}</p><pre>{}</pre>",
                esc(&m.first_name),
                esc(&m.last_name),
                esc(&m.user_id),
                esc(&m.subject),
                esc(&m.text)
            ));
        }
    }
    page(&format!("Campagna {}", c.name), Some(s), &body)
}

/// The audience's funnel: how many users each clause of the rule keeps, one row per step.
fn funnel(steps: &[crate::campaign::funnel::FunnelStep]) -> String {
    if steps.is_empty() {
        return String::new();
    }
    let rows: String = steps
        .iter()
        .map(|f| {
            format!(
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                esc(&f.step_it),
                f.users
            )
        })
        .collect();
    format!(
        "<h2 id=\"imbuto-titolo\">Il pubblico, regola per regola</h2>\
         <p>Quanti utenti restano dopo ciascuna condizione, nell'ordine, calcolati ora.</p>\
         <table id=\"imbuto\" aria-labelledby=\"imbuto-titolo\"><thead><tr>\
         <th scope=\"col\">Condizione</th><th scope=\"col\">Utenti</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

/// The audit log, newest first, times in Europe/Rome.
pub(crate) fn audit(s: &SignedIn, entries: &[Entry], tz: Tz) -> String {
    let mut body = String::from(
        "<table><thead><tr><th scope=\"col\">Quando</th><th scope=\"col\">Chi</th>\
         <th scope=\"col\">Da</th><th scope=\"col\">Azione</th><th scope=\"col\">Oggetto</th>\
         <th scope=\"col\">Esito</th></tr></thead><tbody>",
    );
    for e in entries.iter().rev() {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            local(e.at, tz),
            esc(&e.actor_name),
            esc(&e.role),
            esc(&e.source),
            esc(&e.action),
            esc(&e.object),
            esc(&e.outcome)
        ));
    }
    body.push_str("</tbody></table>");
    page("Registro delle azioni", Some(s), &body)
}

/// An `<option>` of a `<select>`, chosen when it is `current`.
fn option(value: &str, label: &str, current: &str) -> String {
    format!(
        "<option value=\"{}\"{}>{}</option>",
        esc(value),
        if value == current { " selected" } else { "" },
        esc(label)
    )
}

/// The form creating a one-off campaign (a draft: launched later, after an approval).
pub(crate) fn new_campaign(
    s: &SignedIn,
    form: &super::NewCampaignForm,
    templates: &[String],
    error: Option<&str>,
) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let audiences: String = crate::audience::Audience::ALL
        .iter()
        .map(|a| {
            option(
                a.name(),
                &format!("{} ({})", a.name(), a.description()),
                &form.audience,
            )
        })
        .collect();
    let templates: String = templates
        .iter()
        .map(|t| option(t, t, &form.template))
        .collect();
    let body = format!(
        "{error}<p>La campagna nasce in bozza: nulla viene inviato finché non è approvata da \
         un'altra persona e avviata. La sua pagina mostra quanti destinatari ha.</p>\
         <form method=\"post\" action=\"/console/nuova\" enctype=\"multipart/form-data\">{csrf}\
         <label for=\"nome\">Nome (lettere minuscole, cifre, - e _)</label>\
         <input type=\"text\" id=\"nome\" name=\"nome\" value=\"{name}\" required>\
         <label for=\"pubblico\">Pubblico</label>\
         <select id=\"pubblico\" name=\"pubblico\" required>{audiences}</select>\
         <label for=\"modello\">Modello</label>\
         <select id=\"modello\" name=\"modello\" required>{templates}</select>\
         <label for=\"province\">Province (sigle separate da virgole, es. RM, BO; vuoto: tutte)</label>\
         <input type=\"text\" id=\"province\" name=\"province\" value=\"{provinces}\">\
         <label for=\"elenco\">Oppure solo gli utenti di un elenco (file di testo o CSV: un codice utente o codice fiscale per riga)</label>\
         <input type=\"file\" id=\"elenco\" name=\"elenco\" accept=\".csv,.txt,text/csv,text/plain\">\
         <label for=\"invio\">Invio non prima di (ora di Roma; vuoto: all'avvio)</label>\
         <input type=\"datetime-local\" id=\"invio\" name=\"invio\" value=\"{send_at}\">\
         <p><button type=\"submit\">Crea la bozza</button></p></form>",
        csrf = csrf_field(s),
        name = esc(&form.name),
        provinces = esc(&form.provinces),
        send_at = esc(&form.send_at),
    );
    page("Nuova campagna", Some(s), &body)
}

/// What holds sending now ([`crate::observe::holds`], the same list as `avvisi status`), in
/// Italian.
fn holds(holds: &[crate::explain::Hold]) -> String {
    let mut out = String::from("<h2>Cosa ferma l'invio</h2>");
    if holds.is_empty() {
        out.push_str("<p id=\"fermi\">Niente: l'invio procede.</p>");
    } else {
        out.push_str("<ul id=\"fermi\">");
        for h in holds {
            out.push_str(&format!(
                "<li data-fermo=\"{}\">{}</li>",
                esc(h.kind),
                esc(&h.text_it)
            ));
        }
        out.push_str("</ul>");
    }
    out
}

/// The queue: the messages of each campaign by state, the first due times, what holds sending.
pub(crate) fn queue(
    s: &SignedIn,
    status: &crate::app::Status,
    campaigns: &[CampaignView],
    tz: Tz,
) -> String {
    let mut body = holds(&status.holds);
    body.push_str(
        "<h2>Messaggi per campagna</h2><table><thead><tr><th scope=\"col\">Campagna</th>\
         <th scope=\"col\">Stato</th><th scope=\"col\">In attesa</th>\
         <th scope=\"col\">In invio</th><th scope=\"col\">Falliti</th>\
         <th scope=\"col\">Inviati</th></tr></thead><tbody>",
    );
    for c in campaigns.iter().filter(|c| c.planned > 0) {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            link(c),
            state_it(&c.state),
            c.messages.pending,
            c.messages.sending,
            c.messages.failed,
            c.messages.sent
        ));
    }
    body.push_str("</tbody></table><h2>Prossimi invii</h2>");
    if status.next_attempts.is_empty() {
        body.push_str("<p>Nessun messaggio in attesa.</p>");
    } else {
        body.push_str("<ul>");
        for n in &status.next_attempts {
            body.push_str(&format!(
                "<li>{}: {}{} messaggi</li>",
                n.at.map(|t| local(t, tz))
                    .unwrap_or_else(|| "subito".into()),
                if n.at_least { "almeno " } else { "" },
                n.messages
            ));
        }
        body.push_str("</ul>");
    }
    if !status.errors.is_empty() {
        body.push_str(
            "<h2>Errori per risposta del server</h2><table><thead><tr>\
             <th scope=\"col\">Codice</th><th scope=\"col\">Falliti</th>\
             <th scope=\"col\">In riprova</th><th scope=\"col\">Esempio</th></tr></thead><tbody>",
        );
        for e in &status.errors {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                e.failed,
                e.retrying,
                esc(&e.example)
            ));
        }
        body.push_str("</tbody></table>");
    }
    page("Coda dei messaggi", Some(s), &body)
}

/// The suppression list, with the forms to add and remove for those who may.
pub(crate) fn suppressions(
    s: &SignedIn,
    list: &[crate::audience::suppression::Suppression],
    editable: bool,
    tz: Tz,
) -> String {
    let mut body = String::new();
    if editable {
        body.push_str(&format!(
            "<h2>Aggiungi un indirizzo</h2><form method=\"post\" action=\"/console/soppressioni/aggiungi\">{}\
             <label for=\"indirizzo\">Indirizzo email</label>\
             <input type=\"email\" id=\"indirizzo\" name=\"indirizzo\" required>\
             <label for=\"motivo\">Motivo</label>\
             <input type=\"text\" id=\"motivo\" name=\"motivo\" required>\
             <p><button type=\"submit\">Aggiungi</button></p></form>",
            csrf_field(s)
        ));
    }
    body.push_str(&format!("<h2>Indirizzi soppressi ({})</h2>", list.len()));
    if list.is_empty() {
        body.push_str("<p>Nessun indirizzo.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Indirizzo</th><th scope=\"col\">Motivo</th>\
             <th scope=\"col\">Origine</th><th scope=\"col\">Dal</th><th scope=\"col\">Azioni</th>\
             </tr></thead><tbody>",
        );
        for e in list {
            let remove = if editable {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/soppressioni/rimuovi\">{}\
                     <input type=\"hidden\" name=\"indirizzo\" value=\"{}\">\
                     <button type=\"submit\" aria-label=\"Rimuovi {}\">Rimuovi</button></form>",
                    csrf_field(s),
                    esc(&e.address),
                    esc(&e.address)
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{remove}</td></tr>",
                esc(&e.address),
                esc(&e.reason),
                esc(e.source.as_str()),
                e.created_at.map(|t| local(t, tz)).unwrap_or_default(),
            ));
        }
        body.push_str("</tbody></table>");
    }
    page("Elenco di soppressione", Some(s), &body)
}

/// The accounts, with the forms to add one, disable one (not one's own) and change a role.
pub(crate) fn accounts(
    s: &SignedIn,
    list: &[crate::store::accounts::Account],
    notice: Option<(&str, &str)>,
    tz: Tz,
) -> String {
    use crate::store::accounts::Role;
    let roles = |current: &str| -> String {
        Role::ALL
            .iter()
            .map(|r| option(r.as_str(), role_it(r.as_str()), current))
            .collect()
    };
    let mut body = notice
        .map(|(class, text)| format!("<p class=\"{class}\" role=\"status\">{}</p>", esc(text)))
        .unwrap_or_default();
    body.push_str(&format!(
        "<h2>Nuovo account</h2><form method=\"post\" action=\"/console/account/aggiungi\">{}\
         <label for=\"nome\">Nome utente</label>\
         <input type=\"text\" id=\"nome\" name=\"nome\" autocomplete=\"off\" required>\
         <label for=\"ruolo\">Ruolo</label><select id=\"ruolo\" name=\"ruolo\">{}</select>\
         <label for=\"password\">Password (almeno {} caratteri; vuota: ne viene creata una, mostrata una volta sola)</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\">\
         <label for=\"indirizzo\">Indirizzo email (dove arrivano i suoi messaggi di prova; facoltativo)</label>\
         <input type=\"email\" id=\"indirizzo\" name=\"indirizzo\" autocomplete=\"off\">\
         <p><button type=\"submit\">Crea l'account</button></p></form>",
        csrf_field(s),
        roles("viewer"),
        crate::app::MIN_PASSWORD_CHARS
    ));
    body.push_str(
        "<h2>Account</h2><table><thead><tr><th scope=\"col\">Nome</th><th scope=\"col\">Ruolo</th>\
         <th scope=\"col\">Indirizzo</th><th scope=\"col\">Stato</th><th scope=\"col\">Creato</th><th scope=\"col\">Azioni</th>\
         </tr></thead><tbody>",
    );
    for (i, a) in list.iter().enumerate() {
        let own = a.name == s.account.name;
        let mut actions = String::new();
        if !a.disabled {
            actions.push_str(&format!(
                "<form class=\"inline\" method=\"post\" action=\"/console/account/{seg}/ruolo\">{csrf}\
                 <label for=\"ruolo-{i}\">Ruolo di {name}</label>\
                 <select id=\"ruolo-{i}\" name=\"ruolo\">{roles}</select>\
                 <button type=\"submit\">Cambia ruolo</button></form>",
                seg = segment(&a.name),
                csrf = csrf_field(s),
                name = esc(&a.name),
                roles = roles(a.role.as_str()),
            ));
            actions.push_str(&format!(
                "<form class=\"inline\" method=\"post\" action=\"/console/account/{seg}/indirizzo\">{csrf}\
                 <label for=\"indirizzo-{i}\">Indirizzo di {name}</label>\
                 <input type=\"email\" id=\"indirizzo-{i}\" name=\"indirizzo\" value=\"{value}\" required>\
                 <button type=\"submit\">Imposta l'indirizzo</button></form>",
                seg = segment(&a.name),
                csrf = csrf_field(s),
                name = esc(&a.name),
                value = esc(a.address.as_deref().unwrap_or("")),
            ));
            if !own {
                actions.push_str(&format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/account/{}/disattiva\">{}\
                     <button type=\"submit\" aria-label=\"Disattiva {}\">Disattiva</button></form>",
                    segment(&a.name),
                    csrf_field(s),
                    esc(&a.name)
                ));
            }
        }
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{actions}</td></tr>",
            esc(&a.name),
            role_it(a.role.as_str()),
            esc(a.address.as_deref().unwrap_or("-")),
            if a.disabled { "disattivato" } else { "attivo" },
            a.created_at.map(|t| local(t, tz)).unwrap_or_default(),
        ));
    }
    body.push_str("</tbody></table>");
    page("Account della console", Some(s), &body)
}

/// The message one real recipient would receive: the HTML part shown as its source, escaped
/// (the page runs no script and embeds nothing).
pub(crate) fn recipient_preview(
    s: &SignedIn,
    campaign: &str,
    p: &crate::app::PreviewedMessage,
    tz: Tz,
) -> String {
    let body = format!(
        "<p>Il messaggio che riceverebbe {} {} ({}, {}) se fosse inviato ora ({}). \
         Nulla è stato inviato.</p>\
         <h2>Oggetto</h2><p id=\"oggetto\">{}</p>\
         <h2>Testo</h2><pre id=\"testo\">{}</pre>\
         <h2>HTML (sorgente)</h2><pre id=\"html\">{}</pre>\
         <p><a href=\"/console/campagne/{}\">Torna alla campagna</a></p>",
        esc(&p.first_name),
        esc(&p.last_name),
        esc(&p.user_id),
        esc(&p.recipient),
        local(p.at, tz),
        esc(&p.subject),
        esc(&p.text),
        esc(p.html.as_deref().unwrap_or_default()),
        segment(campaign),
    );
    page(&format!("Anteprima di {campaign}"), Some(s), &body)
}

/// A campaign created from a list some of whose entries matched no user: they are listed.
pub(crate) fn created_with_missing(
    s: &SignedIn,
    name: &str,
    audience_size: u64,
    not_found: &[String],
) -> String {
    let items: String = not_found
        .iter()
        .map(|e| format!("<li>{}</li>", esc(e)))
        .collect();
    let body = format!(
        "<p class=\"notice\" role=\"status\">Bozza creata per {audience_size} destinatari. \
         {} voci dell'elenco non corrispondono ad alcun utente e sono state lasciate fuori \
         (nessuna è stata indovinata):</p><ul id=\"non-trovati\">{items}</ul>\
         <p><a href=\"/console/campagne/{}\">Vai alla campagna {}</a></p>",
        not_found.len(),
        segment(name),
        esc(name)
    );
    page("Campagna creata", Some(s), &body)
}
