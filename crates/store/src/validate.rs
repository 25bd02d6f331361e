//! Checks on user names, extensions, display names and passwords before they are stored.

use crate::StoreError;

/// Longest user name accepted.
const MAX_USERNAME_LEN: usize = 64;
/// Longest display name accepted, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Longest password accepted, in bytes.
const MAX_PASSWORD_LEN: usize = 1024;

/// Checks that `name` can be a user name: 1 to 64 of `[a-z0-9._-]`, starting with a letter or
/// digit.
///
/// That keeps it a valid SIP user part (RFC 3261 §25.1 `user` allows these unescaped) that needs
/// no escaping in a URI, and one spelling per user (no case variants).
pub fn validate_username(name: &str) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_USERNAME_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidUsername(name.to_owned()))
    }
}

/// Checks that `extension` is 2 to 15 ASCII digits (15 being E.164's longest number).
pub fn validate_extension(extension: &str) -> Result<(), StoreError> {
    if (2..=15).contains(&extension.len()) && extension.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(StoreError::InvalidExtension(extension.to_owned()))
    }
}

/// Checks a display name: at most 128 characters and no control characters (it ends up in SIP
/// headers, where CR or LF would split the message).
pub(crate) fn validate_display_name(display_name: &str) -> Result<(), StoreError> {
    if display_name.chars().count() <= MAX_DISPLAY_NAME_CHARS
        && !display_name.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(StoreError::InvalidDisplayName(display_name.to_owned()))
    }
}

/// Checks a password: not empty, at most 1024 bytes, no control characters.
pub(crate) fn validate_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        Err(StoreError::InvalidPassword("it is empty"))
    } else if password.len() > MAX_PASSWORD_LEN {
        Err(StoreError::InvalidPassword("it is longer than 1024 bytes"))
    } else if password.chars().any(char::is_control) {
        Err(StoreError::InvalidPassword(
            "it contains control characters",
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for good in ["alice", "a", "bob.smith", "j_doe-2", "1001", "0day"] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "", "Alice", ".alice", "-x", "_x", "al ice", "al@ce", "al:ce", "ålice", &long,
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extensions() {
        assert!(validate_extension("10").is_ok());
        assert!(validate_extension("123456789012345").is_ok());
        for bad in ["1", "1234567890123456", "10a", "+100", "", "１０"] {
            assert!(validate_extension(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names_and_passwords() {
        assert!(validate_display_name("Alice Liddell").is_ok());
        assert!(validate_display_name("Ali\r\nce").is_err());
        assert!(validate_password("").is_err());
        assert!(validate_password("pw\n").is_err());
        assert!(validate_password("correct horse").is_ok());
    }
}
