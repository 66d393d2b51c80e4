//! Planning: turning "what is due now" into outbox rows, with set-based SQL.
//!
//! One `INSERT ... SELECT` per due campaign step, guarded by the unique key (campaign, user,
//! step): planning twice adds nothing. For reminders only the latest due step is planned, and
//! it supersedes the older steps still pending, so nobody gets two reminders of the same thing
//! at once; a user who already got a message of the campaign today gets no other that day.
//!
//! The planning proper is one transaction, and the rows due for one person on one local day
//! become one email (the daily digest) before any claimer sees them: written already grouped
//! when nothing was pending before the pass (the first pass of a calendar, the largest), else
//! grouped by the merge of `store::digest`. A person who already got an email today gets nothing more from the
//! calendar that day: what is due is planned the next day, when it merges with that day's rows.
//!
//! The whole pass runs on one connection, so that [`report`]'s dry run can wrap it in a
//! transaction of its own and roll it back.

use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::audience::{optout, suppression};
use crate::campaign::calendar::{latest_due_step_of, local_day};
use crate::campaign::lifecycle;
use crate::campaign::{self, Campaign};
use crate::config::Settings;
use crate::config::Step;
use crate::store::{self, digest, Backend, CampaignKind, CampaignState, Db};

pub mod report;

/// Rows planned for one campaign step in one planning pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub campaign: String,
    pub step: Step,
    pub rows: u64,
}

/// Plans everything due at `now`. `template_digest` is the live template version.
pub async fn plan_due(
    db: &Db,
    settings: &Settings,
    template_digest: &str,
    message_id_domain: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Planned>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let target = Target::new(db, settings, template_digest, message_id_domain, now);
    Ok(pass(&mut conn, &target, Write::Commit).await?.planned)
}

/// What a planning pass works with.
pub(crate) struct Target<'a> {
    pub backend: Backend,
    pub settings: &'a Settings,
    pub template_digest: &'a str,
    pub message_id_domain: &'a str,
    pub now: DateTime<Utc>,
}

impl<'a> Target<'a> {
    /// A pass on `db` at `now`; `template_digest` is the live template version.
    pub(crate) fn new(
        db: &Db,
        settings: &'a Settings,
        template_digest: &'a str,
        message_id_domain: &'a str,
        now: DateTime<Utc>,
    ) -> Self {
        Target {
            backend: db.backend(),
            settings,
            template_digest,
            message_id_domain,
            now,
        }
    }
}

/// Whether a pass is for real or a dry run inside a transaction that will be rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Commit,
    /// Everything as for real, except the folding of the counts (nothing to fold).
    DryRun,
}

/// What one pass did besides planning, for the dry run's report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pass {
    pub planned: Vec<Planned>,
    /// Rows expired because their deadline passed.
    pub expired: u64,
    /// Older steps still pending, skipped as superseded by the step planned now.
    pub superseded: u64,
    /// Lapses recorded (the first pass after the maintenance start).
    pub lapses_recorded: u64,
    /// The snapshot's freshness: reminders are held while it is stale.
    pub freshness: Option<crate::import::Freshness>,
}

/// The whole planning pass on one connection. For real (`conn` outside any transaction) its
/// statements are the planner's as they always were, and the planning proper is one
/// transaction; for a dry run `conn` is inside a transaction of the caller's, which the
/// planning's own transaction joins as a savepoint, and which the caller rolls back.
pub(crate) async fn pass(
    conn: &mut sqlx::AnyConnection,
    target: &Target<'_>,
    write: Write,
) -> Result<Pass, sqlx::Error> {
    let Target {
        backend,
        settings,
        template_digest,
        message_id_domain,
        now,
    } = *target;
    let cal = &settings.calendar;
    let mut outcome = Pass::default();
    let pass_started = std::time::Instant::now();
    campaign::sync_reminders(&mut *conn, cal, now).await?;
    outcome.expired = expire_overdue(&mut *conn, backend, now).await?;
    outcome.lapses_recorded =
        crate::campaign::phases::record_lapsed_on(&mut *conn, cal, now).await?;
    lifecycle::start_scheduled(&mut *conn, now).await?;

    // Reminders are about the procedures' state: on a stale snapshot they wait.
    let fresh = crate::import::freshness(&mut *conn, settings.import.max_age_hours, now).await?;
    if let Some(warning) = fresh.warning(now) {
        tracing::warn!("{warning}");
    }
    outcome.freshness = Some(fresh);
    let mut planned = Vec::new();
    let campaigns = campaign::list_on(&mut *conn).await?;
    let campaigns_by_name = campaigns.clone();
    // One transaction: claimers see the rows of this pass only once they are merged.
    let mut tx = conn.begin().await?;
    // One planning pass at a time across daemons: a pass decides from what is pending before
    // it whether its digests can be formed as its rows are written (below).
    store::lock_planning(&mut tx, backend).await?;
    // With no digest row pending from an earlier pass, this pass's rows are all there is to
    // merge: each is written already pointing to its lead (the campaign expiring last is
    // planned first), instead of being written and then rewritten by the merge, which at the
    // mission's size cost as much again as writing the rows it rewrote.
    let at_insert = !digest::any_pending(&mut tx).await?;
    let mut leads: Vec<Lead> = Vec::new();
    // What is due, in the order it is planned: in a pass that groups as it writes, a row's
    // followers are the rows of the campaigns after it.
    let due: Vec<(Campaign, Step)> = lead_order(campaigns)
        .into_iter()
        .filter_map(|c| {
            if c.state != CampaignState::Running || c.expires_at.is_some_and(|e| now >= e) {
                return None;
            }
            let step = match c.kind {
                CampaignKind::Reminder if fresh.stale => return None,
                CampaignKind::Reminder => latest_due_step_of(cal, c.audience, now)?.step,
                _ if c.send_at.is_none_or(|at| at <= now) => Step::Main,
                _ => return None,
            };
            Some((c, step))
        })
        .collect();
    for (i, (c, step)) in due.iter().enumerate() {
        let (c, step) = (c, *step);
        let started = std::time::Instant::now();
        let grouping = (at_insert && c.digest).then(|| Grouping {
            leads: &leads,
            later: due[i + 1..]
                .iter()
                .filter(|(d, _)| d.digest)
                .map(|(d, _)| d.audience)
                .collect(),
        });
        let StepOutcome {
            rows,
            superseded,
            whole_audience,
        } = plan_step(
            &mut tx,
            backend,
            c,
            step,
            grouping,
            template_digest,
            message_id_domain,
            now,
            cal.timezone,
        )
        .await?;
        outcome.superseded += superseded;
        if at_insert && c.digest && rows > 0 {
            leads.push(Lead {
                campaign: c.id,
                audience: c.audience,
                whole_audience,
            });
            // The next campaigns' rows look these up: PostgreSQL must know they are there
            // (rows written in this transaction are in no statistics until it analyses them,
            // and the lookup is then planned as if there were none: docs/benchmarks.md). Once
            // is enough: from then on it scales its estimates with the table's size.
            if leads.len() == 1 {
                store::analyze(&mut tx, backend, "outbox").await?;
            }
        }
        if rows > 0 {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(campaign = %c.name, step = %step, rows, seconds, "planned");
        }
        planned.push(Planned {
            campaign: c.name.clone(),
            step,
            rows,
        });
    }
    // Nothing planned, nothing to merge: the planner's every-minute ticks stay cheap.
    let total: u64 = planned.iter().map(|p| p.rows).sum();
    if total > 0 {
        if at_insert {
            // No group was pending before the pass, so none can have lost its lead in it.
            let ids: Vec<i64> = leads.iter().map(|l| l.campaign).collect();
            let alone = digest::unmark_lone_leads(&mut tx, &ids, now.timestamp()).await?;
            if alone > 0 {
                tracing::info!(
                    alone,
                    "rows written as leads that nothing followed, sent alone"
                );
            }
        } else {
            // A step just planned may have superseded a lead whose group is still pending.
            digest::repair_orphans(&mut tx, None).await?;
            // The merge and every claim after it are planned from these statistics (campaigns
            // too: without them PostgreSQL expects one running campaign to match almost
            // nothing).
            store::analyze(&mut tx, backend, "outbox, campaigns").await?;
            let (_, day_end) = local_day(cal.timezone, now);
            let merged = digest::merge(&mut tx, day_end.timestamp()).await?;
            if merged > 0 {
                tracing::info!(merged, "rows merged into daily digests");
            }
        }
        // A step that goes out only inside a digest, left alone after the merge, does not go.
        for p in planned.iter().filter(|p| p.rows > 0) {
            if let Some(c) = campaigns_by_name.iter().find(|c| c.name == p.campaign) {
                if cal.cadence.only_in_digest(c.audience.name(), p.step) {
                    digest::skip_alone(&mut tx, c.id, p.step, now.timestamp()).await?;
                }
            }
        }
        // After the merge: the claims that follow are planned from these statistics (without
        // `digest_of` in them, claiming a digest's followers would walk every follower of the
        // queue for each batch: docs/benchmarks.md).
        store::analyze(&mut tx, backend, "outbox, campaigns").await?;
    }
    tx.commit().await?;
    if total > 0 {
        let seconds = pass_started.elapsed().as_secs_f64();
        tracing::info!(rows = total, seconds, "planning pass committed");
    }
    // The report in the campaigns' own order, whatever order they were planned in.
    planned.sort_by_key(|p| campaigns_by_name.iter().position(|c| c.name == p.campaign));
    lifecycle::finish_done(&mut *conn, now).await?;
    if write == Write::Commit {
        // The counts' appended changes since the last tick, one row per key again.
        store::queue::fold(&mut *conn, backend).await?;
    }
    outcome.planned = planned;
    Ok(outcome)
}

/// `campaigns` in the order a pass that groups as it writes plans them: the campaign expiring
/// last first (never expiring before all), else as listed. A person's first row written in
/// that order is the row [`digest::merge`] would choose as the lead: the one expiring last,
/// then the oldest.
fn lead_order(mut campaigns: Vec<Campaign>) -> Vec<Campaign> {
    campaigns.sort_by_key(|c| std::cmp::Reverse(c.expires_at.map_or(i64::MAX, |t| t.timestamp())));
    campaigns
}

/// Pending rows whose deadline has passed become `expired`. Idempotent.
pub(crate) async fn expire_overdue(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    // A claim is left alone while its lease runs, on the leases' own clock.
    Ok(sqlx::query(&format!(
        "UPDATE outbox SET state = 'expired', updated_at = $1, \
            reason = 'deadline passed before it could be sent' || CASE WHEN reason IS NULL THEN '' ELSE ' (last error: ' || reason || ')' END, \
            claim_token = NULL, lease_until = NULL \
         WHERE expires_at IS NOT NULL AND expires_at <= $1 \
           AND (state = 'pending' OR (state = 'sending' AND lease_until < {}))",
        backend.lease_now()
    ))
    .bind(now.timestamp())
    .execute(conn)
    .await?
    .rows_affected())
}

#[allow(clippy::too_many_arguments)]
async fn plan_step(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    c: &Campaign,
    step: Step,
    grouping: Option<Grouping<'_>>,
    digest: &str,
    domain: &str,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<StepOutcome, sqlx::Error> {
    let step = step.to_string();
    // The step being planned is the latest due: older steps still pending are out of date.
    // On SQLite `+state` keeps the (state, ...) index out of it: without statistics SQLite
    // would walk every pending row of every campaign rather
    // than this campaign's rows by the unique (campaign_id, ...) key.
    let plus = if backend == Backend::Sqlite { "+" } else { "" };
    let superseded = sqlx::query(&format!(
        "UPDATE outbox SET state = 'skipped', reason = $3, updated_at = $4 \
         WHERE campaign_id = $1 AND step <> $2 AND {plus}state = 'pending'"
    ))
    .bind(c.id)
    .bind(&step)
    .bind(format!("superseded by the later step {step}"))
    .bind(now.timestamp())
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let (local_midnight, _) = local_day(tz, now);
    // A campaign with no rows yet (its first planning, the largest) has none of its own rows
    // to check per user: skipping that lookup makes the largest planning markedly shorter
    // (docs/benchmarks.md).
    // Concurrent planners are still kept apart by the unique key. `$10` stays referenced so
    // every statement takes the same parameters.
    let fresh = sqlx::query("SELECT 1 FROM outbox WHERE campaign_id = $1 LIMIT 1")
        .bind(c.id)
        .fetch_optional(&mut *tx)
        .await?
        .is_none();
    // One email a day: a person who already got one today from another campaign (one-off
    // campaigns aside) gets this the next day, merged with that day's rows. Checked after this
    // campaign's own rows, which answer for almost every user once a step is planned.
    let reached_today = match c.digest {
        false => "",
        true => {
            " AND NOT EXISTS (SELECT 1 FROM campaigns c2 JOIN outbox o2 ON o2.campaign_id = c2.id \
               WHERE c2.id <> $1 AND c2.digest = 1 AND o2.user_id = u.user_id \
               AND o2.state IN ('sent', 'sending') AND o2.updated_at >= $10)"
        }
    };
    // On a first planning, the people another campaign reached today are looked up only when
    // the counts say there are some.
    let no_one_reached = reached_today.is_empty()
        || (fresh && !anyone_reached_today(tx, c.id, local_midnight).await?);
    let not_planned = match fresh {
        true if no_one_reached => " AND $10 IS NOT NULL".to_string(),
        true => format!(" AND $10 IS NOT NULL{reached_today}"),
        false => format!(
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.campaign_id = $1 AND o.user_id = u.user_id \
               AND (o.step = $2 OR (o.state IN ('sent', 'sending') AND o.updated_at >= $10))){reached_today}"
        ),
    };
    // A suppressed address on record: the institutional address instead, or a row skipped as
    // `suppressed` (visible in `explain` and the counts). With an empty list, none of that
    // per-user lookup.
    let nobody_suppressed = suppression::is_empty(&mut *tx).await?;
    let (recipient, state, reason) = if nobody_suppressed {
        (
            c.audience.recipient_column().to_string(),
            "'pending'".to_string(),
            "NULL".to_string(),
        )
    } else {
        let unreachable = suppression::unreachable_sql();
        (
            suppression::recipient_sql(),
            format!("CASE WHEN {unreachable} THEN 'skipped' ELSE 'pending' END"),
            format!(
                "CASE WHEN {unreachable} THEN '{}' ELSE NULL END",
                suppression::REASON
            ),
        )
    };
    // Who opted out of the campaign's stream gets nothing more of it. Looked up per user only
    // when someone opted out of this stream (a procedure's stream never has anyone).
    let anyone_opted_out = c.unsubscribe() && optout::any_of(&mut *tx, &c.stream).await?;
    let opted_out = match anyone_opted_out {
        true => format!(" AND {}", optout::not_opted_out_sql(11)),
        false => " AND $11 IS NOT NULL".to_string(),
    };
    let own_id = "'<' || $7 || '.' || $2 || '.' || u.user_id || '@' || $8 || '>'";
    // In a pass that groups as it writes: a person's row of a campaign planned earlier in this
    // pass that leads a digest (it points to itself) is the lead this row follows (the same
    // email, the same Message-ID).
    let pending = format!("({state}) = 'pending'");
    let (lead_join, follows_none, digest_of, message_id) = match &grouping {
        Some(g) if !g.leads.is_empty() => {
            let LeadJoin {
                join,
                id,
                message_id,
            } = lead_join_sql(backend, g.leads);
            (
                join,
                format!("{id} IS NULL AND "),
                format!("CASE WHEN {pending} THEN {id} END"),
                format!(
                    "CASE WHEN {id} IS NOT NULL AND {pending} THEN {message_id} ELSE {own_id} END"
                ),
            )
        }
        // Typed: in the subquery below PostgreSQL would take a bare NULL for text.
        _ => (
            String::new(),
            String::new(),
            "CAST(NULL AS BIGINT)".to_string(),
            own_id.to_string(),
        ),
    };
    // A row that follows no one leads a digest when a campaign planned after it in the pass
    // takes the same person: it is written pointing to itself, under an id of its own
    // choosing, instead of being marked after the pass (at the mission's size that update cost
    // as much as a sixth of writing the rows: docs/benchmarks.md). The audiences say who the
    // later campaigns may take; `digest::unmark_lone_leads` sends alone, after the pass, the
    // few leads that nothing followed (suppressed, opted out, planned before).
    let later = grouping
        .as_ref()
        .map(|g| {
            g.later
                .iter()
                .map(|a| format!("({})", a.condition()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let where_ = format!(
        "{condition}{not_planned}{opted_out}",
        condition = c.audience.condition_in(9)
    );
    // A campaign with no rows has none to conflict with, and the pass holds the planning lock
    // (nobody else plans meanwhile): its first planning, the largest, is a plain insert. On
    // PostgreSQL an insert that may conflict checks the key before each row and confirms the
    // row after, a third of the insert's time (`docs/benchmarks.md`).
    let conflict = match fresh {
        true => "",
        false => "ON CONFLICT (campaign_id, user_id, step) DO NOTHING",
    };
    // One statement either way: a row that may lead is written under an id the insert chooses,
    // else under the table's own (the subquery is flattened away).
    let mut first_id = None;
    let (id_column, new_id, leads) = if later.is_empty() {
        ("", String::new(), "0".to_string())
    } else {
        let new_id = match backend {
            Backend::Postgres => "nextval('outbox_id_seq')".to_string(),
            // SQLite has no sequence. The pass holds the write lock, so nobody else writes an
            // id meanwhile, and each user has one row in the insert: the user's own rowid,
            // after every id used, is unique (a row number would hold every row back until the
            // last is computed). The ids leave gaps, of at most the users' count per insert.
            Backend::Sqlite => {
                let next = next_sqlite_id(tx).await?;
                first_id = Some(next);
                format!("{next} + u.rowid")
            }
        };
        (
            "id, ",
            format!("{new_id} AS id, "),
            format!(
                "CASE WHEN {follows_none}{pending} AND ({}) THEN 1 ELSE 0 END",
                later.join(" OR ")
            ),
        )
    };
    let id_value = if id_column.is_empty() { "" } else { "s.id, " };
    let lead_id = if id_column.is_empty() { "NULL" } else { "s.id" };
    // `WHERE 1 = 1`: SQLite reads an `ON` right after a `FROM` as a join's.
    let sql = format!(
        "INSERT INTO outbox ({id_column}campaign_id, user_id, step, recipient, template, template_digest, state, \
            attempts, next_attempt_at, expires_at, message_id, created_at, updated_at, reason, digest_of) \
         SELECT {id_value}$1, s.user_id, $2, s.recipient, $3, $4, s.state, 0, $5, $6, \
            s.message_id, $5, $5, s.reason, CASE WHEN s.leads = 1 THEN {lead_id} ELSE s.digest_of END \
         FROM (SELECT {new_id}u.user_id, {recipient} AS recipient, {state} AS state, \
                {message_id} AS message_id, {reason} AS reason, {digest_of} AS digest_of, \
                {leads} AS leads \
            FROM users u{lead_join} WHERE {where_}) s \
         WHERE 1 = 1 {conflict}"
    );
    // A campaign's first planning on SQLite, the largest write of all, is counted once at its
    // end rather than by the counts' trigger row by row (`store::queue::BulkInsert`).
    let bulk = match backend == Backend::Sqlite && fresh {
        true => store::queue::BulkInsert::begin(&mut *tx).await?,
        false => None,
    };
    let result = sqlx::query(&sql)
        .bind(c.id)
        .bind(&step)
        .bind(&c.template)
        .bind(digest)
        .bind(now.timestamp())
        .bind(c.expires_at.map(|t| t.timestamp()))
        .bind(&c.uid)
        .bind(domain)
        .bind(c.filter_province.clone())
        .bind(local_midnight.timestamp())
        .bind(c.stream.key())
        .execute(&mut *tx)
        .await?;
    if let Some(bulk) = bulk {
        // With nobody suppressed, the statement writes every row pending with no reason.
        let rows = result.rows_affected();
        let written = match nobody_suppressed {
            true => store::queue::Written::AllPending {
                campaign: c.id,
                rows,
            },
            false => store::queue::Written::Any { rows },
        };
        bulk.finish(&mut *tx, written).await?;
    }
    // Every user of the audience got a row, pending, under the id `first_id + rowid`, when
    // nothing else decided: a first planning, unfiltered, nobody suppressed, reached today or
    // opted out.
    let whole_audience = match first_id {
        Some(first_id)
            if fresh
                && no_one_reached
                && nobody_suppressed
                && !anyone_opted_out
                && c.filter_province.is_none() =>
        {
            Some(WholeAudience {
                first_id,
                uid: c.uid.clone(),
                step,
            })
        }
        _ => None,
    };
    Ok(StepOutcome {
        rows: result.rows_affected(),
        superseded,
        whole_audience,
    })
}

/// What [`plan_step`] did.
struct StepOutcome {
    rows: u64,
    /// Older steps still pending, skipped as superseded.
    superseded: u64,
    /// On SQLite, when its rows are known without reading them: see [`WholeAudience`].
    whole_audience: Option<WholeAudience>,
}

/// A campaign step planned on SQLite for every user of its audience, each row pending under the
/// id `first_id` plus the user's rowid, with its own Message-ID: a later campaign of the pass
/// computes its lead from the user's row rather than looking it up (`lead_join_sql`).
#[derive(Debug, Clone)]
pub(crate) struct WholeAudience {
    first_id: i64,
    /// The campaign's uid and the step, of its Message-IDs.
    uid: String,
    step: String,
}

/// What a row planned in a pass that groups as it writes may follow or lead.
pub(crate) struct Grouping<'a> {
    /// The campaigns planned earlier in the pass, whose rows this campaign's rows follow.
    leads: &'a [Lead],
    /// The audiences of the campaigns planned later in the pass, whose rows may follow this
    /// campaign's.
    later: Vec<crate::audience::Audience>,
}

/// The id after every id the outbox has used (SQLite's `AUTOINCREMENT` never reuses one).
async fn next_sqlite_id(tx: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), \
            COALESCE((SELECT MAX(id) FROM outbox), 0))",
    )
    .fetch_one(tx)
    .await
}

/// A campaign planned earlier in a pass that groups as it writes, whose rows later rows follow.
#[derive(Debug, Clone)]
pub(crate) struct Lead {
    campaign: i64,
    audience: crate::audience::Audience,
    /// Set when the campaign's rows are known without reading them.
    whole_audience: Option<WholeAudience>,
}

/// The join that finds, for each user, their row of a campaign planned earlier in this pass (in
/// `leads`) that a row planned now follows, and that row's id and Message-ID as expressions.
/// By the unique (campaign, user, step) key: on SQLite `+state` keeps the (state, ...) index
/// out of it, which SQLite, planning without statistics, would otherwise walk over every
/// pending row for each user (at 1.2 million users the pass did not end).
///
/// SQLite looks up one campaign per join, and only where the campaign's audience holds the user
/// (else the key is NULL and nothing is looked up): the others cannot have planned a row for
/// them (the pass holds the write lock, the users do not change under it). A user has at most
/// one row that leads (a row that follows an earlier one does not lead), so the first found, in
/// the order the campaigns were planned, is the lead. One `IN` list of the same campaigns cost
/// more: SQLite builds the list anew for each user. A campaign planned for its whole audience
/// ([`WholeAudience`]) is not looked up at all: where its audience holds the user, their row is
/// there, pending, under a known id and Message-ID, and leads unless an earlier one does (the
/// lookups cost 2 s of the advice's 5.5 s at the mission's size, `docs/benchmarks.md`).
/// PostgreSQL hashes the leads instead, and per-user conditions would only be filters after the
/// hash.
fn lead_join_sql(backend: Backend, leads: &[Lead]) -> LeadJoin {
    let found = |alias: &str| {
        format!(
            "{alias}.user_id = u.user_id AND {alias}.created_at = $5 \
             AND {plus}{alias}.state = 'pending' AND {alias}.digest_of = {alias}.id",
            plus = if backend == Backend::Sqlite { "+" } else { "" }
        )
    };
    match backend {
        Backend::Sqlite => {
            let mut join = String::new();
            let (mut ids, mut message_ids) = (Vec::new(), Vec::new());
            for (k, l) in leads.iter().enumerate() {
                let holds = l.audience.condition();
                match &l.whole_audience {
                    // The user's row of that campaign, if the audience holds them: no read.
                    Some(w) => {
                        ids.push(format!(
                            "CASE WHEN {holds} THEN {} + u.rowid END",
                            w.first_id
                        ));
                        message_ids.push(format!(
                            "CASE WHEN {holds} THEN '<' || {} || '.' || {} || '.' || u.user_id \
                             || '@' || $8 || '>' END",
                            sql_text(&w.uid),
                            sql_text(&w.step)
                        ));
                    }
                    None => {
                        let a = format!("l{k}");
                        join.push_str(&format!(
                            " LEFT JOIN outbox {a} ON {a}.campaign_id = CASE WHEN {holds} THEN {} END AND {}",
                            l.campaign,
                            found(&a)
                        ));
                        ids.push(format!("{a}.id"));
                        message_ids.push(format!("{a}.message_id"));
                    }
                }
            }
            let first = |each: Vec<String>| match each.len() {
                1 => each.into_iter().next().unwrap_or_default(),
                _ => format!("COALESCE({})", each.join(", ")),
            };
            LeadJoin {
                join,
                id: first(ids),
                message_id: first(message_ids),
            }
        }
        Backend::Postgres => LeadJoin {
            join: format!(
                " LEFT JOIN outbox l ON l.campaign_id IN ({}) AND {}",
                leads
                    .iter()
                    .map(|l| l.campaign.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                found("l")
            ),
            id: "l.id".to_string(),
            message_id: "l.message_id".to_string(),
        },
    }
}

/// `text` as an SQL string literal.
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The lead lookup of a row planned in a pass that groups as it writes.
struct LeadJoin {
    /// The `LEFT JOIN`s, after `FROM users u`.
    join: String,
    /// The lead's id, NULL when the row follows no one.
    id: String,
    /// The lead's Message-ID, NULL when the row follows no one.
    message_id: String,
}

/// Whether a digest campaign other than `campaign` has a message sent or on the wire since
/// `local_midnight`, from the outbox's counts (a few rows), so that a first planning skips the
/// per-user "reached today" lookup when nobody was reached.
async fn anyone_reached_today(
    tx: &mut sqlx::AnyConnection,
    campaign: i64,
    local_midnight: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM outbox_counts k JOIN campaigns c2 ON c2.id = k.campaign_id \
         WHERE c2.id <> $1 AND c2.digest = 1 \
           AND (k.state = 'sending' OR (k.state = 'sent' AND k.sent_hour >= $2)) \
         GROUP BY k.campaign_id, k.state, k.sent_hour HAVING SUM(k.n) > 0 LIMIT 1",
    )
    .bind(campaign)
    .bind(local_midnight.timestamp().div_euclid(3600))
    .fetch_optional(tx)
    .await?
    .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row planned after its lead finds the lead by the unique (campaign, user, step) key, never
    /// by walking the queue: SQLite plans without statistics.
    #[tokio::test]
    async fn the_lead_lookup_does_not_walk_the_queue_on_sqlite() {
        let join = lead_join_sql(
            Backend::Sqlite,
            &[
                Lead {
                    campaign: 1,
                    audience: crate::audience::Audience::EmailUnvalidated,
                    whole_audience: None,
                },
                Lead {
                    campaign: 2,
                    audience: crate::audience::Audience::RegistrationIncomplete,
                    whole_audience: None,
                },
            ],
        );
        let sql = format!(
            "SELECT u.user_id, {} FROM users u{} WHERE u.user_id <> $1",
            join.id, join.join
        )
        .replace("$5", "$2");
        let plan = crate::store::sqlite_query_plan(&sql, &[None; 2]).await;
        for alias in ["l0", "l1"] {
            assert!(
                plan.iter().any(|l| l.contains(&format!(
                    "SEARCH {alias} USING INDEX sqlite_autoindex_outbox_1"
                ))),
                "the lead {alias} is not found by its key: {plan:#?}"
            );
        }
        assert!(
            !plan.iter().any(|l| l.contains("outbox_due")),
            "the lead lookup walks the queue: {plan:#?}"
        );
    }
}
