//! Random values (webhook tokens, access tokens and their ids) from the kernel's source, as hex.

use super::error::ApiError;

/// `bytes` bytes from the kernel's random source, as hex.
pub fn random_hex(bytes: usize, what: &str) -> Result<String, ApiError> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .map_err(|e| ApiError::Unavailable(format!("no random source for {what}: {e}")))?;
    Ok(hex(&buffer))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
