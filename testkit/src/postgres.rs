//! A throwaway PostgreSQL database: created empty (no migration applied) on the server of an
//! admin URL, dropped with its guard, also when the test or the run panicked.

/// A database of its own, `PREFIX_<16 hex digits>`, dropped (connections ended) when this value
/// goes, unless [`Throwaway::keep`] was called.
pub struct Throwaway {
    url: String,
    name: String,
    admin_url: String,
    keep: bool,
}

impl Throwaway {
    /// Creates `prefix_<random>` on the server of `admin_url`.
    pub async fn create(admin_url: &str, prefix: &str) -> Result<Throwaway, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(admin_url).await?;
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let created = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await;
        admin.close().await;
        created?;
        Ok(Throwaway {
            url: database_url(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
            keep: false,
        })
    }

    /// The database's URL (the admin URL's, with its database replaced).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the database in place when this value goes (for a look after the run).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // A thread of its own: drop may run on a runtime's thread, or while unwinding a panic.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the throwaway database");
            rt.block_on(async {
                match sqlx::AnyPool::connect(&admin_url).await {
                    Ok(admin) => {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        if let Err(e) = sqlx::query(&sql).execute(&admin).await {
                            eprintln!("could not drop the throwaway database {name}: {e}");
                        }
                        admin.close().await;
                    }
                    Err(e) => eprintln!("could not drop the throwaway database {name}: {e}"),
                }
            })
        });
        let _ = dropped.join();
    }
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

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            database_url("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
