//! `gregor broker`: run the Kafka-protocol broker.
//!
//! Settings come from built-in defaults, then `--config FILE` (TOML), then `GREGOR_*`
//! environment variables, then flags (`--data-dir`, `--listen`, `--cores`, `--set KEY=VALUE`),
//! later sources winning. `docs/CONFIG.md` lists every setting.

use std::path::PathBuf;
use std::process::ExitCode;

use gregor_net::ConfigBuilder;

#[derive(clap::Args)]
pub struct BrokerArgs {
    /// Data directory (setting `data.dir`; default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listener address (setting `listen`; default 127.0.0.1:9092).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of cores to run on (setting `cores`; default all).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Address advertised to clients (setting `advertised.listener`).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Log filter (setting `log.level`), e.g. info, debug, gregor_net=trace.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Any setting, by its name in docs/CONFIG.md (repeatable), e.g. --set num.partitions=3.
    #[arg(long = "set", alias = "override", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The configuration, and the `GREGOR_*` environment variables that named no setting.
fn build_config(args: &BrokerArgs) -> Result<(gregor_net::BrokerConfig, Vec<String>), String> {
    let mut builder = ConfigBuilder::new();
    if let Some(path) = &args.config {
        builder.apply_toml_file(path).map_err(|e| e.to_string())?;
    }
    let ignored = builder
        .apply_env(std::env::vars())
        .map_err(|e| e.to_string())?;
    let mut flags: Vec<(String, String)> = Vec::new();
    if let Some(dir) = &args.data_dir {
        flags.push(("data.dir".into(), dir.display().to_string()));
    }
    if let Some(listen) = &args.listen {
        flags.push(("listen".into(), listen.clone()));
    }
    if let Some(cores) = args.cores {
        flags.push(("cores".into(), cores.to_string()));
    }
    if let Some(adv) = &args.advertised_listener {
        flags.push(("advertised.listener".into(), adv.clone()));
    }
    if let Some(level) = &args.log_level {
        flags.push(("log.level".into(), level.clone()));
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE, got '{kv}'"))?;
        flags.push((k.trim().to_string(), v.trim().to_string()));
    }
    for (k, v) in flags {
        builder
            .set(&k, &v, "command line")
            .map_err(|e| e.to_string())?;
    }
    let config = builder.build().map_err(|e| e.to_string())?;
    Ok((config, ignored))
}

pub fn run(args: BrokerArgs) -> ExitCode {
    let (config, ignored_env) = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gregor broker: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_level);
    if !ignored_env.is_empty() {
        tracing::debug!(vars = ?ignored_env, "GREGOR_* environment variables that are not broker settings");
    }
    raise_open_file_limit();
    match gregor_net::run_until_signal(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "broker failed");
            eprintln!("gregor broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection and segment file is a descriptor, and the common soft default (1024) is far
/// below what `max.connections` allows: raise the soft limit to the hard one, as servers do.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard limit
    // needs no privilege and affects only this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::debug!(
            from = before,
            to = limit.rlim_max,
            "raised the open file limit"
        );
    } else {
        tracing::warn!(soft = before, "could not raise the open file limit");
    }
}
