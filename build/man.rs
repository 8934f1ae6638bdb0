//! Man pages from a clap command: one for the program and one for each subcommand
//! (`PROG-SUB.1`), for `meshd man`, `dnsd man` and `wgtool man`. Each binary compiles this
//! file (`#[path]`), as each build script includes `version.rs`.

/// Writes `ROOT.1` and a page per subcommand into `dir`; returns how many.
pub fn write_pages(
    cmd: clap::Command,
    root: &str,
    dir: &std::path::Path,
) -> std::io::Result<usize> {
    let mut written = 0;
    let mut stack = vec![(root.to_string(), cmd)];
    while let Some((name, cmd)) = stack.pop() {
        // clap keeps names as `&'static str`; a few dozen short strings, once per run.
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let cmd = cmd.name(static_name).display_name(static_name);
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        written += 1;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            stack.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    Ok(written)
}
