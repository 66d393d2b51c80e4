//! What keeps due messages from going out now: the one list is [`crate::observe::holds`]
//! (the daemon's status page reads it too, below this layer).

use chrono::{DateTime, Utc};

use super::App;
use crate::explain::Hold;

impl App {
    /// Every hold at `now`.
    pub(crate) async fn holds(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Hold>> {
        crate::observe::holds::holds(&self.db, &self.settings, now).await
    }
}
