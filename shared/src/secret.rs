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

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_compared_exactly() {
        let s = Secret::new("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches("abcdefghijklmnopqrstuvwxyz"));
        assert!(!s.matches("abcdefghijklmnopqrstuvwxy"));
        assert!(!s.matches(""));
    }
}
