//! The simulator's TOML documents (configuration, profiles, fault scenarios) are read, parsed
//! and validated one way, so every one of them reports a missing file, bad TOML and a value out
//! of range in the same words.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::SimError;

/// A TOML document of the simulator's.
pub(crate) trait TomlDocument: DeserializeOwned {
    /// Checks the types cannot express; `origin` names the document in messages.
    fn validate(&self, _origin: &str) -> Result<(), SimError> {
        Ok(())
    }
}

/// Reads, parses and validates the document at `path`.
pub(crate) fn load<T: TomlDocument>(path: &Path) -> Result<T, SimError> {
    let source = std::fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&source, &path.display().to_string())
}

/// Parses and validates `source`; `origin` names it in messages.
pub(crate) fn parse<T: TomlDocument>(source: &str, origin: &str) -> Result<T, SimError> {
    let document: T = toml::from_str(source).map_err(|e| SimError::Parse {
        origin: origin.to_owned(),
        message: e.message().to_owned(),
    })?;
    document.validate(origin)?;
    Ok(document)
}
