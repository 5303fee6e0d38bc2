//! The `--config` file of the `infermon` command (`infermon_cli::check_config_text`: clap's
//! parse of the command line, then the file's tables layered under it, each value through its
//! flag's own value parser). The first byte picks the subcommand; the rest is the file. Must
//! never panic, and a refusal is the one line the command prints.
#![no_main]

use libfuzzer_sys::fuzz_target;

const COMMANDS: [&[&str]; 7] = [
    &["sim"],
    &["load"],
    &["demo"],
    &["gpu-agent"],
    &["alerts", "list"],
    &["relay"],
    &["gateway"],
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let mut argv = vec!["infermon"];
    argv.extend_from_slice(COMMANDS[usize::from(selector) % COMMANDS.len()]);
    argv.extend_from_slice(&["--config", "fuzz.toml"]);
    if let Err(line) = infermon_cli::check_config_text(&argv, text) {
        assert!(!line.trim_end().contains('\n'), "not one line: {line}");
    }
});
