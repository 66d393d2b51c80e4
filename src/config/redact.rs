//! URLs as messages and logs may show them: settings name database and relay URLs, and every
//! message that names one goes through [`redact_url`].

/// The URL as messages and logs may show it: the password of its user part, any query
/// parameter that looks like a secret (`password=`, `sslkey=`...) and any fragment as `***`.
/// A URL that does not parse with a host (`postgres:/u:pw@h`, a bad port, a stray space) may
/// hold its password anywhere: only its scheme is shown. SQLite URLs name a file and hold no
/// credentials: shown as they are, but for a secret-looking parameter.
pub fn redact_url(raw: &str) -> String {
    let raw = raw.trim();
    let scheme = raw.split_once(':').map(|(s, _)| s).filter(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if scheme.is_some_and(|s| s.eq_ignore_ascii_case("sqlite")) {
        return match raw.split_once('?') {
            Some((base, query)) => format!("{base}?{}", redact_query(query)),
            None => raw.to_string(),
        };
    }
    let hidden = || match scheme {
        Some(s) => format!("{s}:(the rest is not shown: not a well-formed URL)"),
        None => "(not shown: not a well-formed URL)".to_string(),
    };
    let Ok(mut url) = url::Url::parse(raw) else {
        return hidden();
    };
    if url.host_str().is_none_or(str::is_empty) {
        return hidden();
    }
    let before = url.clone();
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return hidden();
    }
    if let Some(query) = url.query().map(redact_query) {
        url.set_query(Some(&query));
    }
    if url.fragment().is_some() {
        url.set_fragment(Some("***"));
    }
    // Nothing secret: as written, not as the parser normalises it (`https://x` + `/`).
    if url == before {
        return raw.to_string();
    }
    url.to_string()
}

/// A URL's query with the value of every secret-looking parameter as `***`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `password`, `sslpassword`, `pwd`, `passfile`... by the name, percent-decoded, any case.
fn is_secret_parameter(name: &str) -> bool {
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .to_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://avvisi:hunter2@db:5432/avvisi"),
            "postgres://avvisi:***@db:5432/avvisi"
        );
        assert_eq!(redact_url("sqlite://data/a.db"), "sqlite://data/a.db");
        assert_eq!(
            redact_url("sqlite:data/a.db?mode=rwc&key=hunter2"),
            "sqlite:data/a.db?mode=rwc&key=***"
        );
    }

    /// Every shape a password can take in a URL, well formed or not: never shown.
    #[test]
    fn no_shape_of_url_shows_its_password() {
        for (url, shown) in [
            (
                "postgres://avvisi@db/avvisi?sslmode=require&password=hunter2",
                "postgres://avvisi@db/avvisi?sslmode=require&password=***",
            ),
            (
                "postgresql://avvisi:hunter2@db/avvisi?PassWord=hunter2&%70assword=hunter2#hunter2",
                "postgresql://avvisi:***@db/avvisi?PassWord=***&%70assword=***#***",
            ),
            (
                "postgres://avvisi:hun@ter2@db/avvisi",
                "postgres://avvisi:***@db/avvisi",
            ),
            (
                "postgres:/avvisi:hunter2@db",
                "postgres:(the rest is not shown: not a well-formed URL)",
            ),
            (
                "postgres:avvisi:hunter2@db",
                "postgres:(the rest is not shown: not a well-formed URL)",
            ),
            (
                "postgres://avvisi:hunter2@db:port/avvisi",
                "postgres:(the rest is not shown: not a well-formed URL)",
            ),
            (
                "postgres://avvisi:hunter2@d b/avvisi",
                "postgres:(the rest is not shown: not a well-formed URL)",
            ),
            (
                "postgres://avvisi:hunter2@/avvisi",
                "postgres:(the rest is not shown: not a well-formed URL)",
            ),
            (
                "avvisi:hunter2@db/avvisi",
                "avvisi:(the rest is not shown: not a well-formed URL)",
            ),
            ("//avvisi:hunter2@db", "(not shown: not a well-formed URL)"),
            ("hunter2", "(not shown: not a well-formed URL)"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
