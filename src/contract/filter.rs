//! MQTT topic-filter algorithms: whether a filter matches a topic, and whether every
//! topic one filter matches is also matched by another.

/// Whether every topic `filter` can match is also matched by `pattern`.
pub fn filter_within(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('/');
    let mut p = pattern.split('/');
    loop {
        match (f.next(), p.next()) {
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some("+"), Some("+")) => {}
            (Some("+"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// MQTT filter matching (`+` one level, `#` the rest), for routing incoming messages to
/// the local subscriptions of one bus client.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // MQTT-4.7.2-1: wildcards at the root do not match `$`-topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
