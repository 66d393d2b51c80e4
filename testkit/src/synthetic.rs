//! Synthetic snapshots for the pipeline benchmark: N invented users, deterministic, valid by the
//! rules of `avvisi::import::snapshot`, with Italian names (accents, apostrophes, two-word names).
//!
//! A user's procedures depend on their position, `i % 20` (a "kind"), and on the population:
//!
//! | population | `i % 20` | state | reminder audiences |
//! |---|---|---|---|
//! | `mission` | 0..5 | registration started | `registration_incomplete` (30%) |
//! | | 6 | enabled, private address, new private address pending | email, credential (5%) |
//! | | 7 | as 6, and a code regeneration started | email, code, credential (5%) |
//! | | 8..19 | enabled, private address | `credential_recovery_advice` (60%) |
//! | `one-each` | 0, 1 | registration started | `registration_incomplete` (10%) |
//! | | 2, 3 | enabled, institutional address, new private address pending | `email_unvalidated` (10%) |
//! | | 4 | enabled, institutional address, code regeneration started | `code_regeneration_pending` (5%) |
//! | | 5..19 | enabled, private address | `credential_recovery_advice` (75%) |
//! | `digests` | 4 | enabled, private address, both pending | three (5%); the rest as `one-each` |
//!
//! `mission` is the portal's shape (1.2 million users: 30% with a registration started, 70%
//! enabled and all of those outside `istruzione.it`, 10% with an email change pending, 5% with a
//! code regeneration pending): N + 15% outbox rows at the first notice, one email per user, one
//! user in ten getting a digest of two or three sections. Every population gives every user one
//! email at the first notice, and `enabled_users` is everyone enabled. Same N, same population,
//! same file, byte for byte.
//!
//! Its tests are in the integration tests (`tests/api/synthetic.rs`), with the importer that
//! reads what it writes.

use std::io::Write;

use avvisi::audience::Audience;
use avvisi::import::snapshot::{fiscal_code_check_char, COLUMNS};

const FIRST_NAMES: [(&str, char); 24] = [
    ("Niccolò", 'M'),
    ("Maria Grazia", 'F'),
    ("Giuseppe", 'M'),
    ("Anna", 'F'),
    ("Nicolò", 'M'),
    ("Lucia", 'F'),
    ("Gianluca", 'M'),
    ("Chiara", 'F'),
    ("Mattia", 'M'),
    ("Anna Maria", 'F'),
    ("Salvatore", 'M'),
    ("Francesca", 'F'),
    ("Andrea", 'M'),
    ("Noemi", 'F'),
    ("Giosuè", 'M'),
    ("Beatrice", 'F'),
    ("Elia", 'M'),
    ("Ilaria", 'F'),
    ("Raffaele", 'M'),
    ("Gioia", 'F'),
    ("Mosè", 'M'),
    ("Zoe", 'F'),
    ("Pietro", 'M'),
    ("Rosaria", 'F'),
];

const LAST_NAMES: [&str; 24] = [
    "Rossi",
    "D'Angelo",
    "Esposito",
    "Dell'Acqua",
    "Bianchi",
    "Cantù",
    "Lo Russo",
    "De Luca",
    "Dall'Olio",
    "Ferrari",
    "D'Amico",
    "Romano",
    "Colombo",
    "Sant'Elia",
    "Ricci",
    "Marino",
    "Greco",
    "Fabbrò",
    "Bruno",
    "Gallo",
    "Dell'Orto",
    "Conti",
    "Mancini",
    "La Rosa",
];

/// Municipality code (Belfiore) and province.
const PLACES: [(&str, &str); 8] = [
    ("H501", "RM"),
    ("F205", "MI"),
    ("F839", "NA"),
    ("L219", "TO"),
    ("G273", "PA"),
    ("A944", "BO"),
    ("D612", "FI"),
    ("L736", "VE"),
];

const PRIVATE_DOMAINS: [&str; 5] = [
    "libero.it",
    "gmail.com",
    "virgilio.it",
    "alice.it",
    "tiscali.it",
];

/// Which procedures the users of a snapshot have pending (see the module's table).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Population {
    /// The portal's shape: 30% registrations, 70% enabled outside `istruzione.it`, 10% of
    /// everyone with an email change pending, 5% with a code regeneration too.
    Mission,
    /// Exactly one reminder audience per user: no digests.
    OneEach,
    /// As `one-each`, but one user in twenty in three audiences (a digest of three sections).
    Digests,
}

/// A kind of user (`i % 20`): what is pending for them.
#[derive(Debug, Clone, Copy)]
struct Profile {
    enabled: bool,
    /// Registered with their `istruzione.it` mailbox.
    institutional: bool,
    pending_email: bool,
    code_regeneration: bool,
}

impl Population {
    fn profile(self, kind: u64) -> Profile {
        let p = |enabled, institutional, pending_email, code_regeneration| Profile {
            enabled,
            institutional,
            pending_email,
            code_regeneration,
        };
        match (self, kind) {
            (Population::Mission, 0..=5) => p(false, false, false, false),
            (Population::Mission, 6) => p(true, false, true, false),
            (Population::Mission, 7) => p(true, false, true, true),
            (Population::Mission, _) => p(true, false, false, false),
            (_, 0 | 1) => p(false, false, false, false),
            (_, 2 | 3) => p(true, true, true, false),
            (Population::Digests, 4) => p(true, false, true, true),
            (Population::OneEach, 4) => p(true, true, false, true),
            (_, _) => p(true, false, false, false),
        }
    }
}

impl Profile {
    /// Membership of the four reminder audiences and `enabled_users`, in `audience_sizes`' order.
    fn audiences(self) -> [bool; 5] {
        [
            !self.enabled,
            self.enabled && self.pending_email,
            self.enabled && self.code_regeneration,
            self.enabled && !self.institutional,
            self.enabled,
        ]
    }
}

/// How many of `n` synthetic users are in each audience.
pub fn audience_sizes(n: u64, population: Population) -> Vec<(Audience, u64)> {
    let of_kind = |kind: u64| n / 20 + u64::from(n % 20 > kind);
    let mut sizes = [0u64; 5];
    for kind in 0..20 {
        for (size, member) in sizes.iter_mut().zip(population.profile(kind).audiences()) {
            *size += u64::from(member) * of_kind(kind);
        }
    }
    [
        Audience::RegistrationIncomplete,
        Audience::EmailUnvalidated,
        Audience::CodeRegenerationPending,
        Audience::CredentialRecoveryAdvice,
        Audience::EnabledUsers,
    ]
    .into_iter()
    .zip(sizes)
    .collect()
}

/// The reminder rows the first notice plans for `n` users (one per user and audience).
pub fn reminder_rows(n: u64, population: Population) -> u64 {
    audience_sizes(n, population)
        .into_iter()
        .filter(|(a, _)| *a != Audience::EnabledUsers)
        .map(|(_, c)| c)
        .sum()
}

/// Writes the snapshot of `n` users as CSV (header included), streaming.
pub fn write_snapshot<W: Write>(out: W, n: u64, population: Population) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(1 << 16, out));
    w.write_record(COLUMNS)?;
    for i in 0..n {
        w.write_record(user(i, population).fields())?;
    }
    w.flush()?;
    Ok(())
}

/// One synthetic user, as the portal would export them.
#[derive(Debug, Clone)]
pub struct SyntheticUser {
    pub user_id: String,
    pub fiscal_code: String,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    pub institutional_email: Option<String>,
    pub registration_completed: bool,
    pub enabled: bool,
    pub pending_email: Option<String>,
    pub code_regeneration_started: bool,
    pub province: &'static str,
    pub updated_at: String,
}

impl SyntheticUser {
    fn fields(&self) -> [&str; COLUMNS.len()] {
        [
            &self.user_id,
            &self.fiscal_code,
            self.first_name,
            self.last_name,
            &self.email,
            self.institutional_email.as_deref().unwrap_or(""),
            if self.registration_completed {
                "completed"
            } else {
                "started"
            },
            if self.enabled { "true" } else { "false" },
            self.pending_email.as_deref().unwrap_or(""),
            if self.code_regeneration_started {
                "started"
            } else {
                "none"
            },
            self.province,
            &self.updated_at,
        ]
    }
}

/// The user at position `i` (0-based) of a population; the same `i` always gives the same user.
pub fn user(i: u64, population: Population) -> SyntheticUser {
    let h = splitmix64(i);
    let (first_name, sex) = FIRST_NAMES[(h % 24) as usize];
    let last_name = LAST_NAMES[((h >> 8) % 24) as usize];
    let (place, province) = PLACES[((h >> 16) % 8) as usize];
    let year = 1960 + (h >> 20) % 45;
    let month = (h >> 28) % 12;
    let day = 1 + (h >> 32) % 28;
    let fiscal_code = fiscal_code(last_name, first_name, sex, year, month, day, place);

    let local = format!("{}.{}{}", ascii(first_name), ascii(last_name), i);
    let private = format!(
        "{local}@{}",
        PRIVATE_DOMAINS[((h >> 40) % PRIVATE_DOMAINS.len() as u64) as usize]
    );
    let institutional = format!(
        "{local}@{}",
        if h >> 44 & 1 == 0 {
            "istruzione.it"
        } else {
            "posta.istruzione.it"
        }
    );
    let Profile {
        enabled,
        institutional: registered_institutional,
        pending_email,
        code_regeneration,
    } = population.profile(i % 20);
    SyntheticUser {
        user_id: format!("B{i:08}"),
        fiscal_code,
        first_name,
        last_name,
        email: if registered_institutional {
            institutional.clone()
        } else {
            private.clone()
        },
        // Some private registrants also have a school mailbox on record.
        institutional_email: (registered_institutional || (enabled && h >> 45 & 1 == 1))
            .then_some(institutional),
        registration_completed: enabled,
        enabled,
        pending_email: pending_email.then(|| format!("nuovo.{private}")),
        code_regeneration_started: code_regeneration,
        province,
        updated_at: format!(
            "2026-11-{:02}T{:02}:{:02}:00+01:00",
            16 + (h >> 48) % 6,
            (h >> 52) % 24,
            (h >> 58) % 60
        ),
    }
}

/// A well-formed fiscal code: surname and name letters, birth date, place, check character.
fn fiscal_code(
    last: &str,
    first: &str,
    sex: char,
    year: u64,
    month: u64,
    day: u64,
    place: &str,
) -> String {
    let mut code = String::with_capacity(16);
    code.push_str(&name_letters(last, false));
    code.push_str(&name_letters(first, true));
    code.push_str(&format!("{:02}", year % 100));
    code.push(b"ABCDEHLMPRST"[month as usize] as char);
    code.push_str(&format!("{:02}", if sex == 'F' { day + 40 } else { day }));
    code.push_str(place);
    let check = fiscal_code_check_char(code.as_bytes());
    code.push(check as char);
    code
}

/// The three letters of a surname or a name (a name with 4+ consonants takes the 1st, 3rd, 4th).
pub fn name_letters(name: &str, is_first_name: bool) -> String {
    let letters: Vec<u8> = ascii(name)
        .to_ascii_uppercase()
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .collect();
    let vowel = |c: &u8| b"AEIOU".contains(c);
    let consonants: Vec<u8> = letters.iter().copied().filter(|c| !vowel(c)).collect();
    let vowels = letters.iter().copied().filter(vowel);
    let mut out: Vec<u8> = if is_first_name && consonants.len() >= 4 {
        vec![consonants[0], consonants[2], consonants[3]]
    } else {
        consonants.into_iter().chain(vowels).take(3).collect()
    };
    out.resize(3, b'X');
    String::from_utf8(out).expect("ASCII")
}

/// Lower-case ASCII for addresses: accents dropped, apostrophes and spaces removed.
fn ascii(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'à' | 'á' => Some('a'),
            'è' | 'é' => Some('e'),
            'ì' | 'í' => Some('i'),
            'ò' | 'ó' => Some('o'),
            'ù' | 'ú' => Some('u'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// A well-mixed 64-bit value from `i` (SplitMix64), so neighbouring users differ.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
