//! The envelope sender: `mail.bounce_address`, and with `mail.verp` a token per message.
//!
//! VERP (variable envelope return path): the envelope sender of outbox row 1234 is
//! `bounces+1234-9f2c61d0a4b3e871@domain`, where the second part is an HMAC-SHA256 of the row id
//! under a secret of this installation (the `secrets` table, made by the migration, never
//! printed). A returned mail is addressed to that sender, so it names its message even when it
//! quotes nothing of it; the check keeps anyone who writes to `bounces+1235-...` from naming a
//! message they never got, and the token carries no personal data.

use hmac::{Hmac, Mac};
use lettre::Address;
use sha2::Sha256;

/// Hex digits of the HMAC kept in a token: 64 bits.
const MAC_HEX: usize = 16;

/// The installation's VERP key.
#[derive(Clone)]
pub struct VerpKey(Vec<u8>);

impl std::fmt::Debug for VerpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpKey(***)")
    }
}

impl VerpKey {
    /// Reads the key the migration stored.
    pub async fn load<'c, E>(conn: E) -> Result<VerpKey, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = 'verp'")
            .fetch_one(conn)
            .await?;
        Ok(VerpKey(value.into_bytes()))
    }

    /// A key of the caller's, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(key: &[u8]) -> VerpKey {
        VerpKey(key.to_vec())
    }

    fn mac(&self, outbox_id: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(outbox_id.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(MAC_HEX);
        for b in digest.iter().take(MAC_HEX / 2) {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }

    /// The token of outbox row `outbox_id`: `ID-MAC`.
    pub fn token(&self, outbox_id: i64) -> String {
        format!("{outbox_id}-{}", self.mac(outbox_id))
    }

    /// The outbox row a token names, if the token is one of ours.
    pub fn row_of(&self, token: &str) -> Option<i64> {
        let (id, mac) = token.split_once('-')?;
        let id: i64 = id.parse().ok()?;
        // Compared in full each time: no early exit to time.
        let expected = self.mac(id);
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.to_ascii_lowercase().bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then_some(id)
    }

    /// The envelope sender of outbox row `outbox_id`: `LOCAL+TOKEN@DOMAIN` of `bounce`.
    pub fn sender(&self, bounce: &Address, outbox_id: i64) -> Address {
        let local = format!("{}+{}", bounce.user(), self.token(outbox_id));
        Address::new(local, bounce.domain()).expect("a token keeps a valid local part valid")
    }

    /// The outbox row named by `address` when it is a VERP address of `bounce`
    /// (`LOCAL+TOKEN@DOMAIN`, any case).
    pub fn row_of_address(&self, bounce: &Address, address: &str) -> Option<i64> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(bounce.domain()) {
            return None;
        }
        let (base, token) = local.rsplit_once('+')?;
        if !base.eq_ignore_ascii_case(bounce.user()) {
            return None;
        }
        self.row_of(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_row_and_no_other() {
        let key = VerpKey(b"secret".to_vec());
        let bounce: Address = "bounces@istruzione.it".parse().unwrap();
        let sender = key.sender(&bounce, 1234);
        let text = sender.to_string();
        assert!(text.starts_with("bounces+1234-"), "{text}");
        assert_eq!(key.row_of_address(&bounce, &text), Some(1234));
        assert_eq!(
            key.row_of_address(&bounce, &text.to_ascii_uppercase()),
            Some(1234)
        );
        // Another row's id with this MAC, another key, another domain: not ours.
        let forged = text.replace("1234-", "1235-");
        assert_eq!(key.row_of_address(&bounce, &forged), None);
        assert_eq!(
            VerpKey(b"other".to_vec()).row_of_address(&bounce, &text),
            None
        );
        let elsewhere = text.replace("istruzione.it", "example.org");
        assert_eq!(key.row_of_address(&bounce, &elsewhere), None);
        assert_eq!(key.row_of_address(&bounce, "bounces@istruzione.it"), None);
    }
}
