//! The one way to point avvisi at an SMTP relay: the settings every SMTP case sets, as
//! borrowed pairs (for settings and `Command::envs`) or owned ones (for a list of variables that
//! other values join).

/// The public address of the unsubscribe links in the tests' emails: SMTP delivery needs one.
/// Nothing serves it (`.invalid`); a case that follows the links sets its own.
pub const UNSUBSCRIBE_URL: &str = "https://unsubscribe.avvisi-tests.invalid";

/// The tests' `unsubscribe.secret`.
pub const UNSUBSCRIBE_SECRET: &str = "tests-only-unsubscribe-key-0123456789abcdef";

/// `delivery.transport = smtp`, `smtp.url = url`, and the unsubscribe links' address and key
/// that SMTP delivery requires, as `AVVISI__...` variables.
pub fn settings(url: &str) -> [(&'static str, &str); 4] {
    [
        ("AVVISI__DELIVERY__TRANSPORT", "smtp"),
        ("AVVISI__SMTP__URL", url),
        ("AVVISI__UNSUBSCRIBE__PUBLIC_URL", UNSUBSCRIBE_URL),
        ("AVVISI__UNSUBSCRIBE__SECRET", UNSUBSCRIBE_SECRET),
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
