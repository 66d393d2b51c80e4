//! The throwaway PostgreSQL database of a run: `avvisi_bench_<random>`, created on the server of
//! `--postgres-url` before the PostgreSQL child starts, dropped after it ends (unless `--keep`).

use anyhow::Context;

use crate::random_hex;

/// Creates `avvisi_bench_<random>` on the server of `admin_url`; returns its URL and name.
pub async fn create(admin_url: &str) -> anyhow::Result<(String, String)> {
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(admin_url).await.with_context(|| {
        format!(
            "PostgreSQL at {} is unreachable (use --postgres-url, or --backend sqlite)",
            avvisi::config::redact_url(admin_url)
        )
    })?;
    let name = format!("avvisi_bench_{}", random_hex());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .context("creating the benchmark database")?;
    admin.close().await;
    Ok((database_url(admin_url, &name), name))
}

/// `admin_url` with its database replaced by `name` (query string kept).
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let base = base
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("://") && !b.ends_with('/'))
        .map(|(b, _)| b)
        .unwrap_or(base);
    format!("{base}/{name}{query}")
}

/// Drops the database `name` (connections to it are ended); a failure is only reported.
pub async fn drop(admin_url: &str, name: &str) {
    if let Ok(admin) = sqlx::AnyPool::connect(admin_url).await {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
        {
            eprintln!("could not drop the benchmark database {name}: {e}");
        }
        admin.close().await;
    }
}
