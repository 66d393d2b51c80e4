//! The user as a message shows them: the one column list and the one decoding, shared by the
//! claim, the previews and the editors' samples.

use sqlx::any::AnyRow;
use sqlx::Row;

/// The columns of `users u` that [`UserContact::from_row`] reads, by name. A query that renders
/// a user selects these, so a new column a template can show is added here once.
pub const CONTACT_COLUMNS: &str = "u.user_id, u.email, u.first_name, u.last_name, \
                                   u.institutional_email, u.pending_email, u.province";

/// One user of the snapshot, as far as an email is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserContact {
    pub user_id: String,
    /// The address on record (a message may go elsewhere: see the claim's recipient).
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub institutional_email: Option<String>,
    /// A changed private address awaiting validation.
    pub pending_email: Option<String>,
    pub province: Option<String>,
}

impl UserContact {
    /// Decodes the [`CONTACT_COLUMNS`] of a row, by name (other columns are ignored).
    pub fn from_row(r: &AnyRow) -> Result<UserContact, sqlx::Error> {
        Ok(UserContact {
            user_id: r.try_get("user_id")?,
            email: r.try_get("email")?,
            first_name: r.try_get("first_name")?,
            last_name: r.try_get("last_name")?,
            institutional_email: r.try_get("institutional_email")?,
            pending_email: r.try_get("pending_email")?,
            province: r.try_get("province")?,
        })
    }
}

/// The user id of the user whose user id is `wanted` or whose fiscal code is `wanted`
/// (upper-cased: fiscal codes are stored so), if any.
pub(crate) async fn id_by_id_or_fiscal_code(
    conn: &mut sqlx::AnyConnection,
    wanted: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM users WHERE user_id = $1 OR fiscal_code = $2 ORDER BY user_id LIMIT 1",
    )
    .bind(wanted)
    .bind(wanted.to_ascii_uppercase())
    .fetch_optional(conn)
    .await
}
