//! Where a setting comes from. One rule for every flag of every subcommand:
//!
//! **command-line flag > environment variable > `--config` file > built-in default**
//!
//! Clap parses the command line once, reading the environment variables and filling in the
//! defaults as usual. Then each subcommand's arguments take their values from the file's
//! `[subcommand]` table ([`Layered::layer`]), but only where [`ArgMatches::value_source`] says
//! that neither the command line nor the environment gave one. A file value is parsed by the
//! same value parser as the flag, so it is checked the same way and its error names the flag.
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
//! Keys are the long flags (`-` or `_` both work); lists for repeatable flags; `true`/`false`
//! for switches.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

/// Why the config file could not be applied; one line each.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config file {path}: unknown table [{table}]; use one of {known}")]
    UnknownTable {
        path: PathBuf,
        table: String,
        known: String,
    },
    #[error("config file {path}: [{table}] has unknown key `{key}`; keys are the long flags listed by `infermon {table} --help`")]
    UnknownKey {
        path: PathBuf,
        table: String,
        key: String,
    },
    #[error("config file {path}: [{table}] `{key}` must be {expected}")]
    BadValue {
        path: PathBuf,
        table: String,
        key: String,
        expected: &'static str,
    },
    /// `message` is the flag's own one-line complaint about the value.
    #[error("{message} (from config file {path}, [{table}] {key})")]
    Invalid {
        path: PathBuf,
        table: String,
        key: String,
        message: String,
    },
    #[error("config file {path}: [{table}] sets both `{first}` and `{second}`; keep one")]
    Conflict {
        path: PathBuf,
        table: String,
        first: &'static str,
        second: &'static str,
    },
}

/// A `--config` file: one table per subcommand.
pub struct ConfigFile {
    path: PathBuf,
    tables: toml::Table,
}

impl ConfigFile {
    /// Reads and parses `path`, checking that each table names a subcommand of `cli`.
    pub fn read(path: &Path, cli: &Command) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, cli)
    }

    /// Parses `text`, the contents of `path`, as [`read`](Self::read) does.
    pub fn parse(text: &str, path: &Path, cli: &Command) -> Result<Self, ConfigFileError> {
        let tables: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigFileError::Toml {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        let subcommands: Vec<&str> = cli.get_subcommands().map(Command::get_name).collect();
        if let Some(table) = tables.keys().find(|t| !subcommands.contains(&t.as_str())) {
            return Err(ConfigFileError::UnknownTable {
                path: path.to_owned(),
                table: table.clone(),
                known: subcommands
                    .iter()
                    .map(|s| format!("[{s}]"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            tables,
        })
    }
}

/// Arguments whose settings a config file can supply.
pub trait Layered {
    /// Takes from `layer` every setting the command line and environment left unset. Each
    /// argument is visited once, by its clap id, with the value parser of its flag.
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError>;
}

/// One subcommand's parsed arguments and its table of the config file (if any).
pub struct Layer<'a> {
    command: &'a Command,
    matches: &'a ArgMatches,
    path: &'a Path,
    table: &'a str,
    /// The file's entries by clap id: key as written, and value.
    values: HashMap<String, (String, toml::Value)>,
    /// The ids asked for (to check that every argument is layered).
    visited: Vec<String>,
}

impl<'a> Layer<'a> {
    /// `command` and `matches`: the subcommand's, from parsing the command line. Keys that are
    /// not one of its long flags are refused.
    pub fn new(
        file: Option<&'a ConfigFile>,
        command: &'a Command,
        matches: &'a ArgMatches,
    ) -> Result<Self, ConfigFileError> {
        let mut layer = Self {
            command,
            matches,
            path: Path::new(""),
            table: command.get_name(),
            values: HashMap::new(),
            visited: Vec::new(),
        };
        let Some(file) = file else {
            return Ok(layer);
        };
        layer.path = &file.path;
        let Some(table) = file.tables.get(layer.table) else {
            return Ok(layer);
        };
        let Some(table) = table.as_table() else {
            return Err(layer.bad_value(layer.table, "a table"));
        };
        for (key, value) in table {
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()) && !is_builtin(&long))
                .ok_or_else(|| ConfigFileError::UnknownKey {
                    path: file.path.clone(),
                    table: layer.table.to_owned(),
                    key: key.clone(),
                })?;
            layer
                .values
                .insert(arg.get_id().to_string(), (key.clone(), value.clone()));
        }
        Ok(layer)
    }

    /// Whether the command line or the environment set argument `id`.
    pub fn given(&self, id: &str) -> bool {
        matches!(
            self.matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    }

    /// Whether argument `id` came from its environment variable.
    pub fn given_by_env(&self, id: &str) -> bool {
        self.matches.value_source(id) == Some(ValueSource::EnvVariable)
    }

    /// A setting with one value.
    pub fn value<P>(
        &mut self,
        id: &str,
        slot: &mut P::Value,
        parser: P,
    ) -> Result<(), ConfigFileError>
    where
        P: TypedValueParser,
    {
        let Some((arg, key, value)) = self.take(id) else {
            return Ok(());
        };
        let text =
            scalar(&value).ok_or_else(|| self.bad_value(&key, "a single string or number"))?;
        *slot = self.parse(&parser, arg, &key, &text)?;
        Ok(())
    }

    /// A setting that is unset by default.
    pub fn optional<P>(
        &mut self,
        id: &str,
        slot: &mut Option<P::Value>,
        parser: P,
    ) -> Result<(), ConfigFileError>
    where
        P: TypedValueParser,
        P::Value: Send + Sync + Clone,
    {
        self.value(id, slot, parser.map(Some))
    }

    /// A repeatable setting: a list, or one value (split at the flag's value delimiter, as its
    /// environment variable is).
    pub fn list<P>(
        &mut self,
        id: &str,
        slot: &mut Vec<P::Value>,
        parser: P,
    ) -> Result<(), ConfigFileError>
    where
        P: TypedValueParser,
    {
        let Some((arg, key, value)) = self.take(id) else {
            return Ok(());
        };
        let items: Vec<toml::Value> = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        let mut parsed = Vec::new();
        for item in &items {
            let text = scalar(item).ok_or_else(|| self.bad_value(&key, "a list of values"))?;
            let parts: Vec<&str> = match arg.get_value_delimiter() {
                Some(delimiter) => text.split(delimiter).collect(),
                None => vec![text.as_str()],
            };
            for part in parts {
                parsed.push(self.parse(&parser, arg, &key, part)?);
            }
        }
        *slot = parsed;
        Ok(())
    }

    /// An on/off flag.
    pub fn switch(&mut self, id: &str, slot: &mut bool) -> Result<(), ConfigFileError> {
        let Some((_, key, value)) = self.take(id) else {
            return Ok(());
        };
        *slot = value
            .as_bool()
            .ok_or_else(|| self.bad_value(&key, "true or false"))?;
        Ok(())
    }

    /// Two settings that choose one thing two ways (`--rate` or `--concurrency`): whichever the
    /// command line or environment gives overrides both of the file's, and the file may give
    /// only one.
    pub fn either<P, Q>(
        &mut self,
        (first, first_slot, first_parser): (&'static str, &mut Option<P::Value>, P),
        (second, second_slot, second_parser): (&'static str, &mut Option<Q::Value>, Q),
    ) -> Result<(), ConfigFileError>
    where
        P: TypedValueParser,
        P::Value: Send + Sync + Clone,
        Q: TypedValueParser,
        Q::Value: Send + Sync + Clone,
    {
        if self.given(first) || self.given(second) {
            self.visited.extend([first.to_owned(), second.to_owned()]);
            return Ok(());
        }
        if self.values.contains_key(first) && self.values.contains_key(second) {
            return Err(ConfigFileError::Conflict {
                path: self.path.to_owned(),
                table: self.table.to_owned(),
                first,
                second,
            });
        }
        self.optional(first, first_slot, first_parser)?;
        self.optional(second, second_slot, second_parser)
    }

    /// The file's entry for argument `id`, unless the command line or environment set it.
    fn take(&mut self, id: &str) -> Option<(&'a Arg, String, toml::Value)> {
        self.visited.push(id.to_owned());
        if self.given(id) {
            return None;
        }
        let (key, value) = self.values.remove(id)?;
        let arg = self
            .command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .expect("an entry is kept only for an argument of the command");
        Some((arg, key, value))
    }

    fn parse<P: TypedValueParser>(
        &self,
        parser: &P,
        arg: &Arg,
        key: &str,
        text: &str,
    ) -> Result<P::Value, ConfigFileError> {
        parser
            .parse_ref(self.command, Some(arg), OsStr::new(text))
            .map_err(|e| ConfigFileError::Invalid {
                path: self.path.to_owned(),
                table: self.table.to_owned(),
                key: key.to_owned(),
                message: crate::one_line(&e).trim_start_matches("error: ").to_owned(),
            })
    }

    fn bad_value(&self, key: &str, expected: &'static str) -> ConfigFileError {
        ConfigFileError::BadValue {
            path: self.path.to_owned(),
            table: self.table.to_owned(),
            key: key.to_owned(),
            expected,
        }
    }

    /// The ids of the arguments visited so far.
    #[cfg(test)]
    pub fn visited(&self) -> &[String] {
        &self.visited
    }
}

/// A TOML scalar as the text a flag would have been given.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_builtin(flag: &str) -> bool {
    matches!(flag, "help" | "version" | "config")
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::str::FromStr;
    use std::time::Duration;

    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    use super::*;
    use crate::{Cli, Command as Sub, Parsed};

    /// `infermon <argv> --config <file>`, parsed as `main` does; the error is its one line.
    fn parse_with(file: &str, argv: &[&str]) -> Result<Cli, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut full: Vec<OsString> = vec!["infermon".into()];
        full.extend(argv.iter().map(OsString::from));
        full.extend(["--config".into(), path.into_os_string()]);
        match crate::parse(full, ConfigFile::read) {
            Ok(cli) => Ok(cli),
            Err(Parsed::Invalid(line)) => Err(line),
            Err(Parsed::Exit(e)) => Err(e.to_string()),
        }
    }

    fn load(file: &str, argv: &[&str]) -> crate::load::LoadArgs {
        let mut full = vec!["load"];
        full.extend_from_slice(argv);
        match parse_with(file, &full).unwrap().command {
            Sub::Load(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_file_sets_what_the_command_line_left_at_its_default() {
        let args = load(
            "[load]\nrate = 20\nurl = [\"http://a\", \"http://b\"]\nmax_in_flight = 7\n\
             quiet = true\nprompt-tokens = \"uniform:1:9\"\ntimeout = \"5s\"\n",
            &["--prompt-tokens", "64", "--api", "completions"],
        );
        assert_eq!(args.workload.rate, Some(20.0));
        assert_eq!(args.urls, ["http://a", "http://b"]);
        assert_eq!(args.workload.max_in_flight, 7);
        assert!(args.quiet);
        assert_eq!(args.workload.timeout, Duration::from_secs(5));
        assert_eq!(
            args.workload.prompt_tokens,
            infermon_load::LengthDist::Fixed(64),
            "the flag beats the file"
        );
        // Neither the flag nor the file: the built-in default.
        assert_eq!(
            args.workload.output_tokens,
            infermon_load::LengthDist::Fixed(128)
        );
        assert!(!args.json);
    }

    #[test]
    fn a_list_in_one_string_is_split_like_its_environment_variable() {
        let args = load("[load]\nurl = \"http://a,http://b\"\n", &[]);
        assert_eq!(args.urls, ["http://a", "http://b"]);
    }

    #[test]
    fn rate_and_concurrency_are_one_setting() {
        // The command line's choice of arrival process replaces the file's.
        let args = load("[load]\nrate = 20\n", &["--concurrency", "4"]);
        assert_eq!(
            (args.workload.rate, args.workload.concurrency),
            (None, Some(4))
        );
        let e = parse_with("[load]\nrate = 20\nconcurrency = 3\n", &["load"])
            .err()
            .unwrap();
        assert!(e.contains("sets both `rate` and `concurrency`"), "{e}");
    }

    #[test]
    fn tables_of_other_subcommands_are_ignored() {
        let args = load("[sim]\nlisten = \"0.0.0.0:1\"\n[demo]\nrate = 1\n", &[]);
        assert_eq!(args.workload.rate, None);
    }

    #[test]
    fn mistakes_are_one_line_naming_the_file_and_key() {
        let cases = [
            (
                "[lod]\nrate = 1\n",
                "unknown table [lod]; use one of [sim], [load]",
            ),
            ("[load]\nrat = 1\n", "[load] has unknown key `rat`"),
            ("[load]\nquiet = \"yes\"\n", "`quiet` must be true or false"),
            (
                "[load]\nrate = [1]\n",
                "`rate` must be a single string or number",
            ),
            ("[load]\nurl = [[1]]\n", "`url` must be a list of values"),
            ("load = 1\n", "`load` must be a table"),
            ("[load\n", "not valid TOML"),
            (
                "[load]\nrate = \"fast\"\n",
                "invalid value 'fast' for '--rate <REQ_PER_S>'",
            ),
            (
                "[load]\nprompt-tokens = \"uniform:9:1\"\n",
                "MIN is larger than MAX",
            ),
        ];
        for (file, expected) in cases {
            let e = parse_with(file, &["load"]).err().unwrap();
            assert!(e.contains(expected), "{file}: {e}");
            assert!(e.contains("c.toml") && !e.contains('\n'), "{file}: {e}");
        }
        let e = parse_with("[load]\nrate = \"fast\"\n", &["load"])
            .err()
            .unwrap();
        assert!(
            e.contains("(from config file ") && e.ends_with("[load] rate)"),
            "{e}"
        );
    }

    #[test]
    fn ranges_and_choices_are_checked_as_for_the_flag() {
        for (file, argv, expected) in [
            (
                "[sim]\nmax-connections = 0\n",
                "sim",
                "0 is not in 1..=4294967295",
            ),
            (
                "[relay]\nexport-workers = 65\n",
                "relay",
                "65 is not in 1..=64",
            ),
            (
                "[gateway]\nrouting = \"random\"\n",
                "gateway",
                "[possible values: ",
            ),
            (
                "[gpu-agent]\nfake = 0\n",
                "gpu-agent",
                "0 is not in 1..=1024",
            ),
        ] {
            let e = parse_with(file, &[argv]).err().unwrap();
            assert!(e.contains(expected), "{file}: {e}");
        }
    }

    /// A command whose variables only this test reads, so that setting them cannot disturb
    /// tests running in parallel.
    #[derive(Parser)]
    struct Synthetic {
        #[command(subcommand)]
        command: SyntheticCommand,
    }

    #[derive(clap::Subcommand)]
    enum SyntheticCommand {
        Load(SyntheticArgs),
    }

    #[derive(clap::Args)]
    struct SyntheticArgs {
        #[arg(long, env = "T_CONFIG_TEST_MODEL")]
        model: Option<String>,
        #[arg(long, env = "T_CONFIG_TEST_QUIET")]
        quiet: bool,
    }

    impl Layered for SyntheticArgs {
        fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
            layer.optional("model", &mut self.model, String::from_str)?;
            layer.switch("quiet", &mut self.quiet)
        }
    }

    fn synthetic(file: &str) -> SyntheticArgs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut command = Synthetic::command();
        command.build();
        let file = ConfigFile::read(&path, &command).unwrap();
        let matches = command.clone().try_get_matches_from(["t", "load"]).unwrap();
        let SyntheticCommand::Load(mut args) =
            Synthetic::from_arg_matches(&matches).unwrap().command;
        let sub = command.find_subcommand("load").unwrap();
        let mut layer = Layer::new(
            Some(&file),
            sub,
            matches.subcommand_matches("load").unwrap(),
        )
        .unwrap();
        args.layer(&mut layer).unwrap();
        args
    }

    #[test]
    fn the_environment_beats_the_file() {
        let file = "[load]\nmodel = \"from-file\"\nquiet = true\n";
        std::env::set_var("T_CONFIG_TEST_MODEL", "from-env");
        std::env::set_var("T_CONFIG_TEST_QUIET", "false");
        let args = synthetic(file);
        std::env::remove_var("T_CONFIG_TEST_MODEL");
        std::env::remove_var("T_CONFIG_TEST_QUIET");
        assert_eq!(args.model.as_deref(), Some("from-env"));
        assert!(
            !args.quiet,
            "the variable's `false` beats the file's `true`"
        );
        let args = synthetic(file);
        assert_eq!(args.model.as_deref(), Some("from-file"));
        assert!(args.quiet);
    }

    #[test]
    fn every_argument_of_every_subcommand_is_layered_once() {
        let mut cli = Cli::command();
        cli.build();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let argv = match sub.get_name() {
                "alerts" => vec!["infermon", "alerts", "list"],
                name => vec!["infermon", name],
            };
            let matches = cli.clone().try_get_matches_from(&argv).unwrap();
            let mut parsed = Cli::from_arg_matches(&matches).unwrap();
            let (_, sub_matches) = matches.subcommand().unwrap();
            let mut layer = Layer::new(None, sub, sub_matches).unwrap();
            parsed.command.layer(&mut layer).unwrap();
            let mut visited = layer.visited().to_vec();
            visited.sort();
            let mut ids: Vec<String> = sub
                .get_arguments()
                .filter(|a| !a.is_positional())
                .map(|a| a.get_id().to_string())
                .filter(|id| !is_builtin(id))
                .collect();
            ids.sort();
            assert_eq!(visited, ids, "infermon {}", sub.get_name());
        }
    }

    #[test]
    fn flags_are_spelled_with_dashes() {
        // A key with `_` is read as `-`, so a flag with `_` could not be set in the file.
        for sub in Cli::command().get_subcommands() {
            for long in sub.get_arguments().filter_map(Arg::get_long) {
                assert!(!long.contains('_'), "flag --{long} should use dashes");
            }
        }
    }
}
