//! The pipeline benchmark's synthetic snapshot (`testkit::synthetic`), read back by the
//! importer: every row valid, exactly one reminder audience per user, the shares as documented,
//! deterministic.

use avvisi::import::snapshot::{is_institutional, SnapshotReader};

use testkit::synthetic::{
    audience_sizes, name_letters, reminder_rows, user, write_snapshot, Population,
};

#[test]
fn every_row_is_valid_and_the_shares_are_as_documented() {
    let n = 2_013;
    let mut csv = Vec::new();
    write_snapshot(&mut csv, n, Population::OneEach).unwrap();
    let mut reader = SnapshotReader::new(csv.as_slice()).unwrap();
    let mut counts = [0u64; 5];
    let mut accented = 0;
    while let Some(row) = reader.next_row() {
        let row = row.unwrap();
        let u = match row.result {
            Ok(u) => u,
            Err(e) => panic!("line {}: {e:?}", row.line),
        };
        let private = !is_institutional(&u.contact.email);
        counts[0] += u64::from(!u.registration_completed);
        counts[1] += u64::from(u.enabled && u.contact.pending_email.is_some());
        counts[2] += u64::from(u.enabled && u.code_regeneration_started);
        counts[3] += u64::from(u.enabled && private);
        counts[4] += u64::from(u.enabled);
        // Exactly one reminder audience each.
        let reminders = u64::from(!u.registration_completed)
            + u64::from(u.enabled && u.contact.pending_email.is_some())
            + u64::from(u.enabled && u.code_regeneration_started)
            + u64::from(u.enabled && private);
        assert_eq!(reminders, 1, "{u:?}");
        accented +=
            u64::from(!u.contact.first_name.is_ascii() || u.contact.last_name.contains('\''));
    }
    let expected: Vec<u64> = audience_sizes(n, Population::OneEach)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(counts.to_vec(), expected);
    assert_eq!(expected[..4].iter().sum::<u64>(), n);
    assert!(accented > n / 10);
}

#[test]
fn deterministic() {
    assert_eq!(
        user(7, Population::OneEach).fiscal_code,
        user(7, Population::OneEach).fiscal_code
    );
    assert_eq!(name_letters("Rossi", false), "RSS");
    assert_eq!(name_letters("Gianluca", true), "GLC");
    assert_eq!(name_letters("Zoe", true), "ZOE");
    assert_eq!(name_letters("Elia", true), "LEI");
    assert_eq!(name_letters("Bo", false), "BOX");
}

/// With digests, 5% of the users are in three reminder audiences each (one digest of three
/// sections); the rest as without. The counts the benchmark checks against are the snapshot's.
#[test]
fn with_digests_one_user_in_twenty_has_three_procedures() {
    let n = 2_013;
    let mut csv = Vec::new();
    write_snapshot(&mut csv, n, Population::Digests).unwrap();
    let mut reader = SnapshotReader::new(csv.as_slice()).unwrap();
    let (mut rows, mut three, mut users) = (0u64, 0u64, 0u64);
    let mut counts = [0u64; 5];
    while let Some(row) = reader.next_row() {
        let u = row.unwrap().result.unwrap();
        let private = !is_institutional(&u.contact.email);
        let audiences = [
            !u.registration_completed,
            u.enabled && u.contact.pending_email.is_some(),
            u.enabled && u.code_regeneration_started,
            u.enabled && private,
            u.enabled,
        ];
        for (c, member) in counts.iter_mut().zip(audiences) {
            *c += u64::from(member);
        }
        let reminders = audiences[..4].iter().filter(|m| **m).count() as u64;
        assert!(reminders == 1 || reminders == 3, "{u:?}");
        three += u64::from(reminders == 3);
        rows += reminders;
        users += 1;
    }
    assert_eq!(users, n);
    let expected: Vec<u64> = audience_sizes(n, Population::Digests)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(counts.to_vec(), expected);
    assert_eq!(three, n / 20 + u64::from(n % 20 > 4));
    assert_eq!(rows, reminder_rows(n, Population::Digests));
    assert_eq!(reminder_rows(n, Population::OneEach), n);
    // Without digests, the same users as before, byte for byte.
    assert_eq!(
        user(8, Population::OneEach).email,
        user(8, Population::Digests).email
    );
    assert_ne!(
        user(4, Population::Digests).email,
        user(4, Population::OneEach).email
    );
}

/// The portal's shape: 30% registrations, 70% enabled outside `istruzione.it` (all in the
/// credential advice), 10% with an email change pending, 5% with a code regeneration too; N + 15%
/// rows, one user in ten with more than one.
#[test]
fn the_mission_population_has_the_portals_shares() {
    let n = 20_000;
    let mut csv = Vec::new();
    write_snapshot(&mut csv, n, Population::Mission).unwrap();
    let mut reader = SnapshotReader::new(csv.as_slice()).unwrap();
    let (mut rows, mut several) = (0u64, 0u64);
    let mut counts = [0u64; 5];
    while let Some(row) = reader.next_row() {
        let u = row.unwrap().result.unwrap();
        let audiences = [
            !u.registration_completed,
            u.enabled && u.contact.pending_email.is_some(),
            u.enabled && u.code_regeneration_started,
            u.enabled && !is_institutional(&u.contact.email),
            u.enabled,
        ];
        for (c, member) in counts.iter_mut().zip(audiences) {
            *c += u64::from(member);
        }
        let reminders = audiences[..4].iter().filter(|m| **m).count() as u64;
        assert!(reminders >= 1, "{u:?}");
        several += u64::from(reminders > 1);
        rows += reminders;
    }
    assert_eq!(counts, [6_000, 2_000, 1_000, 14_000, 14_000]);
    let expected: Vec<u64> = audience_sizes(n, Population::Mission)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(counts.to_vec(), expected);
    assert_eq!(rows, 23_000);
    assert_eq!(rows, reminder_rows(n, Population::Mission));
    assert_eq!(several, 2_000);
}
