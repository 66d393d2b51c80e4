//! Where the relay is and how to talk to it: `smtp.url` read once, with the TLS it asks for.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::deliver::transport::TransportError;

/// Where the relay is and how to talk to it, from `smtp.url` and the credentials.
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: Security,
    /// The relay is on this machine (127.0.0.0/8, ::1, localhost): clear text crosses no network.
    pub(super) loopback: bool,
    pub(super) hello: ClientId,
    pub(super) credentials: Option<Credentials>,
    /// For connecting, and for each step of a message exchange (`smtp.timeout_seconds`).
    pub(super) timeout: Duration,
    /// `smtp.pipelining`: use PIPELINING when the relay offers it.
    pub(super) pipelining: bool,
}

pub(super) enum Security {
    /// `smtp://` to a relay on loopback, or `smtp://...?tls=none`: clear text.
    Plain,
    /// `smtp://...?tls=required|opportunistic`, and `smtp://` to a relay not on loopback
    /// (required): STARTTLS after the greeting.
    StartTls {
        params: TlsParameters,
        required: bool,
    },
    /// `smtps://`: TLS from the first byte.
    Wrapper(TlsParameters),
}

impl Endpoint {
    /// Reads `smtp://HOST[:PORT][?tls=required|opportunistic|none]` or `smtps://HOST[:PORT]`; a
    /// path (`smtp://relay/client.example`) is the EHLO name, a user and password the
    /// credentials.
    ///
    /// Without `tls=`, `smtp://` is clear text only to a relay on loopback; to any other relay it
    /// means STARTTLS required: the password and every recipient's address and message would
    /// otherwise cross the network readable, and a missing `?tls=` must not decide that.
    /// Clear text to such a relay is `?tls=none`, said on purpose.
    ///
    /// `roots` (`smtp.tls_ca_file`) are trusted for the relay's certificate besides the public
    /// roots.
    pub(super) fn from_url(
        text: &str,
        roots: Option<&Certificate>,
    ) -> Result<Endpoint, TransportError> {
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        let loopback = on_loopback(&url);
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (security, default_port) = security(&url, loopback, &host, roots)?;
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        Ok(Endpoint {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            loopback,
            hello,
            credentials: credentials(&url),
            timeout: Duration::from_secs(30),
            pipelining: true,
        })
    }

    /// What to tell operators at start when messages to this relay may cross a network in
    /// clear text: `?tls=none`, or `?tls=opportunistic` (which falls back to clear text when
    /// STARTTLS is not offered, or is stripped on the way), to a relay not on loopback.
    pub(super) fn clear_text_warning(&self) -> Option<String> {
        if self.loopback {
            return None;
        }
        let relay = format!("{}:{}", self.host, self.port);
        match &self.security {
            Security::Plain => Some(format!(
                "SMTP to {relay} is in clear text (smtp.url has tls=none): the relay password \
                 and every message cross the network readable; remove tls=none to require \
                 STARTTLS"
            )),
            Security::StartTls {
                required: false, ..
            } => Some(format!(
                "SMTP to {relay} falls back to clear text when STARTTLS is not offered \
                 (smtp.url has tls=opportunistic); tls=required refuses to send without it"
            )),
            _ => None,
        }
    }
}

fn bad(why: &str) -> TransportError {
    TransportError::SmtpUrl(why.to_string())
}

/// Whether the URL's host is this machine (127.0.0.0/8, ::1, localhost).
fn on_loopback(url: &url::Url) -> bool {
    match url.host() {
        // `smtp:` is not a scheme the URL standard knows, so an IPv4 address arrives as text.
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// The security the scheme and `tls=` ask for, with the port that goes with it when the URL
/// names none (see [`Endpoint::from_url`]).
fn security(
    url: &url::Url,
    loopback: bool,
    host: &str,
    roots: Option<&Certificate>,
) -> Result<(Security, u16), TransportError> {
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let params = || {
        let mut builder = TlsParameters::builder(host.to_string());
        if let Some(roots) = roots {
            builder = builder.add_root_certificate(roots.clone());
        }
        builder.build().map_err(|e| bad(&e.to_string()))
    };
    Ok(match (url.scheme(), tls.as_deref()) {
        ("smtp", None) if loopback => (Security::Plain, 25),
        ("smtp", None) => (
            Security::StartTls {
                params: params()?,
                required: true,
            },
            25,
        ),
        ("smtp", Some("none")) => (Security::Plain, 25),
        ("smtp", Some(mode @ ("required" | "opportunistic"))) => (
            Security::StartTls {
                params: params()?,
                required: mode == "required",
            },
            587,
        ),
        ("smtps", None) => (Security::Wrapper(params()?), 465),
        (scheme, tls) => {
            return Err(bad(&format!(
                "scheme {scheme:?} with tls={tls:?}: expected smtp://, \
                 smtp://...?tls=required, smtp://...?tls=opportunistic, \
                 smtp://...?tls=none or smtps://"
            )))
        }
    })
}

/// The user and password of the URL, percent-decoded.
fn credentials(url: &url::Url) -> Option<Credentials> {
    url.password().map(|password| {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Credentials::new(decode(url.username()), decode(password))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(url: &str) -> (String, u16) {
        let endpoint = Endpoint::from_url(url, None).unwrap_or_else(|e| panic!("{url}: {e}"));
        let kind = match endpoint.security {
            Security::Plain => "plain",
            Security::StartTls { required: true, .. } => "starttls required",
            Security::StartTls {
                required: false, ..
            } => "starttls opportunistic",
            Security::Wrapper(_) => "tls",
        };
        (kind.to_string(), endpoint.port)
    }

    #[test]
    fn a_relay_off_loopback_gets_tls_unless_clear_text_is_asked_for() {
        let cases = [
            // No `tls=`: clear text only on this machine.
            ("smtp://127.0.0.1:2525", "plain", 2525),
            ("smtp://127.8.9.10:2525", "plain", 2525),
            ("smtp://localhost", "plain", 25),
            ("smtp://LOCALHOST:25", "plain", 25),
            ("smtp://[::1]:2525", "plain", 2525),
            ("smtp://relay.example.org:587", "starttls required", 587),
            ("smtp://relay.example.org", "starttls required", 25),
            ("smtp://192.0.2.10:25", "starttls required", 25),
            ("smtp://[2001:db8::1]:25", "starttls required", 25),
            ("smtp://localhost.example.org:25", "starttls required", 25),
            // Said on purpose.
            ("smtp://relay.example.org:25?tls=none", "plain", 25),
            (
                "smtp://relay.example.org?tls=required",
                "starttls required",
                587,
            ),
            (
                "smtp://relay.example.org?tls=opportunistic",
                "starttls opportunistic",
                587,
            ),
            (
                "smtp://127.0.0.1:2525?tls=required",
                "starttls required",
                2525,
            ),
            ("smtps://relay.example.org", "tls", 465),
        ];
        for (url, kind, port) in cases {
            assert_eq!(security(url), (kind.to_string(), port), "{url}");
        }
        let err = Endpoint::from_url("smtp://relay.example.org?tls=maybe", None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("tls=none"), "{err}");
    }

    #[test]
    fn clear_text_off_loopback_is_warned_about() {
        let warning = |url: &str| Endpoint::from_url(url, None).unwrap().clear_text_warning();
        let plain = warning("smtp://relay.example.org:25?tls=none").unwrap();
        assert!(
            plain.contains("relay.example.org:25") && plain.contains("clear text"),
            "{plain}"
        );
        let fallback = warning("smtp://relay.example.org?tls=opportunistic").unwrap();
        assert!(fallback.contains("tls=required"), "{fallback}");
        for quiet in [
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25?tls=none",
            "smtp://relay.example.org:587",
            "smtps://relay.example.org",
        ] {
            assert_eq!(warning(quiet), None, "{quiet}");
        }
    }
}
