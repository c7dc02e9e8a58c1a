//! Text that reaches a log line or an operator's header: contacts masked, one line, bounded.
//!
//! CoMagic's error messages may quote what was sent (`invalid phone 79123456789`, an e-mail), and
//! they end up in logs and in the dead-letter header `x-bridge-error`. Phones and e-mails are masked
//! the way the rest of the logs mask them.

use crate::mapping::contact::{mask_email, mask_phone};

/// `text` on one line, contacts masked, at most `max` characters (an ellipsis marks a cut). Every
/// control character (a line break, a NUL PostgreSQL refuses in JSON, a terminal's escape) is a
/// space: this text reaches terminals, headers and databases.
pub fn for_operators(text: &str, max: usize) -> String {
    let plain: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cut(&mask_contacts(&plain), max)
}

/// At most `max` characters, an ellipsis marking a cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Every word that looks like an e-mail, and every run of 10 to 15 digits written as a phone
/// (`+7 (912) 345-67-89`, `79123456789`), masked. Dates (`2026-01-10 09:00:00`) are left alone.
pub fn mask_contacts(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| "\"'`<>()[]{},;:".contains(c));
            if bare.contains('@') && bare.contains('.') {
                word.replace(bare, &mask_email(bare))
            } else {
                word.to_owned()
            }
        })
        .collect();
    mask_phones(&words.join(" "))
}

fn mask_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_a_number =
            chars[i].is_ascii_digit() || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts_a_number {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        while end < chars.len() && (chars[end].is_ascii_digit() || "+()- ".contains(chars[end])) {
            end += 1;
        }
        // A run ends on a digit; trailing separators belong to the text around it.
        while end > i && !chars[end - 1].is_ascii_digit() {
            end -= 1;
        }
        let run: String = chars[i..end].iter().collect();
        let digits: String = run.chars().filter(char::is_ascii_digit).collect();
        let is_date = run.len() >= 10 && run.as_bytes()[4] == b'-' && run.as_bytes()[7] == b'-';
        if (10..=15).contains(&digits.len()) && !is_date {
            out.push_str(&mask_phone(&digits));
        } else {
            out.push_str(&run);
        }
        i = end.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_in_an_error_are_masked_and_dates_kept() {
        assert_eq!(
            mask_contacts("invalid phone 79123456789 for ivan@example.ru at 2026-01-10 09:00:00"),
            "invalid phone 7********89 for i***@example.ru at 2026-01-10 09:00:00"
        );
        assert_eq!(mask_contacts("phone \"+7 (912) 345-67-89\", id 12345"), "phone \"7********89\", id 12345");
        assert_eq!(mask_contacts("<anna.k@mail.example>"), "<a***@mail.example>");
    }

    #[test]
    fn control_characters_reach_no_terminal_or_database() {
        let hostile = "a\u{1b}]52;c;aGk=\u{7}b\u{0}c\u{9b}2J";
        let shown = for_operators(hostile, 100);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown.chars().filter(|c| *c == ' ').count(), 4);
    }

    #[test]
    fn operators_get_one_bounded_line() {
        assert_eq!(for_operators("a\nb\r\nc", 100), "a b  c");
        assert_eq!(for_operators("abcdef", 3), "abc…");
        assert_eq!(cut("дом", 2), "до…");
    }
}
