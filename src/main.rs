//! The `tlsign-seccomp` binary: turns the library's `Result` into one line
//! on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A bug must still end in one line and a documented code, not a
    // backtrace; outputs are written atomically, so exiting at once leaves
    // nothing half-written (the client dies with us).
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        eprintln!("error: internal error (a bug in tlsign-seccomp, please report it): {msg}");
        std::process::exit(tlsign_seccomp::exit::INTERNAL);
    }));
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervised child: the same binary, re-executed.
    if args
        .get(1)
        .is_some_and(|a| a == tlsign_seccomp::client::CHILD_ARG)
    {
        let code = tlsign_seccomp::client::child_main(args.split_off(2));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // The zygote the supervisor forks clients from (intercept::zygote).
    if args
        .get(1)
        .is_some_and(|a| a == tlsign_seccomp::zygote::ZYGOTE_ARG)
    {
        let code = tlsign_seccomp::zygote::serve(&args[2..], tlsign_seccomp::client::child_main);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = match tlsign_seccomp::cli::Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message up to its usage, on one line: the first line
            // alone may end in "not provided:" with the options below it.
            let msg = e.to_string();
            let said: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let said = said.join(" ");
            let said = said.trim_start_matches("error: ");
            let said = if said.is_empty() {
                "bad arguments"
            } else {
                said
            };
            eprintln!("error: {said} (see --help)");
            return ExitCode::from(tlsign_seccomp::exit::BAD_INPUT as u8);
        }
    };
    if cli.is_batch() {
        tlsign_seccomp::batch::reexec_tuned(&args);
    }
    let result = tlsign_seccomp::cli::run(cli);
    // Every client has ended: the zygote goes too, before we do.
    tlsign_seccomp::zygote::shutdown();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}
