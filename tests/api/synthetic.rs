//! The pipeline benchmark's synthetic snapshot (`benches/pipeline/synthetic.rs`, included here
//! because the benchmark has no test harness): every row valid, exactly one reminder audience per
//! user, the shares as documented, deterministic.

use avvisi::import::snapshot::{is_institutional, SnapshotReader};

#[path = "../../benches/pipeline/synthetic.rs"]
pub(crate) mod snapshot;

use snapshot::{audience_sizes, name_letters, user, write_snapshot};

#[test]
fn every_row_is_valid_and_the_shares_are_as_documented() {
    let n = 2_013;
    let mut csv = Vec::new();
    write_snapshot(&mut csv, n).unwrap();
    let mut reader = SnapshotReader::new(csv.as_slice()).unwrap();
    let mut counts = [0u64; 5];
    let mut accented = 0;
    while let Some(row) = reader.next_row() {
        let row = row.unwrap();
        let u = match row.result {
            Ok(u) => u,
            Err(e) => panic!("line {}: {e:?}", row.line),
        };
        let private = !is_institutional(&u.email);
        counts[0] += u64::from(!u.registration_completed);
        counts[1] += u64::from(u.enabled && u.pending_email.is_some());
        counts[2] += u64::from(u.enabled && u.code_regeneration_started);
        counts[3] += u64::from(u.enabled && private);
        counts[4] += u64::from(u.enabled);
        // Exactly one reminder audience each.
        let reminders = u64::from(!u.registration_completed)
            + u64::from(u.enabled && u.pending_email.is_some())
            + u64::from(u.enabled && u.code_regeneration_started)
            + u64::from(u.enabled && private);
        assert_eq!(reminders, 1, "{u:?}");
        accented += u64::from(!u.first_name.is_ascii() || u.last_name.contains('\''));
    }
    let expected: Vec<u64> = audience_sizes(n).into_iter().map(|(_, c)| c).collect();
    assert_eq!(counts.to_vec(), expected);
    assert_eq!(expected[..4].iter().sum::<u64>(), n);
    assert!(accented > n / 10);
}

#[test]
fn deterministic() {
    assert_eq!(user(7).fiscal_code, user(7).fiscal_code);
    assert_eq!(name_letters("Rossi", false), "RSS");
    assert_eq!(name_letters("Gianluca", true), "GLC");
    assert_eq!(name_letters("Zoe", true), "ZOE");
    assert_eq!(name_letters("Elia", true), "LEI");
    assert_eq!(name_letters("Bo", false), "BOX");
}
