//! Crashes: the process killed with SIGKILL at random moments, again and again, in the middle of
//! a 20,000-message campaign, the daemon and `run --once` in turn, each time restarted. When the
//! campaign is over every message is settled, every user got theirs, and the only duplicates are
//! messages that were in flight at a kill: at most `delivery.concurrency` per kill, each with
//! its original's Message-ID.
//!
//! Also the helpers the other multi-process tests share (`db_faults`, `clocks`): a synthetic
//! snapshot, the binary started in the background, and the duplicates told apart by process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use avvisi::import::ImportOptions;
use rand::{Rng, SeedableRng};

use crate::helpers::{at, TestApp};
use crate::on_both_backends;
use testkit::smtp_sink::{Received, SmtpSink};

/// Users, and so messages: the first notice of one campaign each.
const USERS: usize = 20_000;
/// SIGKILLs, half to the daemon and half to `run --once`.
const KILLS: usize = 10;
/// `delivery.concurrency`: the most messages one kill may leave in flight.
const CONCURRENCY: usize = 4;
/// `delivery.lease_seconds`, the shortest allowed.
const LEASE_SECONDS: u64 = 10;
/// The calendar's instant of every process: the first notice is due.
pub(crate) const NOW: &str = "2026-11-23T10:00:00+01:00";

/// `n` enabled users registered with a private address, all in `credential_recovery_advice`:
/// one first notice each. Fiscal codes are well formed (check character included).
pub(crate) fn snapshot(n: usize) -> String {
    use avvisi::import::snapshot::fiscal_code_check_char;
    let mut csv = String::from(
        "user_id,fiscal_code,first_name,last_name,email,institutional_email,registration,enabled,\
         pending_email,code_regeneration\n",
    );
    for i in 0..n {
        let mut code = format!(
            "RSSMRA{:02}{}{:02}H501",
            50 + i % 50,
            b"ABCDEHLMPRST"[i / 50 % 12] as char,
            1 + i / 600 % 28
        );
        code.push(fiscal_code_check_char(code.as_bytes()) as char);
        csv.push_str(&format!(
            "C{i:06},{code},Nicolò,D'Angelo,utente{i}@libero.it,,completed,true,,none\n"
        ));
    }
    csv
}

/// Imports [`snapshot`]`(n)` into `app`.
pub(crate) async fn import_users(app: &TestApp, n: usize) {
    app.import_csv(&snapshot(n), ImportOptions::default())
        .await
        .expect("import the synthetic snapshot");
}

/// The settings of a process delivering to `sink`, fast to plan and to poll.
pub(crate) fn smtp_env(sink: &SmtpSink) -> Vec<(&'static str, String)> {
    let mut env = testkit::smtp::env(&sink.url());
    env.extend([
        ("AVVISI__DELIVERY__CONCURRENCY", CONCURRENCY.to_string()),
        ("AVVISI__DELIVERY__LEASE_SECONDS", LEASE_SECONDS.to_string()),
        ("AVVISI__DAEMON__PLANNER_CRON", "*/5 * * * * *".into()),
        ("AVVISI__DAEMON__POLL_SECONDS", "1".into()),
        ("AVVISI__DAEMON__RELAY_BACKOFF_MAX_SECONDS", "2".into()),
    ]);
    env
}

/// Where the processes of test `name` log: kept after the test, for a look after a failure.
pub(crate) fn log_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avvisi-{name}"));
    std::fs::create_dir_all(&dir).expect("log folder");
    dir
}

/// Outbox rows by state.
pub(crate) async fn states(app: &TestApp) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows =
        sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(app.db.pool())
            .await?;
    Ok(rows.into_iter().collect())
}

/// Waits until the outbox has rows and none is pending or claimed.
pub(crate) async fn wait_settled(app: &TestApp, timeout: Duration) -> BTreeMap<String, i64> {
    let start = Instant::now();
    loop {
        // An error is a connection the PostgreSQL fault test killed: try again.
        if let Ok(counts) = states(app).await {
            let open = ["pending", "sending"].map(|s| counts.get(s).copied().unwrap_or(0));
            if !counts.is_empty() && open == [0, 0] {
                return counts;
            }
            assert!(
                start.elapsed() < timeout,
                "not settled within {timeout:?}: {counts:?}"
            );
        }
        assert!(start.elapsed() < timeout * 2, "the outbox cannot be read");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The processes that delivered, in order, each with the last sink connection it may have
/// used: they never overlap, so a message's connection tells which process sent it.
#[derive(Default)]
pub(crate) struct Lives(Vec<(u64, Ending)>);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// SIGKILL, `n`-th of the test.
    Killed(usize),
    /// It stopped or finished by itself.
    Ended,
}

impl Lives {
    /// Records a process that is gone, `sink`'s connections so far being the last it could use.
    pub(crate) fn ended(&mut self, sink: &SmtpSink, how: Ending) {
        self.0.push((sink.connections(), how));
    }

    /// How the process that opened sink connection `connection` ended.
    pub(crate) fn of(&self, connection: u64) -> Ending {
        self.0
            .iter()
            .find(|(last, _)| connection <= *last)
            .map_or(Ending::Ended, |(_, how)| *how)
    }
}

/// A message the relay received: its Message-ID, itself, and how the process that sent it ended.
pub(crate) type Sent<'a> = (String, &'a Received, Ending);

/// What the relay received, each message with how the process that sent it ended, checked
/// against the kills: every extra copy of a message was sent again after the process that sent
/// the copy before it was killed (in flight at that kill), by another process, to the same
/// recipient with the same Message-ID. Returns the extra copies per kill (indexed by kill), or
/// why one cannot be explained by a kill.
pub(crate) fn duplicates_per_kill(
    received: &[Sent<'_>],
    kills: usize,
) -> Result<Vec<usize>, String> {
    let mut by_id: BTreeMap<&str, Vec<(&Received, Ending)>> = BTreeMap::new();
    for (id, r, how) in received {
        by_id.entry(id).or_default().push((r, *how));
    }
    let mut per_kill = vec![0; kills];
    for (id, copies) in by_id.iter_mut().filter(|(_, c)| c.len() > 1) {
        copies.sort_by_key(|(r, _)| r.at);
        for pair in copies.windows(2) {
            let ((before, sender), (again, resender)) = (pair[0], pair[1]);
            if again.rcpt_to != before.rcpt_to {
                return Err(format!(
                    "{id} went to {:?} and to {:?}",
                    before.rcpt_to, again.rcpt_to
                ));
            }
            match sender {
                Ending::Killed(k) if resender != sender => per_kill[k] += 1,
                _ => {
                    return Err(format!(
                        "{id} sent twice ({:?} apart), first by a process that ended \
                         {sender:?}, then by one that ended {resender:?}",
                        again.at - before.at
                    ))
                }
            }
        }
    }
    Ok(per_kill)
}

/// The calendar's time for a process started now, in a test that started at `started` with the
/// calendar at [`NOW`]: one calendar for the whole test, as one machine's clock would be. A
/// daemon's `--now` then flows with real time, and `run --once --now` stands still: were they all
/// given `NOW`, a `run --once` would find nothing due that a daemon had planned a second later.
fn calendar(started: Instant) -> String {
    let elapsed = chrono::Duration::from_std(started.elapsed()).unwrap();
    (at(NOW) + elapsed + chrono::Duration::seconds(1)).to_rfc3339()
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Daemon,
    Once,
}

/// The module's test: see its note. `AVVISI_CRASH_SEED` replays the kill moments of a run (each
/// run prints its seed).
async fn sigkill_at_random_moments_loses_nothing_and_duplicates_only_in_flight(app: TestApp) {
    let backend = app.backend;
    let started = Instant::now();
    let seed: u64 = match std::env::var("AVVISI_CRASH_SEED") {
        Ok(s) => s.parse().expect("AVVISI_CRASH_SEED: a number"),
        Err(_) => rand::thread_rng().gen(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    eprintln!("crash test on {backend:?}: seed {seed}");
    let sink = SmtpSink::start().await;
    import_users(&app, USERS).await;
    let env = smtp_env(&sink);
    let logs = log_dir(&format!("crash-{backend:?}"));
    let log = |n: usize| logs.join(format!("process-{n}.log"));

    // Kill moments: when the sink has this many messages, spread over the first 60% of the
    // campaign so that the rest outlasts the last kill's lease; a quarter of the kills hit at a
    // random moment after the start instead (starting, planning, first claims).
    let mut targets: Vec<usize> = (0..KILLS)
        .map(|_| rng.gen_range(0..USERS * 6 / 10))
        .collect();
    targets.sort_unstable();
    let mut lives = Lives::default();
    let (mut by_mode, mut spawned) = ([0usize; 2], 0);
    while by_mode[0] + by_mode[1] < KILLS {
        let k = by_mode[0] + by_mode[1];
        let mode = if k % 2 == 0 { Mode::Daemon } else { Mode::Once };
        let now = calendar(started);
        let args: &[&str] = match mode {
            Mode::Daemon => &["daemon", "--now", &now],
            Mode::Once => &["run", "--once", "--now", &now],
        };
        spawned += 1;
        assert!(
            spawned < KILLS * 3,
            "run --once kept finishing before its kill"
        );
        let child = app.spawn(args, &env, &log(spawned));
        let t = Instant::now();
        let mut ended = false;
        if rng.gen_bool(0.25) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..800))).await;
        } else {
            while sink.count() < targets[k] {
                if child.try_wait().is_some() {
                    ended = true; // run --once sent all that was due
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "{mode:?} sent nothing for 2 minutes: see {}",
                    log(spawned).display()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
        }
        if ended || child.try_wait().is_some() {
            // A daemon restarted after a kill starts at once, on SQLite too (see the lock in
            // `Db::lock_daemon`), and runs until stopped.
            assert!(
                matches!(mode, Mode::Once),
                "the daemon stopped by itself: see {}",
                log(spawned).display()
            );
            lives.ended(&sink, Ending::Ended);
            continue;
        }
        child.kill();
        lives.ended(&sink, Ending::Killed(k));
        by_mode[k % 2] += 1;
    }

    // A last daemon finishes the campaign, the killed processes' claims included once their
    // lease is over.
    spawned += 1;
    let now = calendar(started);
    let last = app.spawn(&["daemon", "--now", &now], &env, &log(spawned));
    let counts = wait_settled(&app, Duration::from_secs(300)).await;
    assert_eq!(last.terminate().await, Some(0), "a clean stop");
    lives.ended(&sink, Ending::Ended);

    // Every planned message settled, and sent (the sink accepts everything): one per user.
    assert_eq!(
        counts,
        BTreeMap::from([("sent".to_string(), USERS as i64)]),
        "every message sent"
    );
    let (rows, users, steps): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT user_id), COUNT(DISTINCT step) FROM outbox",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!((rows, users, steps), (USERS as i64, USERS as i64, 1));
    // None lost: every message reached the sink, with the Message-ID the outbox has for it.
    let received = sink.received();
    let senders: Vec<Sent> = received
        .iter()
        .map(|r| (r.header("Message-ID").unwrap(), r, lives.of(r.connection)))
        .collect();
    let mut ids: Vec<&str> = senders.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut planned: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    planned.sort_unstable();
    assert_eq!(ids, planned, "every message reached the relay");
    // Duplicates: only what was in flight at a kill.
    let duplicates = received.len() - USERS;
    let per_kill = duplicates_per_kill(&senders, KILLS);
    eprintln!(
        "crash test on {backend:?}: {USERS} messages, {KILLS} SIGKILLs ({} daemon, {} run --once), \
         {spawned} processes, {duplicates} duplicates (per kill {per_kill:?}, at most \
         {CONCURRENCY} each), {:.1}s, seed {seed}",
        by_mode[0],
        by_mode[1],
        started.elapsed().as_secs_f64()
    );
    let per_kill = per_kill.unwrap_or_else(|why| panic!("{why} (seed {seed})"));
    assert!(
        per_kill.iter().all(|n| *n <= CONCURRENCY),
        "more than {CONCURRENCY} duplicates for one kill: {per_kill:?} (seed {seed})"
    );
}

on_both_backends!(sigkill_at_random_moments_loses_nothing_and_duplicates_only_in_flight);
