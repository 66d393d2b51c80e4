//! The suppression list as operators keep it, and returned mail read into it.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

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
        let before = suppression::add(
            &self.db,
            address,
            reason,
            SuppressionSource::Operator,
            self.clock.now(),
        )
        .await
        .context("adding to the suppression list")?;
        Ok(SuppressAdded {
            address: suppression::normalise(address)?,
            already: before,
        })
    }

    /// Writes to `address` again (from the next planned message on); an error when it was not
    /// on the list.
    pub async fn unsuppress(&self, who: &Actor, address: &str) -> anyhow::Result<Unsuppressed> {
        tracing::debug!(actor = %who, "remove an address from the suppression list");
        let removed = suppression::remove(&self.db, address)
            .await
            .context("removing from the suppression list")?;
        let address = suppression::normalise(address)?;
        if !removed {
            anyhow::bail!("{address} is not on the suppression list");
        }
        Ok(Unsuppressed { address })
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
