//! A campaign's audience funnel: how many users each clause of its rule keeps, from everyone in
//! the snapshot down to those a message would reach now. Made of the very SQL fragments that
//! planning uses (the audience's clauses, the campaign's filter, the suppression list, the
//! opt-outs), so that its figures are the planner's.

use serde::Serialize;

use super::Campaign;
use crate::audience::{optout, suppression, Audience};
use crate::store::Db;

/// One step of the funnel: the users still in after it and its predecessors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelStep {
    /// Who the step keeps, in English (the command line).
    pub step: String,
    /// The same, in Italian (the console).
    pub step_it: String,
    /// Users kept by this step and every step before it.
    pub users: u64,
}

/// The funnel of `c` now: everyone in the snapshot, then each clause of its audience's rule,
/// its provinces or uploaded list, the reachable addresses (not suppressed, or an institutional
/// address to fall back on) and, for a stream that offers an unsubscribe, those who did not opt
/// out. One scan of `users`.
pub async fn funnel(db: &Db, c: &Campaign) -> Result<Vec<FunnelStep>, sqlx::Error> {
    let mut steps: Vec<(String, String, String)> = Vec::new();
    let mut so_far: Vec<String> = Vec::new();
    let mut add = |sql: String, en: String, it: String| {
        so_far.push(sql);
        steps.push((so_far.join(" AND "), en, it));
    };
    for clause in c.audience.clauses() {
        add(clause.sql(), clause.kept.0.into(), clause.kept.1.into());
    }
    if let Some(filter) = c.filter_province.as_deref() {
        let (en, it) = match Audience::is_list(filter) {
            true => (
                "in the uploaded list".to_string(),
                "nell'elenco caricato".to_string(),
            ),
            false => {
                let codes = filter.replace(',', ", ");
                (
                    format!("in the provinces {codes}"),
                    format!("nelle province {codes}"),
                )
            }
        };
        add(Audience::filter_in(1), en, it);
    }
    add(
        format!("NOT {}", suppression::unreachable_sql()),
        "reachable: address not suppressed (or an institutional one instead)".into(),
        "raggiungibili: indirizzo non soppresso (o quello istituzionale al suo posto)".into(),
    );
    let unsubscribe = c.unsubscribe();
    if unsubscribe {
        let param = if c.filter_province.is_some() { 2 } else { 1 };
        add(
            optout::not_opted_out_sql(param),
            "not opted out of these notices".into(),
            "non hanno chiesto di non ricevere questi avvisi".into(),
        );
    }
    let sums: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, (sql, _, _))| {
            format!("COALESCE(SUM(CASE WHEN {sql} THEN 1 ELSE 0 END), 0) AS kept_{i}")
        })
        .collect();
    let sql = format!(
        "SELECT COUNT(*) AS everyone, {} FROM users u",
        sums.join(", ")
    );
    let mut query = sqlx::query(&sql);
    if let Some(filter) = &c.filter_province {
        query = query.bind(filter.clone());
    }
    if unsubscribe {
        query = query.bind(c.stream.key());
    }
    let row = query.fetch_one(db.pool()).await?;
    use sqlx::Row;
    let mut out = vec![FunnelStep {
        step: "in the snapshot".into(),
        step_it: "nella fotografia degli utenti".into(),
        users: row.try_get::<i64, _>("everyone")? as u64,
    }];
    for (i, (_, en, it)) in steps.into_iter().enumerate() {
        out.push(FunnelStep {
            step: en,
            step_it: it,
            users: row.try_get::<i64, _>(format!("kept_{i}").as_str())? as u64,
        });
    }
    Ok(out)
}
