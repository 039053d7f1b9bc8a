//! `txoutbox-services`: starts, stops and reports the local services of txoutbox's demo, tests and
//! CI (`scripts/services.sh` runs it; `txoutbox-services help` lists the commands).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match txoutbox_services::cli::run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("services.sh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
