//! The `infermon` binary: everything is in the library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    infermon_cli::main()
}
