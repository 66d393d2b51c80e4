//! The opt-outs as operators see and undo them, and as the one-click unsubscribe records them.

use anyhow::Context;
use serde::Serialize;

use super::{Actor, App};
use crate::audience::optout::{self, OptOut, Tokens};
use crate::store::{OptOutSource, Stream};

/// An opt-out removed by an operator.
#[derive(Debug, Clone, Serialize)]
pub struct OptOutRemoved {
    pub user_id: String,
    pub stream: Stream,
}

/// What a one-click unsubscribe did.
#[derive(Debug, Clone, Serialize)]
pub struct Unsubscribed {
    pub user_id: String,
    pub stream: Stream,
    /// False when the user had opted out of the stream already (nothing changed).
    pub newly: bool,
}

impl App {
    /// Reads a Maildir folder or an mbox file of feedback-loop reports (complaints): each one
    /// linked to a message avvisi sent opts its user out of every notice, and a campaign over
    /// `complaints.pause_percent` is paused.
    pub async fn import_complaints(
        &self,
        who: &Actor,
        path: &std::path::Path,
    ) -> anyhow::Result<crate::bounce::complaint::ComplaintReport> {
        tracing::debug!(actor = %who, path = %path.display(), "import complaints");
        crate::bounce::complaint::import(&self.db, &self.settings, path, self.clock.now())
            .await
            .with_context(|| format!("importing the complaints of {}", path.display()))
    }

    /// Every opt-out, oldest first.
    pub async fn optouts(&self) -> anyhow::Result<Vec<OptOut>> {
        optout::list(&self.db, None)
            .await
            .context("reading the opt-outs")
    }

    /// Sends `stream` to `user_id` again, from the next planning on; an error when there was no
    /// such opt-out.
    pub async fn remove_optout(
        &self,
        who: &Actor,
        user_id: &str,
        stream: &str,
    ) -> anyhow::Result<OptOutRemoved> {
        tracing::debug!(actor = %who, user_id, stream, "remove an opt-out");
        let stream: Stream = stream.parse()?;
        let removed = optout::remove(&self.db, user_id, &stream)
            .await
            .context("removing the opt-out")?;
        if !removed {
            anyhow::bail!("{user_id} has not opted out of {stream} (see `avvisi optouts list`)");
        }
        Ok(OptOutRemoved {
            user_id: user_id.to_string(),
            stream,
        })
    }
}

/// Records the opt-out that the link `token` stands for (the endpoint's POST). The token is
/// checked first: a forged or altered one records nothing.
pub async fn unsubscribe(
    db: &crate::store::Db,
    settings: &crate::config::Settings,
    token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Unsubscribed, UnsubscribeError> {
    let (user_id, stream) = Tokens::new(&settings.unsubscribe).verify(token)?;
    let newly = optout::record(db, &user_id, &stream, OptOutSource::Link, now).await?;
    tracing::info!(user_id = %user_id, stream = %stream, newly, "opted out through the unsubscribe link");
    Ok(Unsubscribed {
        user_id,
        stream,
        newly,
    })
}

/// Why a one-click unsubscribe recorded nothing.
#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    #[error(transparent)]
    Token(#[from] optout::TokenError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
