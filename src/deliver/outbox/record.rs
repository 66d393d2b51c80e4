//! Recording a batch's outcomes: one transaction, each change guarded by the batch's claim, the
//! sent rows several to a statement.

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Connection};

use super::*;
use crate::deliver::hold;

/// Records the outcomes of a claimed batch in one transaction. Returns how many rows were still
/// held by `token` (a row whose lease expired and was claimed by another daemon is left alone).
pub async fn record(
    conn: &mut AnyConnection,
    token: &str,
    now: DateTime<Utc>,
    outcomes: &[(i64, Outcome)],
) -> Result<u64, sqlx::Error> {
    let now = now.timestamp();
    // The common case, sent, is one statement per chunk of rows; the rest one per row.
    let sent = sent_rows(outcomes);
    let statements: Vec<String> = sent
        .chunks(SENT_PER_STATEMENT)
        .map(|rows| sent_statement(rows.len()))
        .collect();
    // Only sent rows, one statement: no transaction to open and commit (the senders wait for
    // this commit, see the worker).
    if sent.len() == outcomes.len() && statements.len() == 1 {
        return Ok(bind_sent(&statements[0], token, now, &sent)
            .execute(&mut *conn)
            .await?
            .rows_affected());
    }
    let mut tx = conn.begin().await?;
    let mut held = 0;
    for (sql, rows) in statements.iter().zip(sent.chunks(SENT_PER_STATEMENT)) {
        held += bind_sent(sql, token, now, rows)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    for (id, outcome) in outcomes {
        held += record_one(&mut tx, token, now, *id, outcome).await?;
    }
    tx.commit().await?;
    Ok(held)
}

/// The sent rows of a batch: (id, recipient, template digest).
fn sent_rows(outcomes: &[(i64, Outcome)]) -> Vec<(i64, &str, &str)> {
    outcomes
        .iter()
        .filter_map(|(id, outcome)| match outcome {
            Outcome::Sent {
                recipient,
                template_digest,
            } => Some((*id, recipient.as_str(), template_digest.as_str())),
            _ => None,
        })
        .collect()
}

/// Records the outcome of one row that was not sent (a sent row is left to [`sent_statement`]).
/// Returns 1 if the row was still held by `token`, else 0.
async fn record_one(
    conn: &mut AnyConnection,
    token: &str,
    now: i64,
    id: i64,
    outcome: &Outcome,
) -> Result<u64, sqlx::Error> {
    let q = match outcome {
        Outcome::Sent { .. } => return Ok(0),
        Outcome::Deferred {
            domain,
            reply,
            backoff,
        } => {
            let now = crate::store::timestamp(Some(now)).unwrap_or_default();
            let until = hold::hold(conn, domain, reply, now, *backoff).await?;
            let held = hold::DomainHold {
                domain: domain.clone(),
                until,
                reply: reply.clone(),
                strikes: 0,
            };
            return hold::wait(conn, token, &[id], &held, now).await;
        }
        Outcome::Retry { at, error, code } => sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $4, reason = $5, smtp_code = $6, \
                updated_at = $3, claim_token = NULL, lease_until = NULL \
             WHERE id = $1 AND claim_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .bind(at.timestamp())
        .bind(error.clone())
        .bind(code.map(i64::from)),
        Outcome::Failed { error, code } => failed(id, token, now, error, *code),
        Outcome::NoSuchRecipient {
            recipient,
            error,
            code,
        } => {
            suppress_recipient(conn, recipient, error, now).await?;
            failed(id, token, now, error, *code)
        }
        Outcome::Expired { reason } | Outcome::Skipped { reason } => {
            let state = match outcome {
                Outcome::Expired { .. } => OutboxState::Expired,
                _ => OutboxState::Skipped,
            };
            sqlx::query(
                "UPDATE outbox SET state = $5, reason = $4, updated_at = $3, \
                    claim_token = NULL, lease_until = NULL WHERE id = $1 AND claim_token = $2",
            )
            .bind(id)
            .bind(token)
            .bind(now)
            .bind(reason.clone())
            .bind(state.as_str())
        }
        Outcome::HandedBack { at } => sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $4, attempts = attempts - 1, \
                updated_at = $3, claim_token = NULL, lease_until = NULL \
             WHERE id = $1 AND claim_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .bind(at.timestamp()),
    };
    Ok(q.execute(&mut *conn).await?.rows_affected())
}

/// The statement that fails a row (a permanent failure, or no such recipient).
fn failed<'q>(
    id: i64,
    token: &'q str,
    now: i64,
    error: &str,
    code: Option<u16>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "UPDATE outbox SET state = 'failed', reason = $4, smtp_code = $5, updated_at = $3, \
            claim_token = NULL, lease_until = NULL WHERE id = $1 AND claim_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(now)
    .bind(error.to_string())
    .bind(code.map(i64::from))
}

/// Puts `recipient`, which the relay says does not exist, on the suppression list with the
/// relay's reply as the reason (in the batch's transaction).
async fn suppress_recipient(
    conn: &mut AnyConnection,
    recipient: &str,
    error: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let added = suppression::add_on(
        conn,
        recipient,
        error,
        SuppressionSource::Relay,
        crate::store::timestamp(Some(now)).unwrap_or_default(),
    )
    .await;
    match added {
        Ok(_) => Ok(()),
        Err(suppression::SuppressionError::Database(e)) => Err(e),
        // Not an address we could store (the relay took it, though): the message still fails.
        Err(e) => {
            tracing::warn!(error = %e, "recipient not suppressed");
            Ok(())
        }
    }
}

/// `UPDATE` of `n` sent rows: `$1` the claim token, `$2` the time, then (id, recipient, digest)
/// per row. VALUES columns are column1.. on both SQLite and PostgreSQL.
fn sent_statement(n: usize) -> String {
    let values = (0..n)
        .map(|i| format!("(${}, ${}, ${})", 3 + i * 3, 4 + i * 3, 5 + i * 3))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE outbox SET state = 'sent', sent_at = $2, updated_at = $2, recipient = v.column2, \
            template_digest = v.column3, reason = NULL, smtp_code = NULL, claim_token = NULL, \
            lease_until = NULL \
         FROM (VALUES {values}) AS v WHERE outbox.id = v.column1 AND outbox.claim_token = $1"
    )
}

fn bind_sent<'q>(
    sql: &'q str,
    token: &'q str,
    now: i64,
    rows: &[(i64, &'q str, &'q str)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql).bind(token).bind(now);
    for (id, recipient, digest) in rows {
        q = q.bind(*id).bind(*recipient).bind(*digest);
    }
    q
}

/// Sent rows recorded per statement (three parameters each, well under both backends' limits).
const SENT_PER_STATEMENT: usize = 200;
