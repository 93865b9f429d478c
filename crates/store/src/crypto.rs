//! age encryption: parsing X25519 recipients and identities, wrapping a
//! writer for encryption and a reader for decryption.
//!
//! Files are encrypted with the age v1 format (binary, not armored), so
//! `age -d -i key.txt file.age` decrypts them.

use std::io::{Read, Write};

use age::x25519;

use crate::error::{Result, StoreError};

/// Parsed keys of a storage location.
#[derive(Clone, Default)]
pub(crate) struct Keys {
    pub recipients: Vec<x25519::Recipient>,
    pub identities: Vec<x25519::Identity>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("recipients", &self.recipient_strings())
            .field("identities", &self.identities.len())
            .finish()
    }
}

impl Keys {
    pub fn parse(recipients: &[String], identities: &[String]) -> Result<Keys> {
        let recipients = recipients
            .iter()
            .map(|key| {
                key.trim().parse::<x25519::Recipient>().map_err(|reason| {
                    StoreError::InvalidRecipient {
                        key: key.clone(),
                        reason: reason.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let identities = identities
            .iter()
            .enumerate()
            .map(|(index, key)| parse_identity(index, key))
            .collect::<Result<Vec<_>>>()?;
        Ok(Keys {
            recipients,
            identities,
        })
    }

    pub fn recipient_strings(&self) -> Vec<String> {
        self.recipients.iter().map(ToString::to_string).collect()
    }

    /// Wraps `out` so everything written is encrypted to the recipients.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| StoreError::Encrypt(e.to_string()))?;
        encryptor
            .wrap_output(out)
            .map_err(|e| StoreError::Encrypt(e.to_string()))
    }

    /// Wraps `input` (an age file) for decryption with the identities.
    pub fn decrypt<R: Read>(
        &self,
        input: R,
        path: &str,
        recipients: &[String],
    ) -> Result<age::stream::StreamReader<R>> {
        if self.identities.is_empty() {
            return Err(StoreError::MissingIdentity { path: path.into() });
        }
        let decryptor =
            age::Decryptor::new(input).map_err(|e| decrypt_error(e, path, recipients))?;
        decryptor
            .decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| decrypt_error(e, path, recipients))
    }
}

fn parse_identity(index: usize, key: &str) -> Result<x25519::Identity> {
    // A key file from age-keygen has comment lines; accept its content.
    let line = key
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    line.parse::<x25519::Identity>()
        .map_err(|reason| StoreError::InvalidIdentity {
            index,
            reason: reason.to_string(),
        })
}

fn decrypt_error(e: age::DecryptError, path: &str, recipients: &[String]) -> StoreError {
    match e {
        age::DecryptError::NoMatchingKeys => StoreError::WrongIdentity {
            path: path.into(),
            recipients: recipients.to_vec(),
        },
        other => StoreError::Corrupt {
            path: path.into(),
            reason: format!("age: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_with_comments_parses() {
        let id = x25519::Identity::generate();
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        let file = format!(
            "# created: now\n# public key: {}\n{secret}\n",
            id.to_public()
        );
        let keys = Keys::parse(&[id.to_public().to_string()], &[file]);
        assert!(keys.is_ok());
    }

    #[test]
    fn bad_keys_are_named_but_secrets_are_not_printed() {
        let err = Keys::parse(&["age1nope".into()], &[])
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("age1nope"));
        let err = Keys::parse(&[], &["AGE-SECRET-KEY-1BAD".into()])
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("identity #0") && !err.contains("1BAD"),
            "{err}"
        );
    }
}
