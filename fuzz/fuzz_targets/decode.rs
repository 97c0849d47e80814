//! Any bytes under any routing key: `decode` classifies them without panicking, and what
//! it accepts goes through `plan` and `reduce` (the decide step) without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use user_sync::decide;
use user_sync::event::{DEFAULT_MAX_BODY_BYTES, Decoded, decode};
use user_sync::membership::Membership;

fuzz_target!(|data: &[u8]| {
    let keys = ["user.created", "user.updated", "user.deleted", "user.renamed"];
    let key = keys[data.first().map_or(0, |b| *b as usize % keys.len())];
    let membership = Membership::new("lms", &["teacher".into(), "admin".into()]);
    let mut planned = Vec::new();
    // The whole input as one body, then its halves: a batch of up to three events.
    for body in [data, &data[..data.len() / 2], &data[data.len() / 2..]] {
        if let Ok(Decoded::Event(e)) = decode(body, key, DEFAULT_MAX_BODY_BYTES) {
            planned.push(decide::plan(&e, &membership));
        }
    }
    let (users, losers) = decide::reduce(&planned);
    assert_eq!(
        users.len() + losers.len() + users.iter().filter(|u| u.upsert.is_some_and(|i| i != u.newest)).count(),
        planned.len(),
        "every planned event is a user's newest, its upsert, or superseded"
    );
    let _ = decide::converge(&planned);
});
