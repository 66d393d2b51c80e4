//! The one way to point avvisi at an SMTP relay: the two settings every SMTP case sets, as
//! borrowed pairs (for settings and `Command::envs`) or owned ones (for a list of variables that
//! other values join).

/// `delivery.transport = smtp` and `smtp.url = url`, as `AVVISI__...` variables.
pub fn settings(url: &str) -> [(&'static str, &str); 2] {
    [
        ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
        ("AVVISI__SMTP__URL", url),
    ]
}

/// [`settings`] followed by `extra` (a later setting wins over an earlier one).
pub fn with<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = settings(url).to_vec();
    all.extend_from_slice(extra);
    all
}

/// [`settings`], owned.
pub fn env(url: &str) -> Vec<(&'static str, String)> {
    settings(url)
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect()
}
