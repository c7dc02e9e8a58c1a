//! Phone and e-mail as CoMagic accepts them.

/// Digits only, E.164 without `+`: `8XXXXXXXXXX` → `7XXXXXXXXXX`, a 10-digit number starting with 9
/// gets a leading 7; fewer than 10 or more than 15 digits is no phone.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.len() {
        11 if digits.starts_with('8') => format!("7{}", &digits[1..]),
        10 if digits.starts_with('9') => format!("7{digits}"),
        _ => digits,
    };
    (10..=15).contains(&digits.len()).then_some(digits)
}

/// Trimmed and lower-cased; must look like `local@domain.tld`.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let looks_right = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    looks_right.then_some(email)
}

/// For logs: enough to recognise a contact, not enough to use it.
pub fn mask_phone(phone: &str) -> String {
    let keep = phone.len().saturating_sub(2);
    phone.chars().enumerate().map(|(i, c)| if (1..keep).contains(&i) { '*' } else { c }).collect()
}

pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_forms() {
        assert_eq!(normalize_phone("+7 (912) 345-67-89").as_deref(), Some("79123456789"));
        assert_eq!(normalize_phone("8 912 345 67 89").as_deref(), Some("79123456789"));
        assert_eq!(normalize_phone("9123456789").as_deref(), Some("79123456789"));
        assert_eq!(normalize_phone("+44 20 7946 0958").as_deref(), Some("442079460958"));
        assert_eq!(normalize_phone("12345"), None, "too short");
        assert_eq!(normalize_phone("1234567890123456"), None, "too long");
        assert_eq!(normalize_phone("no phone"), None);
    }

    #[test]
    fn email_forms() {
        assert_eq!(normalize_email("  Ivan@Example.RU ").as_deref(), Some("ivan@example.ru"));
        for bad in ["ivan", "ivan@", "@x.ru", "ivan@localhost", "a b@x.ru", "a@b@c.ru", "a@.ru", "a@x."] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask_phone("79123456789"), "7********89");
        assert_eq!(mask_email("ivan@example.ru"), "i***@example.ru");
    }
}
