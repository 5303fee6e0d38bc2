//! `--config file.toml`: defaults for any flag, one table per subcommand, keys named like the
//! long flags (`-` or `_` both work):
//!
//! ```toml
//! [sim]
//! listen = "0.0.0.0:8000"
//! time-scale = 10
//!
//! [load]
//! url = ["http://a:8000", "http://b:8000"]
//! rate = 20
//! prompt-tokens = "uniform:128:1024"
//! ```
//!
//! Precedence: command-line flag, then `INFERMON_*`/`OTEL_*` environment variable, then the
//! file, then the built-in default. The file is applied by turning its entries into flags for
//! every setting the command line and environment left alone, and parsing again, so clap's own
//! validation and `--help` defaults stay the single source of truth.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Why the config file could not be applied; one line each.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("config file {path}: unknown table [{table}]; use one of {known}")]
    UnknownTable {
        path: String,
        table: String,
        known: String,
    },
    #[error("config file {path}: [{table}] has unknown key `{key}`; keys are the long flags listed by `infermon {table} --help`")]
    UnknownKey {
        path: String,
        table: String,
        key: String,
    },
    #[error("config file {path}: [{table}] `{key}` must be {expected}")]
    BadValue {
        path: String,
        table: String,
        key: String,
        expected: &'static str,
    },
}

/// The extra command-line arguments that apply `path`'s `[subcommand]` table, given the matches
/// of a first parse (to know what the command line and environment already set).
pub fn file_args(
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Toml {
            path: shown.clone(),
            message: e.message().to_owned(),
        })?;

    let subcommands: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
    if let Some(table) = file.keys().find(|t| !subcommands.contains(&t.as_str())) {
        return Err(ConfigFileError::UnknownTable {
            path: shown,
            table: table.clone(),
            known: subcommands
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(Vec::new());
    };
    let (Some(sub), Some(table)) = (command.find_subcommand(name), file.get(name)) else {
        return Ok(Vec::new());
    };
    let bad_value = |key: &str, expected| ConfigFileError::BadValue {
        path: shown.clone(),
        table: name.to_owned(),
        key: key.to_owned(),
        expected,
    };
    let Some(table) = table.as_table() else {
        return Err(bad_value(name, "a table"));
    };

    let mut args = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && !is_builtin(&flag))
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: shown.clone(),
                table: name.to_owned(),
                key: key.clone(),
            })?;
        if matches!(
            sub_matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        match value {
            toml::Value::Boolean(on) if switch => {
                // A switch set to its default in the file is simply not passed.
                let sets = matches!(arg.get_action(), ArgAction::SetTrue);
                if *on == sets {
                    args.push(format!("--{flag}").into());
                }
            }
            toml::Value::Array(items) if !switch => {
                for item in items {
                    let item = scalar(item).ok_or_else(|| bad_value(key, "a list of values"))?;
                    args.push(format!("--{flag}={item}").into());
                }
            }
            other if !switch => {
                let item = scalar(other).ok_or_else(|| bad_value(key, "a string or number"))?;
                args.push(format!("--{flag}={item}").into());
            }
            _ => return Err(bad_value(key, "true or false")),
        }
    }
    Ok(args)
}

fn is_builtin(flag: &str) -> bool {
    matches!(flag, "help" | "version" | "config")
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, CommandFactory as _};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("config").long("config").global(true))
            .subcommand(
                Command::new("load")
                    .arg(Arg::new("rate").long("rate"))
                    .arg(Arg::new("model").long("model").env("T_CONFIG_TEST_MODEL"))
                    .arg(Arg::new("url").long("url").action(ArgAction::Append))
                    .arg(
                        Arg::new("max-in-flight")
                            .long("max-in-flight")
                            .default_value("5"),
                    )
                    .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue)),
            )
            .subcommand(Command::new("sim"))
    }

    fn apply(file: &str, argv: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let matches = command().try_get_matches_from(argv).unwrap();
        file_args(&path, &command(), &matches)
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn file_values_become_flags_for_unset_settings_only() {
        let args = apply(
            "[load]\nrate = 20\nurl = [\"http://a\", \"http://b\"]\nmax_in_flight = 7\nquiet = true\n",
            &["t", "load", "--rate", "5"],
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "--max-in-flight=7",
                "--quiet",
                "--url=http://a",
                "--url=http://b"
            ],
            "--rate came from the command line, so the file's rate is not applied"
        );
    }

    #[test]
    fn the_environment_beats_the_file() {
        // Only this test sets (or reads) the variable, so parallel tests are unaffected.
        std::env::set_var("T_CONFIG_TEST_MODEL", "from-env");
        let args = apply("[load]\nmodel = \"from-file\"\n", &["t", "load"]);
        std::env::remove_var("T_CONFIG_TEST_MODEL");
        assert_eq!(args.unwrap(), Vec::<String>::new());
        let args = apply("[load]\nmodel = \"from-file\"\n", &["t", "load"]).unwrap();
        assert_eq!(
            args,
            ["--model=from-file"],
            "without the variable the file applies"
        );
    }

    #[test]
    fn tables_of_other_subcommands_are_ignored() {
        assert_eq!(
            apply("[sim]\n", &["t", "load"]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = apply("[lod]\nrate = 1\n", &["t", "load"]).unwrap_err();
        assert!(
            e.contains("unknown table [lod]") && e.contains("[load], [sim]"),
            "{e}"
        );
        let e = apply("[load]\nrat = 1\n", &["t", "load"]).unwrap_err();
        assert!(e.contains("unknown key `rat`"), "{e}");
        let e = apply("[load]\nquiet = \"yes\"\n", &["t", "load"]).unwrap_err();
        assert!(e.contains("`quiet` must be true or false"), "{e}");
        let e = apply("[load]\nrate = [[1]]\n", &["t", "load"]).unwrap_err();
        assert!(e.contains("`rate` must be a list of values"), "{e}");
        let e = apply("[load\n", &["t", "load"]).unwrap_err();
        assert!(e.contains("not valid TOML") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_real_cli_accepts_its_own_flags_as_keys() {
        // Every long flag of every subcommand is a valid key (no name the file cannot reach).
        let cli = crate::Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(!long.contains('_'), "flag --{long} should use dashes");
                }
            }
        }
    }
}
