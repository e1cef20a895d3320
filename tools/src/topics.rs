//! `gregor topics create|list|describe|alter|delete`: topic administration over plain Kafka
//! protocol, so it works against any Kafka-compatible broker.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use gregor_bench::cli::{self, DEFAULT_BOOTSTRAP, invalid};
use gregor_bench::client::{ClientConfig, Cluster, ConfigChange};

/// `gregor topics` arguments.
#[derive(Args)]
pub struct TopicsArgs {
    /// Broker to bootstrap from (host:port, comma-separated list allowed).
    #[arg(long, global = true, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    bootstrap: String,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// Topic config, repeatable: --config retention.ms=60000
        #[arg(long = "config", value_parser = cli::parse_kv)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
        /// Only validate the request on the broker.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show partitions, leaders, replicas and configs of a topic.
    Describe {
        /// Topic name.
        name: String,
        /// Show every config, not only the ones set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Add partitions and/or change configs.
    Alter {
        /// Topic name.
        name: String,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, repeatable: --config retention.ms=60000
        #[arg(long = "config", value_parser = cli::parse_kv)]
        configs: Vec<(String, String)>,
        /// Remove a config override, repeatable.
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// Runs `gregor topics`.
pub fn run(args: TopicsArgs) -> ExitCode {
    cli::run(move || async move {
        let cluster = Cluster::connect(ClientConfig::new(&args.bootstrap)).await?;
        match args.command {
            TopicsCommand::Create {
                name,
                partitions,
                replication_factor,
                configs,
                if_not_exists,
                validate_only,
            } => {
                let r = cluster
                    .create_topic(
                        &name,
                        partitions,
                        replication_factor,
                        &configs,
                        validate_only,
                    )
                    .await;
                match r {
                    Err(gregor_bench::client::ClientError::Kafka { code: 36, .. })
                        if if_not_exists =>
                    {
                        println!("topic {name} already exists");
                    }
                    Err(e) => return Err(e),
                    Ok(()) if validate_only => println!("topic {name} is valid"),
                    Ok(()) => println!("created topic {name}"),
                }
            }
            TopicsCommand::List { internal } => {
                let md = cluster.metadata(None, false).await?;
                let mut names: Vec<&str> = md
                    .topics
                    .iter()
                    .filter(|t| internal || !t.is_internal)
                    .map(|t| t.name.as_str())
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
            }
            TopicsCommand::Describe { name, all_configs } => {
                let t = cluster.topic_metadata(&name, false).await?;
                let configs = cluster.describe_topic_configs(&name).await?;
                let rf = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0);
                println!(
                    "Topic: {}\tPartitionCount: {}\tReplicationFactor: {rf}",
                    t.name,
                    t.partitions.len()
                );
                let shown: Vec<String> = configs
                    .iter()
                    .filter(|c| all_configs || c.is_topic_override)
                    .map(|c| match (&c.value, c.is_sensitive) {
                        (_, true) => format!("{}=<sensitive>", c.name),
                        (Some(v), _) => format!("{}={v}", c.name),
                        (None, _) => format!("{}=", c.name),
                    })
                    .collect();
                println!("Configs: {}", shown.join(","));
                let list = |v: &[i32]| {
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                for p in &t.partitions {
                    println!(
                        "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}{}",
                        p.partition,
                        p.leader,
                        list(&p.replicas),
                        list(&p.isr),
                        if p.error_code != 0 {
                            format!(
                                "\tError: {}",
                                gregor_bench::client::error::error_name(p.error_code)
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
            TopicsCommand::Alter {
                name,
                partitions,
                configs,
                delete_configs,
            } => {
                if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                    return Err(invalid(
                        "nothing to alter: give --partitions, --config or --delete-config",
                    ));
                }
                if let Some(n) = partitions {
                    cluster.create_partitions(&name, n).await?;
                    println!("topic {name} now has {n} partitions");
                }
                let mut changes: Vec<ConfigChange> = configs
                    .into_iter()
                    .map(|(k, v)| ConfigChange::Set(k, v))
                    .collect();
                changes.extend(delete_configs.into_iter().map(ConfigChange::Delete));
                if !changes.is_empty() {
                    cluster.alter_topic_configs(&name, &changes).await?;
                    println!("altered configs of topic {name}");
                }
            }
            TopicsCommand::Delete { name } => {
                cluster.delete_topic(&name).await?;
                println!("deleted topic {name}");
            }
        }
        Ok(())
    })
}
