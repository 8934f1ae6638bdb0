//! meshd's and dnsd's TOML config files, through the functions the daemons load them with
//! (`RunArgs::resolve`, `Config::load`): the input is written to a file and named by
//! `--config`. wgtool has no library (tunnel files are written there, not parsed), so it is
//! not here.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("sixpn-fuzz-config-{}.toml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let path = path();
    std::fs::write(path, text).expect("write the config file");
    if which & 1 == 0 {
        let args = meshd::config::RunArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let _ = args.resolve();
    } else {
        let cli = dnsd::config::Cli::try_parse_from(["dnsd", "--config", path.to_str().unwrap()])
            .expect("dnsd takes --config");
        if let Ok(config) = dnsd::config::Config::load(cli) {
            assert!(!config.listen.is_empty());
            assert!((1..=64).contains(&config.udp_workers));
            assert!(config.cache_size >= 1);
        }
    }
});
