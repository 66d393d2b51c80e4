//! The suppression list as operators keep it, and returned mail read into it.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::access::Action;
use super::audit::{summary, Audited};
use super::{Actor, App};
use crate::audience::suppression::{self, Suppression};
use crate::bounce::{self, BounceReport};
use crate::store::SuppressionSource;

/// An address added to the suppression list, or found there already.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressAdded {
    /// As stored: lower-cased.
    pub address: String,
    /// The entry that was there before (left as it was), if any.
    pub already: Option<Suppression>,
}

/// An address taken off the suppression list.
#[derive(Debug, Clone, Serialize)]
pub struct Unsuppressed {
    /// As stored: lower-cased.
    pub address: String,
}

impl App {
    /// Every suppressed address with its reason, source and time.
    pub async fn suppressions(&self) -> anyhow::Result<Vec<Suppression>> {
        suppression::list(&self.db)
            .await
            .context("reading the suppression list")
    }

    /// Stops writing to `address` (stored lower-cased); an address already there is left as
    /// it was.
    pub async fn suppress(
        &self,
        who: &Actor,
        address: &str,
        reason: &str,
    ) -> anyhow::Result<SuppressAdded> {
        tracing::debug!(actor = %who, "suppress an address");
        // The address is the object: it is what the operator asked about, and what the list holds.
        let object = suppression::normalise(address).unwrap_or_else(|_| address.to_string());
        self.permit(who, Action::Suppress, &object).await?;
        let mut tx = self.begin().await?;
        let mut audited = Audited::new(who, Action::Suppress, object);
        let result = async {
            let before = suppression::add_on(
                &mut tx,
                address,
                reason,
                SuppressionSource::Operator,
                self.clock.now(),
            )
            .await
            .context("adding to the suppression list")?;
            audited.before = summary(serde_json::json!({ "suppressed": before.is_some() }));
            let after = summary(serde_json::json!({ "suppressed": true }));
            let added = SuppressAdded {
                address: suppression::normalise(address)?,
                already: before,
            };
            Ok((added, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// Writes to `address` again (from the next planned message on); an error when it was not
    /// on the list.
    pub async fn unsuppress(&self, who: &Actor, address: &str) -> anyhow::Result<Unsuppressed> {
        tracing::debug!(actor = %who, "remove an address from the suppression list");
        let object = suppression::normalise(address).unwrap_or_else(|_| address.to_string());
        self.permit(who, Action::Unsuppress, &object).await?;
        let mut tx = self.begin().await?;
        let audited = Audited::new(who, Action::Unsuppress, object);
        let result = async {
            let removed = suppression::remove_on(&mut tx, address)
                .await
                .context("removing from the suppression list")?;
            let address = suppression::normalise(address)?;
            if !removed {
                anyhow::bail!("{address} is not on the suppression list");
            }
            let after = summary(serde_json::json!({ "suppressed": false }));
            Ok((Unsuppressed { address }, after))
        }
        .await;
        self.settle(tx, audited, result, false).await
    }

    /// Reads a Maildir folder or an mbox file of returned mail into the bounce records and the
    /// suppression list; `unrecognised` overrides `bounce.unrecognised_file`.
    pub async fn import_bounces(
        &self,
        who: &Actor,
        path: &Path,
        unrecognised: Option<&Path>,
    ) -> anyhow::Result<BounceReport> {
        tracing::debug!(actor = %who, path = %path.display(), "import bounces");
        self.permit(who, Action::Host, &path.display().to_string())
            .await?;
        bounce::import(
            &self.db,
            &self.settings,
            path,
            unrecognised,
            self.clock.now(),
        )
        .await
        .with_context(|| format!("importing the bounces of {}", path.display()))
    }
}
