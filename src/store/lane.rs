//! A pooled connection kept across statements (see [`Lane`]).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

use super::Db;

/// A pooled connection kept across statements, for a loop that runs many small ones.
///
/// sqlx pings a connection each time it goes back to the pool (a round trip to SQLite's thread
/// or to the PostgreSQL server): once per statement for code that runs each one on the pool.
/// A lane keeps its connection between statements and hands it back after [`Lane::TURN`], busy
/// or idle, so that the rest of the process (heartbeat, planner) still gets the single SQLite
/// connection within that time. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct Lane {
    pool: AnyPool,
    held: Arc<tokio::sync::Mutex<Held>>,
}

type Held = Option<(PoolConnection<Any>, Instant)>;

impl Lane {
    /// How long a lane keeps its connection before letting other users of the pool have a turn.
    pub(crate) const TURN: Duration = Duration::from_millis(50);

    pub fn new(db: &Db) -> Lane {
        let held = Arc::new(tokio::sync::Mutex::new(None));
        // Hands the connection back when the lane sits idle; ends with the lane.
        let weak = Arc::downgrade(&held);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Self::TURN).await;
                let Some(lane) = weak.upgrade() else { break };
                if let Ok(mut held) = lane.try_lock() {
                    release_if_due(&mut held);
                };
            }
        });
        Lane {
            pool: db.pool().clone(),
            held,
        }
    }

    /// The lane's connection, for one or more statements; other users of the lane wait.
    pub(crate) async fn conn(&self) -> Result<LaneConn<'_>, sqlx::Error> {
        let mut held = self.held.lock().await;
        release_if_due(&mut held);
        if held.is_none() {
            *held = Some((self.pool.acquire().await?, Instant::now()));
        }
        Ok(LaneConn(held))
    }
}

/// Back to the pool after a turn; whoever queued for it meanwhile goes first.
fn release_if_due(held: &mut Held) {
    if held
        .as_ref()
        .is_some_and(|(_, since)| since.elapsed() >= Lane::TURN)
    {
        *held = None;
    }
}

/// The connection of a [`Lane`], borrowed.
pub(crate) struct LaneConn<'a>(tokio::sync::MutexGuard<'a, Held>);

impl Deref for LaneConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self
            .0
            .as_ref()
            .expect("a lane holds a connection when lent")
            .0
    }
}

impl DerefMut for LaneConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self
            .0
            .as_mut()
            .expect("a lane holds a connection when lent")
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single SQLite connection, kept by a lane, reaches the rest of the process in turn:
    /// within a few turns whether the lane is busy or idle.
    #[tokio::test]
    async fn a_lane_lends_the_sqlite_connection_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lane.db", dir.path().display());
        let db = Db::open(&url, 1).await.unwrap();
        let lane = Lane::new(&db);
        let turns = Lane::TURN * 10;

        // Busy: a loop of small statements on the lane, as the recorder runs them.
        let busy = {
            let lane = lane.clone();
            tokio::spawn(async move {
                loop {
                    let mut conn = lane.conn().await.unwrap();
                    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
                }
            })
        };
        tokio::time::sleep(Lane::TURN / 2).await;
        let other = tokio::time::timeout(turns, db.pool().acquire()).await;
        assert!(
            other.is_ok(),
            "the pool waited more than {turns:?} for a busy lane"
        );
        drop(other);
        busy.abort();
        let _ = busy.await;

        // Idle: the lane holds the connection after its last statement, then gives it back.
        sqlx::query("SELECT 1")
            .execute(&mut *lane.conn().await.unwrap())
            .await
            .unwrap();
        let other = tokio::time::timeout(turns, db.pool().acquire()).await;
        assert!(
            other.is_ok(),
            "the pool waited more than {turns:?} for an idle lane"
        );
    }
}
