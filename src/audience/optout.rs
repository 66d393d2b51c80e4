//! Opt-outs: a user who stopped a stream gets nothing more of it.
//!
//! Only the streams that are not the user's own procedure offer a way out (the maintenance
//! notice, the general reopening notice, one-off campaigns not created `--transactional`): their
//! emails carry a one-click unsubscribe link (RFC 8058) whose token is an HMAC-SHA256 over the
//! user and the stream, keyed by `unsubscribe.secret`, so nobody can make another user's link or
//! turn one stream's link into another's.
//!
//! An opt-out applies from the next planning ([`not_opted_out_sql`]: nothing of that stream is
//! planned for the user) and at send time ([`skip_opted_out`]: a message already planned is
//! skipped when claimed, as a suppressed address is).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use sqlx::{AnyConnection, Row};

use crate::config::UnsubscribeSettings;
use crate::store::{timestamp, Db, OptOutSource, Stream, UnknownState, ALL_NOTICES};

/// The reason of a message skipped because its user opted out of its stream, as stored in the
/// outbox.
pub const REASON: &str = "opted out of this stream";

/// The base of the links when `unsubscribe.public_url` is not set: a name that cannot resolve
/// (`.invalid`, RFC 2606) and says what is missing. Only the files transport writes it; SMTP
/// delivery is refused without the setting.
pub const PLACEHOLDER_URL: &str = "https://unsubscribe-public-url-not-set.invalid";

/// Separates these MACs from any other use of the same key.
const MAC_CONTEXT: &[u8] = b"avvisi-unsubscribe-v1\n";

/// One user's opt-out of one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OptOut {
    pub user_id: String,
    pub stream: Stream,
    pub at: Option<DateTime<Utc>>,
    pub source: OptOutSource,
}

/// Why a token was refused. Says nothing of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is not one avvisi made (malformed)")]
    Malformed,
    #[error("the link is not one avvisi made (its signature does not match)")]
    Forged,
    #[error("the stream `{0}` offers no unsubscribe")]
    NotOffered(String),
}

/// Makes and checks the tokens of the links.
pub struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    /// The tokens of `unsubscribe.secret`; without one (no public URL, no listener: the
    /// placeholder links of the files transport), an empty key.
    pub fn new(settings: &UnsubscribeSettings) -> Tokens {
        let key = settings
            .secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes().to_vec())
            .unwrap_or_default();
        Tokens { key }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(MAC_CONTEXT);
        mac.update(payload);
        mac
    }

    /// The token of `user_id` and `stream`: `PAYLOAD.MAC`, both base64url, the payload being
    /// the user id and the stream's key (no personal data: user ids are the portal's opaque
    /// ones, as in the logs).
    pub fn token(&self, user_id: &str, stream: &Stream) -> String {
        let payload = format!("{user_id}\n{}", stream.key());
        let mac = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The user and stream of a token made by [`Tokens::token`] with this key; the MAC is
    /// compared in constant time.
    pub fn verify(&self, token: &str) -> Result<(String, Stream), TokenError> {
        let (payload, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        self.mac(&payload)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Forged)?;
        // Signed by us: what follows only reads back what we wrote.
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let (user_id, stream) = payload.split_once('\n').ok_or(TokenError::Malformed)?;
        let stream: Stream = stream.parse().map_err(|_| TokenError::Malformed)?;
        if stream.is_procedure() {
            return Err(TokenError::NotOffered(stream.key()));
        }
        Ok((user_id.to_string(), stream))
    }
}

/// The value of `List-Unsubscribe` for `user_id` and `stream`: the https link, and the mailto
/// when `unsubscribe.mailto` is set.
pub fn list_unsubscribe(settings: &UnsubscribeSettings, user_id: &str, stream: &Stream) -> String {
    let token = Tokens::new(settings).token(user_id, stream);
    let base = settings.public_url.as_deref().unwrap_or(PLACEHOLDER_URL);
    let mut value = format!("<{base}/u/{token}>");
    if let Some(mailto) = &settings.mailto {
        value.push_str(&format!(
            ", <mailto:{mailto}?subject=unsubscribe%20{token}>"
        ));
    }
    value
}

/// Records that `user_id` opted out of `stream`. Idempotent: returns false when the opt-out
/// was there already (the first one, its time and source, stands).
pub async fn record(
    db: &Db,
    user_id: &str,
    stream: &Stream,
    source: OptOutSource,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO optouts (user_id, stream, at, source) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, stream) DO NOTHING",
    )
    .bind(user_id)
    .bind(stream.key())
    .bind(now.timestamp())
    .bind(source.as_str())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Removes `user_id`'s opt-out of `stream`; false when there was none.
pub async fn remove(db: &Db, user_id: &str, stream: &Stream) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM optouts WHERE user_id = $1 AND stream = $2")
        .bind(user_id)
        .bind(stream.key())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Every opt-out, oldest first; `user_id`'s only when given.
pub async fn list(db: &Db, user_id: Option<&str>) -> Result<Vec<OptOut>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, stream, at, source FROM optouts \
         WHERE $1 IS NULL OR user_id = $1 ORDER BY at, user_id, stream",
    )
    .bind(user_id.map(str::to_string))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OptOut {
                user_id: r.try_get("user_id")?,
                stream: r
                    .try_get::<String, _>("stream")?
                    .parse()
                    .map_err(|e: crate::store::UnknownStream| sqlx::Error::Decode(e.into()))?,
                at: timestamp(r.try_get("at")?),
                source: r
                    .try_get::<String, _>("source")?
                    .parse()
                    .map_err(UnknownState::into_sqlx)?,
            })
        })
        .collect()
}

/// How many opt-outs there are, per stream.
pub async fn counts(db: &Db) -> Result<Vec<(Stream, u64)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT stream, COUNT(*) AS n FROM optouts GROUP BY stream ORDER BY stream")
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            let stream = r
                .try_get::<String, _>("stream")?
                .parse()
                .map_err(|e: crate::store::UnknownStream| sqlx::Error::Decode(e.into()))?;
            Ok((stream, r.try_get::<i64, _>("n")? as u64))
        })
        .collect()
}

/// SQL on `users u`: the user has not opted out of the stream whose key is parameter `$param`
/// (a stream that offers an unsubscribe), nor of every such stream.
pub(crate) fn not_opted_out_sql(param: usize) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM optouts x WHERE x.user_id = u.user_id \
           AND x.stream IN (${param}, '{ALL_NOTICES}'))"
    )
}

/// SQL on `outbox`: its user opted out of its campaign's stream, or of every stream that
/// offers an unsubscribe and the campaign's is one of them.
const OPTED_OUT: &str =
    "EXISTS (SELECT 1 FROM optouts x JOIN campaigns c ON c.id = outbox.campaign_id \
     WHERE x.user_id = outbox.user_id AND (x.stream = c.stream OR (x.stream = 'all_notices' \
       AND c.transactional IS NULL AND c.stream NOT IN ('reminders', 'reopening_procedures'))))";

/// Whether anybody opted out of `stream` (planning then skips its per-user lookup).
pub(crate) async fn any_of(conn: &mut AnyConnection, stream: &Stream) -> Result<bool, sqlx::Error> {
    let sql = format!("SELECT 1 FROM optouts WHERE stream IN ($1, '{ALL_NOTICES}') LIMIT 1");
    Ok(sqlx::query(&sql)
        .bind(stream.key())
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Whether anybody opted out of anything (the claim then skips its per-row checks).
pub(crate) async fn any(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM optouts LIMIT 1")
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// The send-time check: the rows claimed by `token` whose user opted out of their stream are
/// skipped with [`REASON`]. `which` narrows the rows (a digest's followers, or leads that carry
/// no other section: see the claim). Returns the campaign of each row skipped.
pub(crate) async fn skip_opted_out(
    conn: &mut AnyConnection,
    token: &str,
    which: &str,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    let sql = format!(
        "UPDATE outbox SET state = 'skipped', reason = $2, claim_token = NULL, lease_until = NULL, \
            updated_at = $3 \
         WHERE claim_token = $1{which} AND {OPTED_OUT} RETURNING campaign_id"
    );
    sqlx::query_scalar(&sql)
        .bind(token)
        .bind(REASON)
        .bind(now.timestamp())
        .fetch_all(&mut *conn)
        .await
}

/// The digests' leads claimed by `token` whose user opted out of the lead's stream while other
/// sections still go: the email goes without the lead's section.
pub(crate) async fn opted_out_leads(
    conn: &mut AnyConnection,
    token: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let sql =
        format!("SELECT id FROM outbox WHERE claim_token = $1 AND digest_of = id AND {OPTED_OUT}");
    sqlx::query_scalar(&sql).bind(token).fetch_all(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(secret: &str) -> UnsubscribeSettings {
        UnsubscribeSettings {
            public_url: Some("https://avvisi.example.it/disiscrizione".into()),
            secret: Some(SecretString::from(secret.to_string())),
            ..UnsubscribeSettings::default()
        }
    }

    #[test]
    fn a_token_names_its_user_and_stream_and_nothing_else_passes() {
        let tokens = Tokens::new(&settings("0123456789abcdef0123456789abcdef"));
        let t = tokens.token("U0002", &Stream::MaintenanceNotice);
        assert_eq!(
            tokens.verify(&t).unwrap(),
            ("U0002".to_string(), Stream::MaintenanceNotice)
        );
        // Another user or stream in the payload, with the MAC kept: refused.
        let (_, mac) = t.split_once('.').unwrap();
        for payload in ["U0003\nmaintenance_notice", "U0002\nreopening_general"] {
            let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(payload));
            assert_eq!(tokens.verify(&forged), Err(TokenError::Forged));
        }
        // One character of the MAC changed, the token cut, junk: refused.
        let mut altered = t.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(tokens.verify(&altered).is_err());
        assert!(tokens.verify(&t[..t.len() - 4]).is_err());
        assert_eq!(tokens.verify("nothing"), Err(TokenError::Malformed));
        // Another key's token: refused.
        let other = Tokens::new(&settings("fedcba9876543210fedcba9876543210"));
        assert_eq!(other.verify(&t), Err(TokenError::Forged));
        // A procedure's stream is never offered, even signed.
        let reminders = tokens.token("U0002", &Stream::Reminders);
        assert!(matches!(
            tokens.verify(&reminders),
            Err(TokenError::NotOffered(_))
        ));
    }

    #[test]
    fn the_header_has_the_link_and_the_mailto_when_set() {
        let mut s = settings("0123456789abcdef0123456789abcdef");
        let v = list_unsubscribe(&s, "U0002", &Stream::MaintenanceNotice);
        assert!(
            v.starts_with("<https://avvisi.example.it/disiscrizione/u/"),
            "{v}"
        );
        assert!(!v.contains("mailto"), "{v}");
        s.mailto = Some("disiscrizione@istruzione.it".parse().unwrap());
        s.public_url = None;
        let v = list_unsubscribe(&s, "U0002", &Stream::MaintenanceNotice);
        assert!(v.starts_with(&format!("<{PLACEHOLDER_URL}/u/")), "{v}");
        assert!(
            v.contains(">, <mailto:disiscrizione@istruzione.it?subject=unsubscribe%20"),
            "{v}"
        );
    }
}

#[cfg(test)]
mod sql_tests {
    use super::*;

    /// The statements name the procedure's streams by their keys: they must stay those.
    #[test]
    fn the_statements_name_the_keys_of_the_procedures_streams() {
        assert!(OPTED_OUT.contains(&format!("'{ALL_NOTICES}'")));
        for s in Stream::FIXED.iter().filter(|s| s.is_procedure()) {
            assert!(OPTED_OUT.contains(&format!("'{}'", s.key())), "{s}");
        }
    }
}
