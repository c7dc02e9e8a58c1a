//! A secret (webhook token, CoMagic token) that cannot leak through `Debug` or `Display`.

use serde::Deserialize;
use subtle::ConstantTimeEq;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The only way to read the value: name the reason at the call site.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

/// Whether `value` is a sample's placeholder ("change-me…"), not a secret: shipped examples use
/// such values, and one long enough passes every length check, so a deployment that forgot to
/// replace it would run with a token anyone can read in the repository.
pub fn is_placeholder(value: &str) -> bool {
    let plain: String = value.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
    ["changeme", "replaceme"].iter().any(|word| plain.contains(word))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_samples_placeholder_is_told_from_a_secret() {
        for sample in
            ["change-me-to-24-or-more-random-chars", "CHANGE_ME_0123456789abcdef", "replace-me-please-0123456789"]
        {
            assert!(is_placeholder(sample), "{sample}");
        }
        assert!(!is_placeholder("tok_0123456789abcdefghijkl") && !is_placeholder("3f9a0c1e7b2d4a5f8e6c0b1a9d7e5f3c"));
    }

    #[test]
    fn never_printed_and_compared_exactly() {
        let s = Secret::new("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches("abcdefghijklmnopqrstuvwxyz"));
        assert!(!s.matches("abcdefghijklmnopqrstuvwxy"));
        assert!(!s.matches(""));
    }
}
