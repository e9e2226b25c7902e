#![no_main]
//! The call-log API's filters (`GET /v1/calls?…`): any query string is a filter or a 400 with its
//! reason, never a panic; a filter that parses keeps its page size within bounds, its time range
//! in order, and its cursor is one the API could have issued (it encodes back to a cursor that
//! decodes to itself).

use switchboard_api::filter::{Cursor, ListQuery, MAX_LIMIT};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    // Some sources have a default region, some none: both paths of national numbers run.
    let region_of = |source: &str| (source.len() % 2 == 0).then(|| "GB".to_owned());
    let Ok(filter) = ListQuery::parse(Some(&query), region_of) else { return };
    assert!((1..=MAX_LIMIT).contains(&filter.limit), "limit {} out of bounds", filter.limit);
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        assert!(from < to, "from {from} is not before to {to}");
    }
    if let Some(cursor) = filter.cursor {
        assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(cursor));
    }
});
