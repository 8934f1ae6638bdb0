//! Asking for a missing argument, only when a person is at a terminal.

use std::io::{BufRead, IsTerminal, Write};

/// Asks for `what` on the terminal; off a terminal, a missing argument is a usage error.
pub fn ask(what: &str, hint: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(crate::usage(format!(
            "{what}: missing; give it as an argument ({hint})"
        )));
    }
    eprint!("{what} ({hint}): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim().to_string();
    if answer.is_empty() {
        return Err(crate::usage(format!("{what}: missing")));
    }
    Ok(answer)
}
