//! Timestamps: RFC 3339 UTC to the second, for session names and times and for dating letters.
//! One clock, so that a session and the letters written from it agree.

/// Current time as RFC 3339 UTC to the second (`2026-11-25T20:31:25Z`).
pub fn now_rfc3339() -> String {
    rfc3339_seconds(time::OffsetDateTime::now_utc())
}

/// `at` as RFC 3339 UTC to the second.
fn rfc3339_seconds(at: time::OffsetDateTime) -> String {
    // Whole seconds, so that the format writes no fraction.
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_time_is_well_formed() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z') && &now[10..11] == "T");
        let leap_day = time::OffsetDateTime::from_unix_timestamp(951_782_400 + 86_399).unwrap();
        assert_eq!(rfc3339_seconds(leap_day), "2000-02-29T23:59:59Z");
    }
}
