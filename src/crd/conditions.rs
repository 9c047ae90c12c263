//! Condition values (`metav1.Condition`), built and merged one way for every status
//! the operator writes (ReferralSystem, ReferralRestore): `lastTransitionTime` moves
//! only when a condition's status changes, so an unchanged observation gives an
//! identical status, and no write. Pure: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A True (`ok`) or False condition.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: bounded_message(message),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The longest condition message the API server stores (`metav1.Condition`).
pub const MAX_CONDITION_MESSAGE: usize = 32768;

/// A message cut to what the API server stores, at a character boundary: a longer one
/// would make the whole status write fail, and the person would see nothing at all.
pub fn bounded_message(message: String) -> String {
    if message.len() <= MAX_CONDITION_MESSAGE {
        return message;
    }
    const MORE: &str = " … (cut: the full list is longer than a condition holds)";
    let mut end = MAX_CONDITION_MESSAGE - MORE.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &message[..end])
}

/// An Unknown condition.
pub fn unknown(type_: &str, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition { status: "Unknown".into(), ..condition(type_, false, reason, message, generation, now) }
}

/// `new`, each keeping the old `lastTransitionTime` of its type when its status did
/// not change.
pub fn merge(new: Vec<Condition>, old: &[Condition]) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(previous) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = previous.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Sets one condition in `conditions` (replacing the one of its type, or adding it),
/// keeping the old `lastTransitionTime` when its status did not change.
pub fn set(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => *old = merge(vec![new], std::slice::from_ref(old)).remove(0),
        None => conditions.push(new),
    }
}

/// Whether the condition of `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let old = vec![condition("A", true, "Ok", "one".into(), Some(1), &at(10))];
        let same = merge(vec![condition("A", true, "Ok", "two".into(), Some(2), &at(20))], &old);
        assert_eq!((same[0].last_transition_time.clone(), same[0].message.as_str()), (at(10), "two"));
        let flipped = merge(vec![condition("A", false, "Bad", "three".into(), Some(2), &at(30))], &old);
        assert_eq!(flipped[0].last_transition_time, at(30));
        let unknown = merge(vec![unknown("A", "NotYet", "four".into(), None, &at(40))], &old);
        assert_eq!((unknown[0].status.as_str(), unknown[0].last_transition_time.clone()), ("Unknown", at(40)));
    }

    #[test]
    fn set_replaces_or_adds_one_condition() {
        let mut list = vec![condition("A", true, "Ok", "a".into(), None, &at(1))];
        set(&mut list, condition("B", false, "No", "b".into(), None, &at(2)));
        set(&mut list, condition("A", true, "Ok", "a again".into(), None, &at(3)));
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].message.as_str(), list[0].last_transition_time.clone()), ("a again", at(1)));
        assert!(is_true(&list, "A") && !is_true(&list, "B") && !is_true(&list, "C"));
        set(&mut list, condition("A", false, "Lost", "gone".into(), None, &at(4)));
        assert_eq!(list[0].last_transition_time, at(4));
    }

    #[test]
    fn a_message_never_exceeds_what_the_api_server_stores() {
        let long = "é".repeat(40_000);
        let cut = bounded_message(long);
        assert!(cut.len() <= MAX_CONDITION_MESSAGE, "{}", cut.len());
        assert!(cut.ends_with("a condition holds)"));
        assert_eq!(bounded_message("short".into()), "short");
    }
}
